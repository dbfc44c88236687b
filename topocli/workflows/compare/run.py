"""``topo compare``: model localizer results beside human fMRI localizer data.

The same fROI method runs on both sides (top x % of the contrast inside a search region, defined
on one half of the data and read on the other); this module pairs what each side produced and
measures how well they agree, every number with its uncertainty.

Inputs
    * One or more model results folders written by ``topo localize`` (``profiles.csv`` with the
      split-half fROI profiles, ``clusters.csv`` with island Moran's I, ``dice.csv``,
      ``tmap.nii.gz``, ``manifest.json``). Each folder's model is identified from its manifest;
      a folder whose model is the non-topographic control (name ``minilm-control``, or adaptor
      mode without a trained checkpoint) is the *control* of the trained ones.
    * The human side, either a table of fROI responses
      (:func:`topocli.human.profiles.load_human_profiles`:
      the EMFL format or ``roi, condition, mean, sem, n[, category]``) or maps
      (``--human-maps [KEY=]PATH ...``: contrast t/z maps and per-condition beta maps, NIfTI,
      GIFTI or MGZ, optionally split into even/odd halves, with ``--parcels`` a folder of parcel
      masks).
    * A condition map (:func:`topocli.stats.agreement.load_condition_map`) saying which model
      condition is which human condition and which model fROI (``contrast@area`` or a bare
      contrast: every area) is which human fROI or parcel category. Without one, the shipped
      map named after the model's localizer is used when it exists
      (``localizers/condition_maps/<localizer>.toml``), else conditions and fROIs with the same
      name on both sides.

Human maps
    A map's key is given as ``KEY=PATH`` or taken from the file name (``tom.even.nii.gz`` ->
    ``tom.even``). A key is a human condition (a per-condition response map) or a human fROI /
    parcel category (the contrast map that defines it), optionally followed by ``.even`` or
    ``.odd``. With both halves of the contrast and of the condition maps the fROIs are
    cross-validated exactly as on the sheet (:func:`topocli.human.froi.split_half_froi_responses`)
    and their split-half Dice is the human reliability; with whole maps only, the fROI is defined
    and read on the same data (said in the report). With ``--parcels`` the search regions of a
    category are the parcels under ``PARCELS/<category>/`` (or the parcel named so); without,
    the whole map (finite non-zero elements). Islands for Moran's I are the supra-threshold
    components of the whole contrast map after nilearn's FDR threshold (26-neighbour voxels,
    mesh edges on surfaces, the model's minimum cluster size and permutation count).

Metrics (``metrics.csv``, one row per number)
    * ``profile``: Pearson and Spearman r between the model fROI's and the human fROI's mean
      responses over the shared conditions, permutation p (exact enumeration when the
      conditions are few) and bootstrap 95 % CI (:func:`topocli.stats.agreement.profile_agreement`);
    * ``selectivity``: d' of the contrast's positive-weight (target) conditions against its
      negative-weight (other) conditions on each side, in units of that side's per-condition
      spread: the SD across held-out stimuli on the model (``response_sem * sqrt(n_stimuli)``,
      an upper bound, so d' is a lower bound) and the SD across participants on the human side;
    * ``spatial``: island Moran's I distributions (mean, SD, n islands) with Welch t and
      Mann-Whitney U between model and human and between every trained model and the control,
      plus cluster counts per 1000 searched elements and mean cluster size in % of them;
    * ``reliability``: split-half Dice of the model fROI (``dice.csv``) and of the human fROIs.

:func:`compare` computes everything (no files written), in the order above;
:func:`~topocli.workflows.compare.report.write_compare_results` writes the results folder;
:func:`run_compare` is the command. The steps live in sibling modules named after what they
handle: ``models`` (the model folders), ``human_side`` (tables, maps, parcels, islands),
``conditions`` (condition maps), ``pairs`` (model fROI <-> human fROI), ``metrics`` (the rows of
``metrics.csv``), ``result`` (:class:`CompareResult`, ``profiles.csv``) and ``report`` (tables,
figures, ``report.html``, the terminal summary).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from topocli.errors import TopoInputError
from topocli.stats.agreement import profile_agreement
from topocli.workflows.compare.conditions import (
    check_condition_map,
    in_human_names,
    resolve_condition_map,
)
from topocli.workflows.compare.human_side import (
    add_table_profiles,
    classify_map_keys,
    human_from_maps,
    load_human_table,
    parse_map_specs,
)
from topocli.workflows.compare.metrics import (
    contrast_baseline_row,
    metrics_table,
    profile_rows,
    reliability_rows,
    selectivity_rows,
    spatial_rows,
)
from topocli.workflows.compare.models import (
    ModelResults,
    load_model_results,
    model_profile,
    unique_labels,
)
from topocli.workflows.compare.pairs import match_pairs, pairs_with_human_profiles
from topocli.workflows.compare.report import print_summary, write_compare_results
from topocli.workflows.compare.result import CompareResult, profiles_table


def compare(
    model_dirs: Sequence[str | Path],
    human_profiles: str | Path | None = None,
    human_maps: Sequence[str | Path] | None = None,
    parcels: str | Path | None = None,
    condition_map: str | Path | None = None,
    permutations: int = 10000,
    bootstrap: int = 10000,
    seed: int = 0,
    resample: bool = False,
    mesh: str | Path | None = None,
    human_q: float | None = None,
    top_percent: float | None = None,
) -> CompareResult:
    """Compare model localizer results with human fROI data (see the module docstring).

    Parameters
    ----------
    model_dirs : sequence of str or Path
        ``topo localize`` results folders.
    human_profiles : str or Path, optional
        Human fROI response table; exactly one of ``human_profiles`` and ``human_maps``.
    human_maps : sequence of str or Path, optional
        ``[KEY=]PATH`` entries (:func:`parse_map_specs`).
    parcels : str or Path, optional
        Parcel folder for ``human_maps``.
    condition_map : str or Path, optional
        Condition map file or shipped name (:func:`resolve_condition_map`).
    permutations, bootstrap : int
        Profile correlation: permutation orderings (exact when fewer would do) and bootstrap
        resamples.
    seed : int
        Seeds the permutations, bootstraps and human island permutations.
    resample : bool
        Resample human maps onto parcel grids when they differ (else refuse).
    mesh : str or Path, optional
        GIFTI geometry for surface maps.
    human_q : float, optional
        FDR level for human islands (default: the first model folder's ``q``, else 0.05).
    top_percent : float, optional
        Human fROI size (default: the first model folder's ``top_percent``, else 10).

    Returns
    -------
    CompareResult

    Raises
    ------
    TopoInputError
        Any bad input, in one line (see the issue's list: misaligned maps, absent conditions,
        missing columns, empty parcels, fewer than 3 shared conditions).
    """
    _check_options(
        model_dirs,
        human_profiles,
        human_maps,
        parcels,
        permutations,
        bootstrap,
        seed,
        human_q,
        top_percent,
    )

    # model results folders
    models = [load_model_results(d) for d in model_dirs]
    unique_labels(models)
    from topocli.reporting.reader import analysis_differences, warn_if_incomparable

    for other in models[1:]:  # a trained model and its control must share the analysis
        warn_if_incomparable(
            f"--model-results {models[0].path} and {other.path}",
            analysis_differences(models[0].parameters, other.parameters),
        )
    # the human fROIs and islands follow the model's method (fROI size, FDR level, minimum
    # island size, Moran permutations) unless told otherwise
    first = models[0].parameters
    q = float(human_q if human_q is not None else first.get("q") or 0.05)
    top = float(top_percent if top_percent is not None else first.get("top_percent") or 10.0)
    min_size = int(first.get("min_cluster") or 8)
    island_permutations = int(first.get("permutations") or 999)

    # human data, condition map, fROI pairs. A table names its own conditions and fROIs, so the
    # condition map is checked against them; a human map's key is a condition or an fROI only as
    # the condition map says, and only the maps of paired targets are then worked through
    if human_profiles is not None:
        human = load_human_table(human_profiles)
        cmap, cmap_source = resolve_condition_map(
            condition_map, models, human.conditions, human.targets
        )
        check_condition_map(cmap, models, human.conditions, human.targets)
        pairs, skipped = match_pairs(cmap, models)
        add_table_profiles(human, [p.target for p in pairs])
    else:
        specs = parse_map_specs(human_maps)
        keys = sorted({s.key for s in specs})
        cmap, cmap_source = resolve_condition_map(condition_map, models, keys, keys)
        classify_map_keys(specs, cmap)
        map_conditions = [s.key for s in specs if s.key in set(cmap.conditions.values())]
        check_condition_map(cmap, models, map_conditions, None)
        pairs, skipped = match_pairs(cmap, models)
        human = human_from_maps(
            specs,
            cmap,
            list(dict.fromkeys(p.target for p in pairs)),
            parcels,
            resample,
            mesh,
            top,
            q,
            min_size,
            island_permutations,
            seed,
        )
    notes: list[str] = list(skipped)
    pairs = pairs_with_human_profiles(pairs, human, notes)
    control_note = _control_note(models)
    if control_note:
        notes.append(control_note)

    # per pair: profile agreement, selectivity, reliability (over the shared conditions, in
    # human names)
    metrics: list[dict[str, Any]] = []
    agreements: dict[tuple[str, str, str], dict] = {}
    warned_floors: set[int] = set()
    for pair in pairs:
        model_p = in_human_names(model_profile(pair.model, pair.froi), cmap)
        human_p = human.profiles[pair.target]
        agreement = profile_agreement(
            model_p["mean"], human_p["mean"], permutations, bootstrap, seed
        )
        agreements[(pair.model.label, pair.froi, pair.target)] = agreement
        metrics.extend(profile_rows(pair, agreement))
        baseline = contrast_baseline_row(pair, model_p, human_p, cmap)
        metrics.extend([baseline] if baseline else [])
        _warn_permutation_floor(agreement, warned_floors)
        metrics.extend(selectivity_rows(pair, model_p, human_p, cmap))
        metrics.extend(reliability_rows(pair, human))
    # spatial statistics: per (model, contrast, human target), then trained vs control
    metrics.extend(spatial_rows(pairs, models, human))

    params = {
        "model_results": [str(Path(d)) for d in model_dirs],
        "human_profiles": None if human_profiles is None else str(human_profiles),
        "human_maps": None if not human_maps else [str(m) for m in human_maps],
        "parcels": None if parcels is None else str(parcels),
        "condition_map": None if condition_map is None else str(condition_map),
        "condition_map_used": cmap.path,
        "condition_map_source": cmap_source,
        "conditions": dict(cmap.conditions),
        "frois": dict(cmap.frois),
        "permutations": int(permutations),
        "bootstrap": int(bootstrap),
        "seed": int(seed),
        "resample": bool(resample),
        "mesh": None if mesh is None else str(mesh),
        "human_q": q,
        "top_percent": top,
        "min_island": min_size,
        "island_permutations": island_permutations,
    }
    return CompareResult(
        models=models,
        human=human,
        cmap=cmap,
        cmap_source=cmap_source,
        pairs=pairs,
        metrics=metrics_table(metrics),
        profiles=profiles_table(pairs, human, cmap),
        agreements=agreements,
        notes=notes,
        params=params,
    )


def _warn_permutation_floor(agreement: dict, warned: set[int]) -> None:
    """A TopoWarning, once per condition count, when the profile p cannot reach 0.01."""
    import math

    from topocli.errors import warn

    n = int(agreement.get("n_conditions") or 0)
    if not agreement.get("permutation_exact") or n < 2 or n in warned:
        return
    floor = 1.0 / math.factorial(n)
    if floor > 0.01:
        warned.add(n)
        warn(
            f"with {n} shared conditions the exact permutation p of a profile correlation "
            f"cannot go below {floor:.3g} (1/{n}!); map more conditions to test at 0.01"
        )


def _check_options(
    model_dirs: Sequence[str | Path],
    human_profiles: str | Path | None,
    human_maps: Sequence[str | Path] | None,
    parcels: str | Path | None,
    permutations: int,
    bootstrap: int,
    seed: int,
    human_q: float | None,
    top_percent: float | None,
) -> None:
    """Refuse bad options before any folder or map is read."""
    if (human_profiles is None) == (not human_maps):
        raise TopoInputError("give exactly one of --human-profiles CSV and --human-maps MAP ...")
    if parcels is not None and not human_maps:
        raise TopoInputError("--parcels goes with --human-maps")
    if permutations < 0 or bootstrap < 0:
        raise TopoInputError("--permutations and --bootstrap must be >= 0")
    if seed < 0:
        raise TopoInputError(f"--seed must be >= 0, got {seed}")
    if human_q is not None and not 0 < human_q < 1:
        raise TopoInputError(f"--human-q must be in (0, 1), got {human_q}")
    if top_percent is not None and not 0 < top_percent <= 100:
        raise TopoInputError(f"--top-percent must be in (0, 100], got {top_percent}")
    if not model_dirs:
        raise TopoInputError("give at least one --model-results folder")


def _control_note(models: Sequence[ModelResults]) -> str | None:
    """Why there is no trained-vs-control Moran test among several folders, if there is none."""
    if len(models) > 1 and not (
        any(m.is_control for m in models) and any(not m.is_control for m in models)
    ):
        kind = "controls" if all(m.is_control for m in models) else "trained models"
        return f"all {len(models)} model folders are {kind}: no trained-vs-control Moran test"
    return None


def run_compare(
    model_results: Sequence[Path],
    out: Path,
    human_profiles: Path | None = None,
    human_maps: Sequence[str] | None = None,
    parcels: Path | None = None,
    condition_map: str | None = None,
    permutations: int = 10000,
    bootstrap: int = 10000,
    seed: int = 0,
    resample: bool = False,
    mesh: Path | None = None,
    human_q: float | None = None,
    top_percent: float | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    console: Any = None,
    command_line: str | None = None,
) -> Path:
    """``topo compare``: compute, then write one results folder atomically; returns ``out``."""
    from topocli.reporting.results import ResultsFolder

    result = compare(
        model_results,
        human_profiles,
        human_maps,
        parcels,
        condition_map,
        permutations,
        bootstrap,
        seed,
        resample,
        mesh,
        human_q,
        top_percent,
    )
    with ResultsFolder(out, overwrite) as rf:
        write_compare_results(rf, result, command_line)
    if not quiet and console is not None:
        print_summary(result, console)
        console.print(f"wrote {out}")
    return Path(out)
