"""``topo smooth``: Gaussian smoothing (FWHM in mm) of the results of an earlier command.

Smoothing is done where it is valid, never on p or q:

* a ``topo localize`` folder is re-localized with its own model, stimuli, contrasts and
  thresholds and ``--fwhm-mm`` applied to the per-stimulus activations, as fMRI smooths volumes
  before the GLM (:func:`relocalize_arguments`; the activation cache makes this one pass over
  the cached activations, no forward pass). t, p and q are recomputed, re-thresholded and
  re-clustered, and the output is a localize folder marked as smoothed (``parameters.fwhm_mm``
  and ``extra.smoothed_from``) that intervene, compare and ``screen --from`` accept;
* any other folder, or one NIfTI sheet map, has its t (and other estimate) maps smoothed for
  display (:func:`run_smooth`): p, q and cluster-label maps are not smoothed (a smoothed
  p-value is not a p-value), and nothing is re-thresholded, because a smoothed t map has no
  known null distribution.

Maps are smoothed with :func:`topocli.stats.smoothing.smooth_map` (within each area unless
``across_areas``; NaN units stay NaN and do not count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from topocli.errors import TopoInputError
from topocli.reporting.reader import NIFTI_SUFFIXES, read_results, results_root
from topocli.reporting.reader import is_nifti as _is_nifti


def _stem(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _fwhm_label(fwhm_mm: float) -> str:
    return f"{float(fwhm_mm):g}".replace("/", "_")


def default_out(input_path: str | Path, fwhm_mm: float) -> Path:
    """``<input>-smoothed-<F>mm``; for a single map file, beside its results folder.

    A map ``R/tmap.nii.gz`` gives ``R-tmap-smoothed-<F>mm`` (next to ``R``), so the source
    results folder is never written into.
    """
    p = Path(input_path)
    label = f"smoothed-{_fwhm_label(fwhm_mm)}mm"
    if p.is_file() or _is_nifti(p.name):
        folder = p.resolve().parent
        return folder.with_name(f"{folder.name}-{_stem(p.name)}-{label}")
    return p.with_name(f"{p.name.rstrip('/')}-{label}")


# statistics a smoothed value is still an estimate of; p, q and labels are not smoothed
SMOOTHABLE_STATS = {"t", "z", "F", "estimate", None}
NOT_SMOOTHED_STEMS = {"pmap", "qmap", "clusters", "known_maps", "froi", "anova"}
# the localize options a re-localization keeps from the source folder
_LOCALIZE_OPTIONS = (
    "q", "alternative", "fdr_scope", "top_percent", "min_cluster", "connectivity",
    "permutations", "froi_areas",
)


def relocalize_arguments(
    input_path: str | Path, fwhm_mm: float, across_areas: bool = False
) -> dict[str, Any] | None:
    """The ``run_localize`` arguments that redo a localize folder with smoothed activations.

    Parameters
    ----------
    input_path : path
        A results folder; only a ``topo localize`` folder gives arguments.
    fwhm_mm : float
        FWHM of the Gaussian applied to every stimulus's activations (> 0).
    across_areas : bool
        Smooth over the whole contiguous sheet instead of within each area.

    Returns
    -------
    dict or None
        ``model`` (the ``--model`` that reloads the folder's model), ``identity`` (the model
        identity the reloaded model must have) and ``localize`` (keyword arguments of
        ``run_localize``); None for any other input, which :func:`run_smooth` handles.
    """
    from topocli.models.registry import model_spec_of

    p = Path(input_path)
    if not p.is_dir():
        return None
    results = read_results(p)
    if results.command != "localize":
        return None
    params = results.parameters
    if not results.identity:
        raise TopoInputError("manifest.json does not record the model it was made with", p)
    fw = _checked_fwhm(fwhm_mm)
    if float(params.get("fwhm_mm") or 0.0) > 0:
        raise TopoInputError(
            f"is already smoothed (FWHM {params['fwhm_mm']:g} mm); smooth the unsmoothed "
            "folder it came from, so that FWHMs do not compound",
            p,
        )
    localizer = params.get("localizer_file") or params.get("localizer")
    if localizer is None:
        raise TopoInputError("manifest.json does not record its localizer", p)
    kwargs = {
        "localizer": str(localizer),
        "stimuli": Path(params["stimuli"]) if params.get("stimuli") else None,
        "contrast": list(params["contrast_options"]) if params.get("contrast_options") else None,
        "fwhm_mm": fw,
        "across_areas": bool(across_areas),
        "pooling": params.get("pooling", "mean"),
        "absolute": bool(params.get("absolute", False)),
        "control": "control" in results.extra,
        "smoothed_from": results.root,
    }
    for key in _LOCALIZE_OPTIONS:
        if params.get(key) is not None:
            kwargs[key] = params[key]
    return {
        "model": model_spec_of(results.identity, params),
        "identity": results.identity,
        "localize": kwargs,
    }


def _checked_fwhm(fwhm_mm: Any) -> float:
    try:
        fw = float(fwhm_mm)
    except (TypeError, ValueError):
        raise TopoInputError(f"--fwhm-mm must be a number > 0, got {fwhm_mm!r}") from None
    if not (math.isfinite(fw) and fw > 0):
        raise TopoInputError(f"--fwhm-mm must be a finite number > 0, got {fwhm_mm}")
    return fw


def _map_stats(path: str | Path, n_maps: int) -> list[str | None]:
    """The statistic of each map of a file, from its JSON sidecar (None when not recorded)."""
    import json

    sidecar = Path(path).with_name(_stem(Path(path).name) + ".json")
    stat: Any = None
    if sidecar.is_file():
        try:
            stat = json.loads(sidecar.read_text()).get("stat")
        except (OSError, ValueError, AttributeError):
            stat = None
    if isinstance(stat, list) and len(stat) == n_maps:
        return [None if s is None else str(s) for s in stat]
    return [None if stat is None else str(stat)] * n_maps


def collect_maps(input_path: str | Path) -> tuple[list[tuple[str, str]], dict[str, Any], Path]:
    """The NIfTI files to smooth: ``[(relative name, absolute path)]``, the manifest, the root.

    Raises
    ------
    TopoInputError
        Not a results folder / sheet map, or a folder with no sheet maps.
    """
    p = Path(input_path)
    if not p.exists():
        raise TopoInputError("input not found (expected a results folder or a .nii.gz map)", p)
    if p.is_dir():
        results = read_results(p)
        names = results.nifti_outputs()
        if not names:
            raise TopoInputError(
                f"results folder of `topo {results.command}` holds no sheet maps (.nii.gz)", p
            )
        return [(n, str(p / n)) for n in names], results.manifest, p
    if not _is_nifti(p.name):
        raise TopoInputError("expected a results folder or a NIfTI sheet map (.nii, .nii.gz)", p)
    results = read_results(results_root(p.resolve()))
    return [(p.name, str(p))], results.manifest, results.root


def _select(
    names: Sequence[str], file_stem: str, wanted: Sequence[str] | None, used: set[str]
) -> list[int]:
    """Indices of the maps of one file that ``--maps`` asks for (all when None)."""
    if not wanted:
        return list(range(len(names)))
    picks = []
    for i, n in enumerate(names):
        keys = {n, file_stem, f"{file_stem}:{n}"}
        hit = keys & set(wanted)
        if hit:
            used.update(hit)
            picks.append(i)
    return picks


def run_smooth(
    ctx: Any,
    input_path: str | Path,
    fwhm_mm: float,
    across_areas: bool = False,
    maps: list[str] | None = None,
    out_console: Any = None,
) -> Path:
    """``topo smooth``: smooth sheet maps and write them into a new results folder.

    Parameters
    ----------
    ctx : cli.Context
        Uses ``out``, ``overwrite``, ``quiet`` (no model is loaded).
    input_path : path
        A topo results folder or one NIfTI sheet map inside one.
    fwhm_mm : float
        FWHM of the Gaussian in mm (> 0).
    across_areas : bool
        Smooth over the whole contiguous (stacked) sheet instead of within each area.
    maps : list of str, optional
        Only these maps: a map name (e.g. a contrast), a file stem (``tmap``) or
        ``stem:name``. Default: every map of every NIfTI file.
    out_console : rich Console, optional

    Returns
    -------
    Path
        The results folder written.
    """
    from topocli.reporting.reader import load_sheet_maps
    from topocli.reporting.results import ResultsFolder
    from topocli.stats.smoothing import fwhm_to_sigma, smooth_map
    from topocli.workflows.smooth.report import build_report

    fw = _checked_fwhm(fwhm_mm)
    files, manifest, root = collect_maps(input_path)
    used: set[str] = set()
    jobs = []
    refused: list[str] = []
    for rel, path in files:
        values, names, sheet = load_sheet_maps(path)
        stem = _stem(Path(rel).name)
        picks = _select(names, stem, maps, used)
        stats = _map_stats(path, len(names))
        keep = [i for i in picks if stats[i] in SMOOTHABLE_STATS and stem not in NOT_SMOOTHED_STEMS]
        refused += [f"{stem}:{names[i]}" for i in picks if i not in keep]
        if keep:
            jobs.append((rel, values[keep], [names[i] for i in keep], sheet))
    if refused and not jobs:
        raise TopoInputError(
            f"{refused[0]} is a p, q or label map: those are never smoothed (a smoothed p is not "
            "a p-value); smooth the t map, or re-localize with --fwhm-mm",
            input_path,
        )
    if maps:
        missing = [m for m in maps if m not in used]
        if missing:
            have = sorted({f"{_stem(Path(r).name)}:{n}" for r, _, ns, _ in jobs for n in ns})
            listing = _available(files) if not have else ", ".join(have)
            raise TopoInputError(f"no map {missing[0]!r} in the input; maps: {listing}", input_path)
    if not jobs:
        raise TopoInputError("nothing to smooth", input_path)
    sheets = [j[3] for j in jobs]
    if any(s != sheets[0] for s in sheets[1:]):
        raise TopoInputError(
            "the input's maps use different sheets; smooth them one file at a time"
        )
    sheet = sheets[0]
    fwhm_to_sigma(fw, sheet.mm_per_unit)
    smoothed = [smooth_map(v, sheet, fw, across_areas) for _, v, _, _ in jobs]
    out = Path(ctx.out) if getattr(ctx, "out", None) is not None else default_out(input_path, fw)
    with ResultsFolder(out, getattr(ctx, "overwrite", False)) as rf:
        for (rel, _, names, _), after in zip(jobs, smoothed, strict=True):
            # no NIfTI intent: a smoothed t map is not t-distributed (display only)
            rf.write_sheet_nifti(rel, after, sheet, names)
        rf.write_report(build_report(jobs, smoothed, sheet, fw, across_areas, input_path, manifest))
        rf.write_manifest(
            "smooth",
            {"fwhm_mm": fw, "across_areas": bool(across_areas), "maps": maps},
            {"input": str(input_path)},
            extra={
                "source_command": manifest.get("command"),
                "source_folder": str(Path(root).resolve()),
                "smoothed": {rel: names for rel, _, names, _ in jobs},
                "not_smoothed": refused,
                "display_only": True,
                "sheet": sheet.describe(),
            },
        )
    if not getattr(ctx, "quiet", False) and out_console is not None:
        n = sum(len(j[2]) for j in jobs)
        out_console.print(
            f"smoothed {n} map{'s' if n != 1 else ''} with FWHM {fw:g} mm "
            f"({'across areas' if across_areas else 'within each area'}) for display: not "
            f"re-thresholded; {len(refused)} p / q / label map(s) left out; wrote {out}"
        )
    return out


def _available(files: list[tuple[str, str]]) -> str:
    from topocli.reporting.reader import load_sheet_maps

    out = []
    for rel, path in files:
        _, names, _ = load_sheet_maps(path)
        out.extend(f"{_stem(Path(rel).name)}:{n}" for n in names)
    return ", ".join(out)
