"""Known localizer maps that a screen's novelty is measured against.

The built-in known maps are the shipped language (sentences > non-words), theory-of-mind (false
belief > false photo) and multiple-demand (math > stories) localizers, run through the same
activation pipeline on the same model with the same ``--q``, FDR scope and ``--fwhm-mm``; their
significance masks are cached beside the activation cache. ``--known`` adds the significance
maps of earlier localize / screen results folders made on the same model.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from topocli.errors import TopoInputError
from topocli.sheet import Sheet
from topocli.stimuli.stimulus_set import StimulusSet
from topocli.workflows.screen.analysis import ScreenOptions

BUILTIN_KNOWN = ("language", "tom", "md")
KNOWN_CACHE_VERSION = 1

@dataclass
class KnownMap:
    """A known localizer's significance map on the same sheet."""

    name: str
    source: str
    significant: np.ndarray
    t: np.ndarray | None = None
    contrast: str = ""

    @property
    def n_significant(self) -> int:
        return int(np.count_nonzero(self.significant))


def _known_stimuli(name: str, stack: ExitStack) -> tuple[StimulusSet, dict[str, float], str]:
    """A known localizer's stimuli (only the conditions its contrast uses) and contrast."""
    from topocli.stimuli.localizers import resolve_contrasts, resolve_localizer

    spec = resolve_localizer(name)
    stim_set = spec.stimulus_set(stack)
    cname, weights = next(iter(resolve_contrasts(spec, None, stim_set.conditions).items()))
    used = [c for c in stim_set.conditions if weights.get(c, 0.0) != 0.0]
    return stim_set.subset(used), dict(weights), str(cname)


def known_map(
    model: Any,
    stim_set: StimulusSet,
    weights: dict[str, float],
    opts: ScreenOptions,
    progress: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Significance mask and t map of one contrast, through the activation pipeline.

    The same computation as ``topo localize`` on these stimuli with the screen's ``--q``, FDR
    scope, smoothing and pooling (one-sided Welch t, BH-FDR).
    """
    from topocli.activations.extraction import extract
    from topocli.stats.contrasts import weights_vector
    from topocli.stats.maps import condition_moments, contrast_maps
    from topocli.stats.smoothing import smoothing_transform

    sheet = model.sheet
    stim_set.require_min_per_split(2)
    transform = smoothing_transform(sheet, float(opts.fwhm_mm), opts.across_areas)
    with extract(
        model,
        stim_set,
        opts.batch_size,
        opts.pooling,
        transform=transform,
        use_cache=opts.use_cache,
        progress=progress,
    ) as ext:
        n, mean, var = condition_moments(ext.stats)
    groups = sheet.area if opts.fdr_scope == "area" else None
    w = weights_vector(weights, stim_set.conditions)
    maps = contrast_maps(w, n, mean, var, "greater", opts.q, groups)
    return np.asarray(maps["significant"], bool), np.asarray(maps["t"], np.float64)


def _known_cache_file(model: Any, stim_set: StimulusSet, weights: dict, opts: ScreenOptions):
    from topocli.activations.extraction import activation_cache_dir, cache_key

    payload = json.dumps(
        {
            "activations": cache_key(model, stim_set, opts.pooling),
            "weights": weights,
            "q": float(opts.q),
            "fdr_scope": opts.fdr_scope,
            "fwhm_mm": float(opts.fwhm_mm),
            "across_areas": bool(opts.across_areas),
            "version": KNOWN_CACHE_VERSION,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(payload.encode()).hexdigest()
    return activation_cache_dir() / "screen-known" / f"{key}.safetensors"


def builtin_known_maps(
    model: Any,
    opts: ScreenOptions,
    names: Sequence[str] = BUILTIN_KNOWN,
    progress: Any = None,
) -> tuple[list[KnownMap], list[str]]:
    """Run the shipped language / ToM / MD localizers on ``model`` (cached); maps and notes."""
    from safetensors.numpy import load_file, save_file

    known, notes = [], []
    mods = getattr(model, "modalities", {"text"})
    if "text" not in mods:
        notes.append(
            "The built-in known localizers (language, ToM, MD) are text localizers and this "
            "model takes no text: novelty is measured against --known folders only."
        )
        return known, notes
    for name in names:
        with ExitStack() as stack:
            stim_set, weights, cname = _known_stimuli(name, stack)
            cache_file = (
                _known_cache_file(model, stim_set, weights, opts) if opts.use_cache else None
            )
            if cache_file is not None and cache_file.is_file():
                arrays = load_file(str(cache_file))
                sig, t = arrays["significant"].astype(bool), arrays["t"].astype(np.float64)
            else:
                sig, t = known_map(model, stim_set, weights, opts, progress)
                if cache_file is not None:
                    cache_file.parent.mkdir(parents=True, exist_ok=True)
                    tmp = cache_file.with_name(f".{cache_file.name}.{uuid.uuid4().hex}")
                    save_file({"significant": sig.astype(np.uint8), "t": t}, str(tmp))
                    os.replace(tmp, cache_file)
        known.append(KnownMap(name, "built-in localizer, shipped stimuli", sig, t, cname))
    return known, notes


def read_known_folder(
    folder: str | Path, model: Any, sheet: Sheet, opts: ScreenOptions | None = None
) -> list[KnownMap]:
    """Significance maps of a localize or screen results folder made on the same model.

    The folder's ``manifest.json`` must record a model identity equal to ``model``'s (base
    weights hash, mode, recorded areas, sheet, adaptor weights hash); ``units.csv`` gives one
    map per contrast (a screen's categories against their rest) from its ``significant`` column.
    """
    from topocli.models.checkpoint import model_identity
    from topocli.reporting.reader import analysis_differences, read_results, warn_if_incomparable

    results = read_results(folder)
    results.require_same_model(model_identity(model), "localize it again on this model")
    if opts is not None:
        mine = {k: getattr(opts, k) for k in ("fwhm_mm", "across_areas", "pooling", "q")}
        mine["fdr_scope"] = opts.fdr_scope
        warn_if_incomparable(
            f"this screen and --known {results.root}",
            analysis_differences(mine, results.parameters),
        )
    df = results.unit_maps(("unit", "significant"))
    units = results.path("units.csv")
    label = results.localizer or results.root.name
    fwhm = float(results.parameters.get("fwhm_mm") or 0.0)
    if fwhm > 0:
        label = f"{label} {fwhm:g} mm"
    out = []
    for name, sub in df.groupby("contrast", sort=False):
        sub = sub.sort_values("unit")
        if len(sub) != sheet.n_units or not np.array_equal(sub["unit"], np.arange(sheet.n_units)):
            raise TopoInputError(
                f"{name!r} has {len(sub)} units, this model's sheet has {sheet.n_units}", units
            )
        sig = sub["significant"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
        t = sub["t"].to_numpy(dtype=np.float64) if "t" in sub else None
        out.append(KnownMap(f"{label}: {name}", str(results.root), sig, t, str(name)))
    return out


def unique_names(known: list[KnownMap]) -> list[KnownMap]:
    """Known maps with unique names: a clash (two folders of one localizer) gets the folder's."""
    from dataclasses import replace

    counts: dict[str, int] = {}
    for k in known:
        counts[k.name] = counts.get(k.name, 0) + 1
    out, seen = [], set()
    for k in known:
        name = k.name if counts[k.name] == 1 else f"{Path(k.source).name}: {k.contrast}"
        base, n = name, 2
        while name in seen:
            name, n = f"{base} ({n})", n + 1
        seen.add(name)
        out.append(replace(k, name=name))
    return out
