"""Building a set: deterministic for a seed, written atomically, with provenance and licences.

The folder a build writes is a stimulus folder (one sub-folder per condition, read by
``localize --stimuli`` and ``screen --stimuli``) and a topo results folder:

- ``<condition>/<condition>_NNN.png|wav``: the stimuli;
- ``PROVENANCE.csv``: one row per stimulus (file, source package and version, original,
  licence, licence file, transforms) and one per original that was tried and skipped
  (status ``skipped`` and the reason: a corrupt image, an ogg that does not decode, silence);
- ``lowlevel.csv``: low-level statistics of every stimulus (what is left for a pixel- or
  waveform-level classifier);
- ``README.md``: counts per condition, shortfalls, method, sources and licences;
- ``_licenses/<package>/...``: the licence texts of every source used (the leading ``_``
  keeps the folder from being read as a condition);
- ``manifest.json``.

Every file except ``manifest.json`` (which records the time and command line) is the same
bytes for the same set, seed, per-condition count and source versions: candidates are ordered
from sorted listings and a seeded permutation, the random parts of a stimulus (scramble phase,
quilt order) depend on ``(seed, condition, original)`` only, and PNG / WAV are written without
metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError, warn
from topocli.reporting.results import MANIFEST, ResultsFolder
from topocli.stimuli.builders import audio, images
from topocli.stimuli.builders.sets import (
    Candidate,
    StimulusSetDef,
    get_set,
    interleave,
)
from topocli.stimuli.builders.sources import (
    SOURCES,
    SourceStatus,
    licence_for,
    licence_texts,
    require,
    status,
)

BUILDER_VERSION = 3  # bump when a set's bytes change for the same sources (3: train split)
CACHE_ENV = "TOPO_STIMULI_DIR"
PROVENANCE = "PROVENANCE.csv"
PROVENANCE_COLUMNS = [
    "file",
    "condition",
    "status",
    "source",
    "package",
    "version",
    "original",
    "licence",
    "licence_file",
    "transforms",
    "reason",
]


@dataclass
class BuildResult:
    """What a build wrote: the folder, the counts per condition and what was skipped."""

    name: str
    out: Path
    asked: int
    counts: dict[str, int]
    skipped: dict[str, int]
    shortfalls: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def validate_options(per_condition: int | None, seed: int) -> None:
    """Check the build options once, at the boundary (``None``: the set's default count)."""
    if per_condition is None:
        per_condition = 1
    if isinstance(per_condition, bool) or int(per_condition) < 1:
        raise TopoInputError(f"--per-condition must be an integer >= 1, got {per_condition!r}")
    if isinstance(seed, bool) or int(seed) < 0:
        raise TopoInputError(f"--seed must be an integer >= 0, got {seed!r}")


def source_statuses(definition: StimulusSetDef, root=None) -> dict[str, SourceStatus]:
    """Statuses of a set's sources: required ones must be present (else an input error)."""
    found = require([SOURCES[k] for k in definition.required], root)
    for key in definition.optional:
        found[key] = status(SOURCES[key], root)
    return found


def resolve_count(name: str, per_condition: int | None) -> int:
    """The per-condition count of a build: the one given, else the set's default (48 for
    localizer sets; the training sets' single condition holds a few hundred)."""
    return get_set(name).default_per_condition if per_condition is None else int(per_condition)


def build_set(
    name: str,
    out: str | Path,
    per_condition: int | None = None,
    seed: int = 0,
    *,
    overwrite: bool = False,
    root: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> BuildResult:
    """Build one stimulus set into a new results folder.

    Parameters
    ----------
    name : str
        A set of :data:`~topocli.stimuli.builders.sets.SETS`.
    out : str or Path
        The folder to write (must not exist, or be empty, or be an earlier build with
        ``overwrite``).
    per_condition : int, optional
        Stimuli per condition (default: the set's ``default_per_condition``); a condition
        whose sources give fewer gets what there is (a warning, and the README says so).
    seed : int
        Which originals are drawn and the random parts of scrambles and quilts.
    overwrite : bool
        Replace an earlier build at ``out``.
    root : str or Path, optional
        Source root for Debian material (tests use a fake tree); default ``/``.
    progress : callable, optional
        ``progress(condition, done, total)`` after each stimulus.

    Returns
    -------
    BuildResult

    Raises
    ------
    TopoInputError
        Unknown set, bad options, a missing source (naming the package to install), or a
        condition with no usable material.
    """
    definition = get_set(name)
    validate_options(per_condition, seed)
    n = resolve_count(name, per_condition)
    statuses = {} if definition.generator else source_statuses(definition, root)
    with ResultsFolder(out, overwrite=overwrite) as rf:
        if definition.generator is not None:
            rows, stats = _generate(definition, rf, n, int(seed))
        else:
            rows, stats = _build_conditions(definition, statuses, rf, n, int(seed), root, progress)
        used = sorted({r["package"] for r in rows if r["status"] == "used"})
        licence_paths = _copy_licences(rf, statuses, rows, root)
        for r in rows:
            r["licence_file"] = licence_paths.get(r["source"], "")
        prov = pd.DataFrame(rows, columns=PROVENANCE_COLUMNS).fillna("")
        rf.write_csv(PROVENANCE, prov)
        rf.write_csv("lowlevel.csv", stats)
        counts = _counts(prov, definition.condition_names, "used")
        skipped = _counts(prov, definition.condition_names, "skipped")
        shortfalls = {c: n - k for c, k in counts.items() if k < n}
        versions = {st.source.package: st.version for st in statuses.values() if st.present} or {
            "topo": _topo_version()
        }
        rf.write_text(
            "README.md",
            _readme(definition, n, int(seed), counts, skipped, prov, stats, statuses),
        )
        rf.write_manifest(
            "stimuli build",
            {"name": name, "per_condition": n, "seed": int(seed)},
            None,
            seed=int(seed),
            extra={"counts": counts, "skipped": skipped, "sources": versions, "packages": used},
        )
    result = BuildResult(name, rf.out, n, counts, skipped, shortfalls, versions)
    for cond in shortfalls:
        warn(
            f"set {name!r}: condition {cond!r} has {counts[cond]} of {n} stimuli "
            "(its sources give no more)"
        )
    return result


# ---------------------------------------------------------------------- conditions
def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _ordered(cond, statuses, seed: int) -> list[Candidate]:
    present = {k: v for k, v in statuses.items() if v.present}
    pools = cond.pools(present)
    rng = np.random.default_rng([seed, _crc(cond.name)])
    if cond.mix == "interleave":
        return interleave(pools, rng)
    return [c for pool in pools for c in (pool[i] for i in rng.permutation(len(pool)))]


def _build_conditions(definition, statuses, rf, n, seed, root, progress):
    rows, stats = [], []
    suffix = ".png" if definition.modality == "image" else ".wav"
    for cond in definition.conditions:
        made = 0
        for cand in _ordered(cond, statuses, seed):
            if made >= n:
                break
            rng = np.random.default_rng([seed, _crc(cond.name), _crc(cand.original)])
            base = _row(cand, cond.name, statuses, root)
            try:
                data, steps = cand.make(rng)
            except TopoInputError as exc:
                # bad material is skipped and said so, never silently dropped
                rows.append({**base, "status": "skipped", "reason": _one_line(str(exc))})
                continue
            if definition.greyscale:
                data = np.repeat(images.luminance(data)[..., None], 3, axis=2)
                steps = [*steps, "greyscale (Rec. 709 luminance in R, G and B)"]
            rel = f"{cond.name}/{cond.name}_{made:03d}{suffix}"
            if suffix == ".png":
                rf.write_bytes(rel, images.png_bytes(data))
                stats.append({"file": rel, "condition": cond.name, **images.image_stats(data)})
            else:
                rf.write_bytes(rel, audio.wav_bytes(data))
                stats.append({"file": rel, "condition": cond.name, **audio.audio_stats(data)})
            rows.append({**base, "file": rel, "status": "used", "transforms": "; ".join(steps)})
            made += 1
            if progress is not None:
                progress(cond.name, made, n)
        if made == 0:
            tried = sum(1 for r in rows if r["condition"] == cond.name)
            raise TopoInputError(
                f"set {definition.name!r}: condition {cond.name!r} has no usable material "
                f"({tried} original(s) tried, all skipped; sources: "
                f"{', '.join(s.package for s in definition.sources())})"
            )
    return rows, pd.DataFrame(stats)


def _row(cand: Candidate, condition: str, statuses, root) -> dict:
    keys = cand.source.split("+")
    sts = [statuses[k] for k in keys]
    licences = [
        licence_for(st.source, cand.path if i == 0 else None, root) for i, st in enumerate(sts)
    ]
    return {
        "file": "",
        "condition": condition,
        "source": cand.source,
        "package": " + ".join(st.source.package for st in sts),
        "version": " + ".join(st.version for st in sts),
        "original": cand.original,
        "licence": " AND ".join(dict.fromkeys(licences)),
        "transforms": "",
        "reason": "",
    }


def _generate(definition: StimulusSetDef, rf: ResultsFolder, n: int, seed: int):
    from topocli.stimuli.generators import generate_retinotopy, generate_tonotopy
    from topocli.stimuli.localizers import load_localizer

    loc = load_localizer(definition.generator)
    gen = dict(loc.generator or {})
    kind = gen.pop("kind")
    gen["seed"] = seed
    root = rf.path("_generated").parent
    if kind == "retinotopy":
        gen["n_per_position"] = n
        positions = {k: tuple(v) for k, v in gen.pop("positions").items()}
        folders = generate_retinotopy(root, positions, **gen)
    else:
        gen["n_per_frequency"] = n
        folders = generate_tonotopy(root, **gen)
    rows, stats = [], []
    for cond, folder in folders.items():
        for path in sorted(Path(folder).iterdir()):
            rel = path.relative_to(root).as_posix()
            rows.append(
                {
                    "file": rel,
                    "condition": cond,
                    "status": "used",
                    "source": "topo-generator",
                    "package": "topo",
                    "version": _topo_version(),
                    "original": f"generated by topocli.stimuli.generators ({kind})",
                    "licence": "Apache-2.0 (generated by topo)",
                    "transforms": json.dumps(gen, sort_keys=True),
                    "reason": "",
                }
            )
            stats.append({"file": rel, "condition": cond})
    return rows, pd.DataFrame(stats)


def _counts(prov: pd.DataFrame, conditions, state: str) -> dict[str, int]:
    sub = prov[prov["status"] == state]
    return {c: int((sub["condition"] == c).sum()) for c in conditions}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _topo_version() -> str:
    from topocli import __version__

    return str(__version__)


# ---------------------------------------------------------------------- licences, README
def _copy_licences(rf: ResultsFolder, statuses, rows, root) -> dict[str, str]:
    """Copy the licence texts of every source used; returns source key -> licence folder."""
    used = sorted({r["source"] for r in rows if r["status"] == "used"})
    out = {}
    for key in used:
        folders = []
        for part in key.split("+"):
            if part == "topo-generator":
                rf.write_text("_licenses/topo/LICENSE.txt", _GENERATED_NOTE)
                folders.append("_licenses/topo")
                continue
            if part not in statuses:
                continue
            st = statuses[part]
            folder = f"_licenses/{st.source.package}"
            texts = licence_texts(st, root)
            for path in texts:
                rf.write_bytes(f"{folder}/{path.name}", path.read_bytes())
            if not texts:
                rf.write_text(f"{folder}/LICENSE.txt", _licence_note(st))
            folders.append(folder)
        out[key] = " ".join(folders)
    return out


_GENERATED_NOTE = (
    "Generated by topo (topocli.stimuli.generators) from a seed: no third-party material.\n\n"
    "Licence: Apache-2.0, the licence of topo.\n"
)


def _licence_note(st: SourceStatus) -> str:
    return (
        f"{st.source.package} {st.version}\n\nLicence: {st.source.licence}\n\n"
        "No licence file is installed with this source on this machine; the licence above is "
        "the one its package states.\n"
    )


def _readme(definition, n, seed, counts, skipped, prov, stats, statuses) -> str:
    lines = [
        f"# Stimulus set `{definition.name}`",
        "",
        definition.description + ".",
        "",
        f"Built by `topo stimuli build {definition.name} --per-condition {n} --seed {seed}` "
        "from material installed on this machine. Nothing here may be redistributed except "
        "under the licences in `PROVENANCE.csv` and `_licenses/`.",
        "",
        "## Counts per condition",
        "",
        "| condition | stimuli | asked | skipped originals | sources used |",
        "|---|---|---|---|---|",
    ]
    used = prov[prov["status"] == "used"]
    for cond in definition.condition_names:
        mix = used[used["condition"] == cond]["source"].value_counts().sort_index()
        text = ", ".join(f"{k} {v}" for k, v in mix.items())
        lines.append(f"| {cond} | {counts[cond]} | {n} | {skipped[cond]} | {text} |")
    short = [c for c in definition.condition_names if counts[c] < n]
    if short:
        lines += [
            "",
            f"Fewer than {n}: {', '.join(f'{c} ({counts[c]})' for c in short)}; the sources "
            "give no more.",
        ]
    if definition.usage:
        lines += ["", "## Use", "", f"    {definition.usage}"]
    if definition.notes:
        lines += ["", "## Method", "", *[f"- {note}" for note in definition.notes]]
    if definition.modality == "image" and definition.generator is None:
        lines += [
            "- Every image: RGB, transparent parts composited on mid-grey (128), square, "
            f"{images.SIZE} x {images.SIZE}, luminance (Rec. 709) mean {images.TARGET_MEAN:g} "
            f"and RMS contrast {images.TARGET_RMS:g} (iterated affine matching with clipping)."
        ]
    if definition.modality == "audio" and definition.generator is None:
        lines += [
            f"- Every sound: mono {audio.RATE} Hz, silence trimmed, cut or zero-padded to "
            f"{definition.duration_s:g} s with 10 ms ramps, RMS {audio.TARGET_RMS:g} over the "
            "sound before padding, 16-bit PCM WAV."
        ]
    if len(stats.columns) > 2:
        cols = [c for c in stats.columns if c not in ("file", "condition")]
        lines += [
            "",
            "## Remaining low-level differences (mean ± sd per condition)",
            "",
            "| condition | " + " | ".join(cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for cond in definition.condition_names:
            sub = stats[stats["condition"] == cond]
            cells = [f"{sub[c].mean():.4g} ± {sub[c].std(ddof=0):.2g}" for c in cols]
            lines.append(f"| {cond} | " + " | ".join(cells) + " |")
        lines += ["", "Per-stimulus values: `lowlevel.csv`."]
    lines += [
        "",
        "## Sources",
        "",
        "| source | package | version | licence | install |",
        "|---|---|---|---|---|",
    ]
    for key, st in sorted(statuses.items()):
        if st.present and (used["source"].str.split("+").apply(lambda p, k=key: k in p)).any():
            lines.append(
                f"| {key} | {st.source.package} | {st.version} | {st.source.licence} | "
                f"`{st.source.install}` |"
            )
    if definition.generator is not None:
        lines.append("| topo-generator | topo | " + _topo_version() + " | Apache-2.0 | - |")
    lines += [
        "",
        "Per-file licences (from each package's Debian copyright file) are in "
        "`PROVENANCE.csv`; licence texts in `_licenses/`.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- the cache
def cache_root() -> Path:
    """Where ``stimuli = "build:NAME"`` keeps built sets: ``$TOPO_STIMULI_DIR`` or
    ``~/.cache/topo/stimuli``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "topo" / "stimuli"


def cache_key(name: str, per_condition: int | None, seed: int, root=None) -> str:
    """Hash of what determines a build's bytes: set, seed, count, builder and source versions."""
    definition = get_set(name)
    versions = {}
    if definition.generator is None:
        for st in source_statuses(definition, root).values():
            versions[st.source.package] = st.version if st.present else None
    versions["topo"] = _topo_version()
    n = resolve_count(name, per_condition)
    blob = json.dumps([name, n, int(seed), BUILDER_VERSION, versions], sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def cached_build(name: str, per_condition: int | None = None, seed: int = 0, root=None) -> Path:
    """A built set from the cache, building it there first when missing.

    Returns
    -------
    Path
        The set's folder (one sub-folder per condition).
    """
    validate_options(per_condition, seed)
    n = resolve_count(name, per_condition)
    key = cache_key(name, n, seed, root)
    folder = cache_root() / f"{name}-seed{int(seed)}-n{n}-{key}"
    if (folder / MANIFEST).is_file():
        return folder
    try:
        build_set(name, folder, n, seed, root=root)
    except TopoInputError:
        # another process may have finished the same build meanwhile
        if (folder / MANIFEST).is_file():
            return folder
        raise
    return folder


def remove_cached(folder: Path) -> None:
    """Delete one cached build (tests; a stale cache is keyed away, never reused)."""
    shutil.rmtree(folder, ignore_errors=True)
