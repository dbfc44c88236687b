"""``topo screen``: category-selective territories on the sheet, ranked by novelty.

Three ways in, one analysis:

- ``--stimuli DIR`` with sub-folders: every sub-folder is a category, each tested against all the
  others (its *rest*). One extraction pass streams every stimulus into sufficient statistics per
  (category, split); the rest of category ``k`` comes from the totals minus the category
  (:func:`topocli.stats.contrasts.category_vs_rest`), so K categories cost one pass and one
  vectorised t computation, not K. ``--with-baseline`` (or ``--against``) adds a baseline pool as
  an extra reference group: the rest then also holds the baseline, and every category is also
  reported against the baseline alone (rows with ``reference = baseline`` in ``units.csv``).
- ``--stimuli DIR`` with one category (a folder of files, or one sub-folder): the category
  against a baseline pool (default: the project's shipped mixed baseline for the modality;
  ``--against DIR`` for another).
- ``--discover POOL``: an unlabeled pool (see *Discovery*); every discovered cluster of stimuli
  is then screened like a category, against the rest of the pool.

Per category
    One-sided Welch t (category > reference), BH-FDR over the sheet, significant units
    (``q < --q`` and ``t > 0``), clusters of significant units (``--min-cluster``,
    ``--connectivity``), peak t, mean t over the significant units, island Moran's I (mean over
    the clusters, ``--permutations``), and the split-half response profile: the category's fROI
    (top ``--top-percent`` % of units of its t map, whole sheet) is defined on the even half of
    the stimuli and every category's response is read on the odd half, and vice versa
    (:func:`topocli.stats.froi.froi_profiles`). ``heldout_effect`` is the fROI's held-out response
    to its own category minus its mean held-out response to the other conditions: it is
    cross-validated, so it stays honest where the t map is not (discovered clusters).

Novelty
    ``novelty = 1 - max_j Dice(S, K_j)`` where ``S`` is the category's set of significant units
    and ``K_j`` the significant units of known localizer ``j``: the language (sentences >
    non-words), theory-of-mind (false belief > false photo) and multiple-demand (math > stories)
    localizers run through the same activation pipeline on the same model with the shipped
    stimuli, the same ``--q`` and ``--fwhm-mm`` (their significance masks are cached in the
    activation cache), plus every ``--known`` localize results folder (its ``units.csv``
    ``significant`` column; a folder made on another model is refused). A category with no
    significant unit has no map to compare: its Dice and novelty are empty (NaN).

Rank
    ``rank`` orders the categories by the number of significant units (the size of their
    selective territory; ``--rank-by peak-t``: by peak t), ties broken by higher novelty, then
    by higher peak t, then by name. Rank 1 is the strongest category-selective territory.

Exemplars
    For every category, the ``--exemplars`` stimuli of that category with the highest mean
    response over the units of its largest cluster (no cluster: its significant units; none
    significant: its top 1 % units by t). This needs per-stimulus activations, read a second
    time from memory or from the float16 activation cache.

Discovery
    Each pool stimulus is embedded with the model's own pooled final representation
    (:func:`topocli.models.inputs.final_representation`, L2-normalised), a Ward hierarchical
    clustering is built (``scipy.cluster.hierarchy.linkage``) and walked top-down. A node's *sheet
    selectivity score* is the median Welch t of the node's stimuli against all the other pool
    stimuli, taken over the node's significant units (BH q < ``--q`` and t > 0 among the units of
    the sheet, or of ``--area``); a node with no significant unit scores its peak t. The median
    over *every* unit of the sheet would be blind to a selective patch covering a few percent of
    the sheet, and a median over a fixed top share of units rewards merging groups (two territories
    fill it better than one); the median over the significant units does neither: merging two
    groups with different territories halves the effect in each, and splitting one group in two
    lowers t by the lost sample size. The root is always split; a node larger than ``--max-size``
    is always split; otherwise a node is split only when one of its children (of at least ``--min-
    size`` stimuli) scores higher than the node itself, else it is kept as a cluster. Children
    smaller than ``--min-size`` are dropped (their stimuli stay unassigned). Kept clusters are
    named ``discovered_01, discovered_02, ...`` by decreasing score and screened against the rest
    of the pool. The clusters were chosen with the same responses that are then tested, so their p
    values are optimistic; the split-half ``heldout_effect`` is not.

Memory
    Per-stimulus sheet activations are needed again after the statistics pass (exemplars, every
    level of the discovery walk). They are kept in memory as float32 when ``N x U x 4`` bytes
    fits in ``IN_MEMORY_BYTES`` (1 GiB): a pool of 3,000 stimuli on MiniLM's 2,304-unit sheet
    is 28 MB. Larger pools (3,000 stimuli x 100,000 units = 1.2 GB) are streamed from the
    float16 activation cache (half the size, on disk) once per level of the walk: every level's
    candidate nodes are disjoint, so one pass gives all their statistics. The statistics
    themselves never grow with the number of stimuli.

Where the steps live
    :mod:`~topocli.workflows.screen.inputs` (stimulus sets and their checks),
    :mod:`~topocli.workflows.screen.known` (known maps), :mod:`~topocli.workflows.screen.analysis`
    (per-category maps, novelty, rank, exemplars), :mod:`~topocli.workflows.screen.discovery`
    (the Ward walk) and :mod:`~topocli.workflows.screen.report` (tables, figures, report,
    terminal summary). This module runs them in order; activations come from the one pipeline,
    :func:`topocli.activations.extraction.extract`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topocli.activations.extraction import extract
from topocli.activations.source import ActivationSource, grouped_stats
from topocli.errors import TopoInputError
from topocli.models.checkpoint import identity_control
from topocli.sheet import Sheet
from topocli.stats.maps import require_some_variation
from topocli.stats.smoothing import smoothing_transform
from topocli.stats.suffstats import SufficientStats
from topocli.stimuli.stimulus_set import StimulusSet
from topocli.workflows.screen.analysis import (
    CategoryResult,
    ScreenOptions,
    ScreenResult,
    analyse_categories,
    control_comparison,
    measure_topography,
    pick_exemplars,
    rank_categories,
    score_novelty,
)
from topocli.workflows.screen.discovery import discover_clusters
from topocli.workflows.screen.inputs import (
    MIN_STIMULI,
    UNASSIGNED,
    check_categories,
    check_modality,
    check_not_in_baseline,
    load_pool,
    relabel,
    shipped_baseline,
    shipped_categories,
    with_baseline_group,
)
from topocli.workflows.screen.known import (
    KnownMap,
    builtin_known_maps,
    read_known_folder,
    unique_names,
)
from topocli.workflows.screen.report import print_summary, write_screen_results


def _finish(
    stats: SufficientStats,
    stim_set: StimulusSet,
    categories: Sequence[str],
    sheet: Sheet,
    opts: ScreenOptions,
    reference: str,
    baseline: str | None,
    source: ActivationSource,
    transform: Any,
    known: Sequence[KnownMap],
    raw_stats: SufficientStats | None = None,
) -> tuple[list[CategoryResult], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    results, profiles = analyse_categories(
        stats, stim_set.conditions, categories, sheet, opts, reference, baseline
    )
    require_some_variation(results, stim_set.root)
    measure_topography(results, raw_stats, stim_set.conditions, sheet, opts, reference, baseline)
    dice_table = score_novelty(results, known, sheet, min(99, opts.permutations), opts.seed)
    results = rank_categories(results, opts.rank_by)
    exemplars = pick_exemplars(source, stim_set, results, opts.n_exemplars, transform)
    return results, profiles, dice_table, exemplars


def screen(
    model: Any,
    categories: StimulusSet,
    baseline: StimulusSet | None = None,
    opts: ScreenOptions | None = None,
    known: Sequence[KnownMap] = (),
    progress: Any = None,
) -> ScreenResult:
    """Screen category sets in one extraction pass.

    Parameters
    ----------
    model : TopoModel
    categories : StimulusSet
        One condition per category (at least 4 stimuli each). With one category, ``baseline``
        is required and is the reference; with several, each is tested against the others (and
        the baseline, when given, joins the rest and is reported on its own too).
    baseline : StimulusSet, optional
    opts : ScreenOptions
    known : sequence of KnownMap
        Known localizer maps for the novelty score.
    """
    opts = opts or ScreenOptions()
    opts.check()
    check_categories(categories)
    names = list(categories.conditions)
    if len(names) == 1 and baseline is None:
        raise TopoInputError(
            f"one category ({names[0]!r}) needs a baseline pool to be tested against",
            categories.root,
        )
    base_name = None
    combined = categories
    if baseline is not None:
        check_not_in_baseline(categories, baseline)
        if len(baseline) < MIN_STIMULI:
            raise TopoInputError(
                f"the baseline pool has {len(baseline)} stimuli; need at least {MIN_STIMULI}",
                baseline.root,
            )
        combined, base_name = with_baseline_group(categories, baseline)
    check_modality(model, combined)
    sheet: Sheet = model.sheet
    transform = smoothing_transform(sheet, float(opts.fwhm_mm), opts.across_areas)
    col = extract(
        model,
        combined,
        opts.batch_size,
        opts.pooling,
        transform,
        opts.use_cache,
        progress=progress,
        keep_activations=True,
        memory_bytes=opts.memory_bytes,
        also_raw=True,
    )
    try:
        reference = "baseline" if len(names) == 1 else "rest"
        results, profiles, dice_table, exemplars = _finish(
            col.stats,
            combined,
            names,
            sheet,
            opts,
            reference,
            base_name,
            col.source,
            transform,
            known,
            col.raw_stats if transform is not None else None,
        )
    finally:
        col.source.close()
    mode = "single" if len(names) == 1 else "categories"
    params = {**opts.as_dict(), "reference": reference, "baseline": base_name}
    return ScreenResult(
        sheet=sheet,
        stim_set=combined,
        conditions=list(combined.conditions),
        categories=results,
        profiles=profiles,
        stats=col.stats,
        known=list(known),
        dice=dice_table,
        params=params,
        mode=mode,
        cache_key=col.cache_key,
        from_cache=col.from_cache,
        exemplars=exemplars,
    )


def discover_screen(
    model: Any,
    pool: StimulusSet,
    opts: ScreenOptions | None = None,
    known: Sequence[KnownMap] = (),
    progress: Any = None,
    embeddings: np.ndarray | None = None,
) -> ScreenResult:
    """Find categories in an unlabeled pool and screen them (see the module docstring).

    ``embeddings`` replaces the model's final representations (e.g. precomputed ones).
    """
    opts = opts or ScreenOptions()
    opts.check()
    if len(pool) == 0:
        raise TopoInputError("the discovery pool is empty", pool.root)
    check_modality(model, pool)
    sheet: Sheet = model.sheet
    region = None
    if opts.area is not None:
        region = sheet.area == sheet.area_index(opts.area)
    transform = smoothing_transform(sheet, float(opts.fwhm_mm), opts.across_areas)
    col = extract(
        model,
        pool,
        opts.batch_size,
        opts.pooling,
        transform,
        opts.use_cache,
        with_final=embeddings is None,
        progress=progress,
        keep_activations=True,
        memory_bytes=opts.memory_bytes,
    )
    try:
        emb = embeddings if embeddings is not None else col.final
        if emb is None:
            raise TopoInputError("this model gives no final representation to embed the pool")
        disc = discover_clusters(
            emb, col.source, opts.min_size, opts.max_size, region, opts.q, transform
        )
        if not disc.names:
            raise TopoInputError(
                f"no cluster of {opts.min_size}..{opts.max_size or len(pool) // 2} stimuli "
                "beats its parent in this pool; try a smaller --min-size",
                pool.root,
            )
        cond_names = [disc.names[i] if i >= 0 else UNASSIGNED for i in disc.labels]
        order = [*disc.names, *([UNASSIGNED] if (disc.labels < 0).any() else [])]
        labelled = StimulusSet(Path(pool.root), relabel(pool.stimuli, cond_names), order)
        groups = labelled.group_index()
        stats = grouped_stats(col.source, groups, labelled.n_groups, transform)
        raw = None
        if transform is not None:
            raw = grouped_stats(col.source, groups, labelled.n_groups)
        results, profiles, dice_table, exemplars = _finish(
            stats,
            labelled,
            disc.names,
            sheet,
            opts,
            "rest",
            None,
            col.source,
            transform,
            known,
            raw,
        )
    finally:
        col.source.close()
    params = {**opts.as_dict(), "reference": "rest of the pool", "baseline": None}
    res = ScreenResult(
        sheet=sheet,
        stim_set=labelled,
        conditions=order,
        categories=results,
        profiles=profiles,
        stats=stats,
        known=list(known),
        dice=dice_table,
        params=params,
        mode="discover",
        discovery=disc,
        cache_key=col.cache_key,
        from_cache=col.from_cache,
        exemplars=exemplars,
    )
    res.notes.append(
        "Discovered clusters were chosen with the same sheet responses that are then tested, so "
        "their t, q and significant units are optimistic (circular). The held-out effect is "
        "split-half cross-validated; confirm a discovery on new stimuli with topo screen "
        "--stimuli."
    )
    return res


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "screen"


def run_screen(
    ctx: Any,
    stimuli: Path | None = None,
    against: Path | None = None,
    with_baseline: bool = False,
    discover: Path | None = None,
    known_dirs: Sequence[Path] = (),
    builtin_known: bool = True,
    opts: ScreenOptions | None = None,
    out_console: Any = None,
    control: bool | None = None,
) -> Path:
    """``topo screen``: check the input, run the screen on ``ctx``'s model, write the folder.

    ``control`` also screens the model's identity-adaptor control (categories, not discovery)
    and tests trained vs control per category on the unsmoothed maps; None: on for the shipped
    default, off otherwise.
    """

    from topocli.reporting.reader import read_manifest
    from topocli.reporting.results import ResultsFolder
    from topocli.stimuli.stimulus_set import load_stimulus_set

    t0 = time.perf_counter()
    opts = opts or ScreenOptions()
    opts.check()
    if discover is not None and stimuli is not None:
        raise TopoInputError("give --stimuli or --discover, not both")
    if discover is not None and (against is not None or with_baseline):
        raise TopoInputError("--against / --with-baseline apply to --stimuli, not --discover")
    pool = categories = baseline = None
    if discover is not None:
        pool = load_pool(discover, allow_outside=getattr(ctx, "allow_outside", False))
        if len(pool) < 2 * opts.min_size:
            raise TopoInputError(
                f"the pool has {len(pool)} stimuli: too few for two clusters of --min-size "
                f"{opts.min_size}",
                discover,
            )
        default_out = f"screen-discover-{_safe(Path(discover).name)}"
    else:
        allow_outside = getattr(ctx, "allow_outside", False)
        categories = (
            load_stimulus_set(stimuli, allow_outside=allow_outside)
            if stimuli
            else shipped_categories("text")
        )
        check_categories(categories)
        if len(categories.conditions) == 1 or with_baseline or against is not None:
            baseline = (
                load_stimulus_set(against, allow_outside=allow_outside)
                if against is not None
                else shipped_baseline(categories.modality, categories)
            )
            check_not_in_baseline(categories, baseline)
        default_out = f"screen-{_safe(Path(stimuli).name) if stimuli else 'categories'}"
    for folder in known_dirs:
        read_manifest(folder)  # a bad --known fails before the model runs
    out = Path(ctx.out) if ctx.out is not None else Path(default_out)
    timings: dict[str, float] = {}
    with ExitStack() as stack:
        rf = stack.enter_context(ResultsFolder(out, getattr(ctx, "overwrite", False)))
        model = ctx.load_model((pool if pool is not None else categories).modality)
        hint = "; pass --stimuli with categories of a modality it takes" if not stimuli else ""
        check_modality(model, pool if pool is not None else categories, hint)
        t1 = time.perf_counter()
        timings["load_model"] = t1 - t0
        known: list[KnownMap] = []
        for folder in known_dirs:
            known.extend(read_known_folder(folder, model, model.sheet, opts))
        notes: list[str] = []
        with ctx.progress() as progress:
            if builtin_known:
                maps, notes = builtin_known_maps(model, opts, progress=progress)
                known = maps + known
            known = unique_names(known)
            t2 = time.perf_counter()
            timings["known_localizers"] = t2 - t1
            if pool is not None:
                result = discover_screen(model, pool, opts, known, progress)
            else:
                result = screen(model, categories, baseline, opts, known, progress)
                if control is None:
                    from topocli.models.registry import is_shipped

                    control = is_shipped(ctx.model_spec)
                twin = identity_control(model) if control else None
                if twin is not None:
                    result.control = screen(twin, categories, baseline, opts, (), progress)
                    result.control_comparison = control_comparison(result, result.control)
        result.notes.extend(notes)
        t3 = time.perf_counter()
        timings["screen"] = t3 - t2
        inputs: dict[str, Any] = {
            "stimuli": str(stimuli) if stimuli else None,
            "against": str(against) if against else None,
            "discover": str(discover) if discover else None,
            "known": [str(k) for k in known_dirs] or None,
        }
        if categories is not None and not stimuli:
            inputs["stimuli"] = str(categories.root)
        if baseline is not None and against is None:
            inputs["against"] = str(baseline.root)
        # the manifest hashes what was read: a CSV manifest and every file it names
        hashed = {
            "stimuli": categories,
            "against": baseline,
            "discover": pool,
        }
        recorded = {
            k: ([str(p) for p in v.input_paths()] if v is not None else None)
            for k, v in hashed.items()
        }
        recorded["known"] = inputs["known"]
        params = {
            "model": ctx.model_spec,
            "stimuli": inputs["stimuli"],
            "against": inputs["against"],
            "discover": inputs["discover"],
            "known_folders": inputs["known"],
            "builtin_known": bool(builtin_known),
            "with_baseline": bool(with_baseline),
            "device": getattr(ctx, "device_name", None),
            "inputs": recorded,
            "timings_s": timings,
        }
        write_screen_results(rf, result, model, params)
        timings["write"] = time.perf_counter() - t3
    if not ctx.quiet and out_console is not None:
        print_summary(result, out_console)
        out_console.print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return out
