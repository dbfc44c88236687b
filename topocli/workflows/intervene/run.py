"""``topo intervene``: perturb sheet units through hooks, with controls and behavioural read-outs.

A localize (or screen) results folder names the model, the sheet and the contrast's t-map; this
command reloads the model from its manifest, picks the target units (a cluster of ``clusters.csv``
or the top P% units of a contrast by t), perturbs them through the model's hook points and
measures what changes downstream. :func:`run_intervene` runs the steps in this order:

1. plan: every option checked and the ``--from`` folder read (:mod:`.source`) before the model
   loads (:func:`plan_intervention`);
2. targets: the units of each dose (:func:`select_target`, :mod:`.targets`);
3. controls: seeded random and distance-matched draws per dose (:mod:`.controls`);
4. unperturbed pass: final representations and LM losses, and the probe trained on them
   (:mod:`.readouts`);
5. reference: per-unit mean / direction / SD for mean, steer and stimulate (:mod:`.reference`);
6. perturbed passes: the target and every control draw of a dose in batched forwards
   (:func:`perturb_dose`, :mod:`.perturbations`, :mod:`.readouts`);
7. statistics: effects, permutation p and z against the controls (:mod:`.statistics`);
8. write: tables, report and manifest (:mod:`.report`).

Interventions (one hook API for all: :meth:`topocli.models.topo_model.HookPoint.add_edit`)
---------------------------------------------------------------------------
Every intervention is a set of sheet units and one value per unit:

- ``ablate``: the units' activation ``Z`` is set to 0 at every token;
- ``mean``: set to the unit's mean over a reference set (the stimuli's unperturbed mean from the
  results folder's ``stats.safetensors``; recomputed from an unperturbed pass through the
  activation pipeline when those statistics were smoothed or are missing);
- ``steer``: ``strength * (target-category mean - other-categories mean)`` is added to every
  token (the contrast's positive conditions against its negative ones; a screen's category
  against the rest); a negative strength suppresses;
- ``stimulate``: ``strength * sd_u * exp(-d^2 / (2 spread^2))`` is added to the units within
  ``3 * spread`` mm of the site (the cluster's peak unit), inside the site's area or over the
  contiguous sheet (``across_areas``); ``sd_u`` is the unit's SD over the reference set, so the
  amplitude is in SD units.

Dose: for ablate / mean / steer the percentage of units kept from the ranking by t (top P% of
the sheet for a contrast, of the cluster's units for a cluster); for stimulate the spread in mm.

Controls (on by default, seeded)
--------------------------------
- ``random``: the same number of units per area, drawn uniformly from the same area(s), disjoint
  from the target;
- ``distance-matched``: the target's shape translated within each area so that its centre lies at
  least the target's diameter (largest distance between two of its units, in mm) from the
  target's centre; near an edge, where no translation fits, the nearest units of the area around
  a far site (same count, its centre checked against the same rule).

A control of ablate / mean does the same operation on its own units; a steer control adds the
control units' own category-difference direction rescaled to the target's norm (the same push,
elsewhere); a stimulate control carries the Gaussian weights over (random: in draw order;
distance-matched: the translated shape) with the control units' own SD scale.

All perturbations of one dose (the target and every control draw) are evaluated together: the
prepared batch is repeated M times along the batch dimension and perturbation ``j`` edits rows
``j*B .. (j+1)*B``, so controls cost batched forwards, not Python loops.

What a dose costs (its floor: one forward of the measured stimuli per perturbation needed)
-------------------------------------------------------------------------------------------
- prefix reuse (``prefix_reuse``, on): the blocks up to the first perturbed area compute the
  same thing in every pass; the first pass of each batch records their raw outputs and later
  passes replay them (:class:`topocli.models.prefix.PrefixReuse`), so only the blocks after
  the first perturbed area run;
- sequential controls (``sequential_h``, default 10): each control kind's draws run in rounds,
  in draw order, and stop once every tested statistic has ``h`` draws reaching the target
  (Besag & Clifford 1991; ``p = h / L``, exact for the stopping rule; ``(1 + G) / (n + 1)``
  when all ``--n-controls`` draws were needed): a null target costs a fraction of the draws
  (:func:`topocli.workflows.intervene.statistics.expected_draws_null`);
- a draw identical to an earlier one (same units, same values) reuses its read-outs.
The manifest's ``extra.passes`` says how many perturbations ran, which blocks were replayed and
how long each step took.

Targets may also be a percentile band of the contrast's t (``percentile_band``, e.g. ``0-1``:
the least selective units, a control target).

Read-outs and statistics
------------------------
- ``fidelity``: cosine between each stimulus's final representation under the intervention and
  unperturbed; effect = ``1 - cosine``;
- ``lm-loss``: mean next-token cross-entropy per stimulus (causal language models only); effect =
  loss increase;
- ``probe``: a classifier (logistic regression or nearest centroid, scikit-learn) trained on the
  unperturbed final representations of the even half of the stimuli, tested on the odd half;
  effect = accuracy drop; also the share of test stimuli predicted as the target category;
- ``generation`` (causal LMs): greedy continuation of each stimulus (``generation_tokens``
  tokens); effect = degradation, the share of continuation tokens that differ from the
  unperturbed model's; also the loss of the unperturbed continuation under the intervention.

``stats.csv`` compares the target intervention's effect on the target condition(s) (and its
selectivity: effect on target minus effect on the other conditions) with each control
distribution: permutation ``p = (1 + #{control >= target}) / (n_controls + 1)`` and effect size
``z = (target - mean(controls)) / sd(controls)``; and, within the target intervention, per-stimulus
effects on target against other conditions (one-sided Welch t, Cohen's d). For the probe's
target bias the statistic is signed so that the expected direction is positive (driving: steer or
stimulate with strength > 0, more predictions of the target; otherwise fewer).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from topocli.errors import TopoInputError
from topocli.sheet import Sheet
from topocli.workflows.intervene.controls import (
    CONTROL_KINDS,
    DEFAULT_N_CONTROLS,
    Control,
    make_controls,
)
from topocli.workflows.intervene.perturbations import (
    MODES,
    REPLACE_MODES,
    PerturbationSet,
    perturbation_values,
)
from topocli.workflows.intervene.readouts import (
    CLASSIFIERS,
    READOUTS,
    Baseline,
    Prepared,
    check_readouts,
    evaluate,
    fit_probe,
    prepare_stimuli,
    run_baseline,
)
from topocli.workflows.intervene.reference import Reference, load_reference
from topocli.workflows.intervene.report import print_summary, result_tables, write_results
from topocli.workflows.intervene.source import (
    SourceResults,
    check_cluster,
    check_identity,
    cluster_members,
    contrast_weights,
    model_spec_from_manifest,
    read_source,
    resolve_contrast,
    source_stimuli,
)
from topocli.workflows.intervene.statistics import Design, DoseResult
from topocli.workflows.intervene.targets import (
    Selection,
    band_units,
    stimulation_units,
    top_units,
)

# stop a control kind once 10 draws reach the target on every statistic (Besag & Clifford):
# p is then resolved to within a relative SE of ~1 / sqrt(10)
DEFAULT_SEQUENTIAL_H = 10
# greedy tokens per prompt of the generation read-out
DEFAULT_GENERATION_TOKENS = 8


# ---------------------------------------------------------------------- 1. plan
def parse_list(text: str | None, allowed: Sequence[str], what: str) -> list[str]:
    """Comma-separated choices, each checked against ``allowed``; ``none`` gives an empty list."""
    if text is None:
        return []
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if items == ["none"]:
        return []
    bad = [t for t in items if t not in allowed]
    if bad:
        raise TopoInputError(f"unknown {what} {bad[0]!r}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_doses(
    text: str | float | Sequence[float] | None, mode: str, option: str = "--dose"
) -> list[float]:
    """Dose list from ``"1,5,10"``: percentages in (0, 100], or spreads in mm > 0 (stimulate)."""
    if text is None:
        return []
    if isinstance(text, (int, float)):
        items: list[Any] = [text]
    elif isinstance(text, str):
        items = [t.strip() for t in text.split(",") if t.strip()]
    else:
        items = list(text)
    if not items:
        raise TopoInputError("--dose is empty; give numbers such as 1,5,10")
    doses = []
    for item in items:
        try:
            d = float(item)
        except (TypeError, ValueError):
            raise TopoInputError(f"{option} must be numbers, got {item!r}") from None
        if mode == "stimulate":
            if not (math.isfinite(d) and d > 0):
                raise TopoInputError(f"{option} (spread in mm) must be > 0, got {item}")
        elif not (math.isfinite(d) and 0.0 < d <= 100.0):
            raise TopoInputError(f"{option} must lie in (0, 100] (percent of units), got {item}")
        doses.append(d)
    return list(dict.fromkeys(doses))


@dataclass
class Plan:
    """Validated options (everything checked before the model loads)."""

    source: SourceResults
    contrast: str
    cluster: int | None
    mode: str
    strength: float
    spread_mm: float
    across_areas: bool
    doses: list[float]
    readouts: list[str]
    controls: list[str]
    n_controls: int
    probe_classifier: str
    weights: dict[str, float]
    sequential_h: int | None = DEFAULT_SEQUENTIAL_H
    prefix_reuse: bool = True
    percentile_band: tuple[float, float] | None = None


def plan_intervention(
    from_dir: str | Path,
    cluster: int | None = None,
    contrast: str | None = None,
    top_percent: float | None = None,
    mode: str = "ablate",
    strength: float = 1.0,
    spread_mm: float = 2.0,
    across_areas: bool = False,
    dose: str | Sequence[float] | None = None,
    readout: str = "fidelity",
    controls: str = "random,distance-matched",
    n_controls: int = DEFAULT_N_CONTROLS,
    probe_classifier: str = "logistic",
    sequential_h: int | None = DEFAULT_SEQUENTIAL_H,
    percentile_band: str | tuple[float, float] | None = None,
    prefix_reuse: bool = True,
) -> Plan:
    """Check every option and read the source folder; raise TopoInputError on bad input.

    ``sequential_h``: stop drawing a control kind once ``h`` draws reach the target on every
    statistic (Besag & Clifford; None or 0: all ``n_controls`` draws). ``percentile_band``:
    ``"lo-hi"`` percentiles of the contrast's t (e.g. ``"0-1"``, the least selective units) as
    the target, instead of the top P%. ``prefix_reuse``: replay the unperturbed blocks before
    the first perturbed area (same statistics, less work).
    """
    if mode not in MODES:
        raise TopoInputError(f"unknown --mode {mode!r}; choose one of {', '.join(MODES)}")
    readouts = parse_list(readout, READOUTS, "--readout")
    if not readouts:
        raise TopoInputError(f"--readout needs at least one of {', '.join(READOUTS)}")
    kinds = parse_list(controls, CONTROL_KINDS, "--controls")
    if kinds and (int(n_controls) != n_controls or n_controls < 1):
        raise TopoInputError(f"--n-controls must be an integer >= 1, got {n_controls}")
    if kinds and 1.0 / (int(n_controls) + 1) >= 0.01:
        from topocli.errors import warn

        warn(
            f"with {int(n_controls)} controls per kind the smallest possible permutation p is "
            f"{1.0 / (int(n_controls) + 1):.3g}; pass --n-controls 100 (p >= 0.0099) or more"
        )
    if probe_classifier not in CLASSIFIERS:
        raise TopoInputError(
            f"unknown --probe-classifier {probe_classifier!r}; choose {', '.join(CLASSIFIERS)}"
        )
    if not math.isfinite(float(strength)):
        raise TopoInputError(f"--strength must be a finite number, got {strength}")
    if not (math.isfinite(float(spread_mm)) and spread_mm > 0):
        raise TopoInputError(f"--spread-mm must be > 0, got {spread_mm}")
    h = parse_sequential_h(sequential_h)
    band = parse_percentile_band(percentile_band)
    if band is not None:
        if cluster is not None or mode == "stimulate":
            raise TopoInputError(
                "--percentile-band selects units of --contrast by t; it does not go with "
                "--cluster or --mode stimulate"
            )
        if dose is not None or top_percent is not None:
            raise TopoInputError(
                "--percentile-band sets the units; give it without --dose / --top-percent"
            )
        dose = [band[1] - band[0]]
    if top_percent is not None and dose is not None:
        raise TopoInputError("--top-percent and --dose both set the coverage; give one of them")
    if top_percent is not None and mode == "stimulate":
        raise TopoInputError("--top-percent does not apply to stimulate (its dose is --spread-mm)")
    if top_percent is not None and cluster is not None:
        raise TopoInputError("--top-percent goes with --contrast; for a cluster use --dose")
    if dose is not None:
        doses = parse_doses(dose, mode)
    else:
        doses = parse_doses(top_percent, mode, "--top-percent")
    if not doses:
        doses = [spread_mm] if mode == "stimulate" else [100.0] if cluster is not None else [10.0]
    source = read_source(from_dir)
    name = resolve_contrast(source, contrast)
    if cluster is not None:
        check_cluster(source, name, int(cluster))
    weights = contrast_weights(source, name)
    if not any(w > 0 for w in weights.values()):
        raise TopoInputError(f"contrast {name!r} has no positive (target) condition")
    return Plan(
        source,
        name,
        None if cluster is None else int(cluster),
        mode,
        float(strength),
        float(spread_mm),
        bool(across_areas),
        doses,
        readouts,
        kinds,
        int(n_controls),
        probe_classifier,
        weights,
        h,
        bool(prefix_reuse),
        band,
    )


def parse_sequential_h(h: int | None) -> int | None:
    """``--sequential-h``: an integer >= 1, or None / 0 for no early stop."""
    if h is None or (not isinstance(h, bool) and h == 0):
        return None
    if isinstance(h, bool) or int(h) != h or h < 1:
        raise TopoInputError(
            f"--sequential-h must be an integer >= 1 (or 0: draw all controls), got {h}"
        )
    return int(h)


def parse_percentile_band(
    text: str | tuple[float, float] | Sequence[float] | None,
) -> tuple[float, float] | None:
    """``--percentile-band lo-hi`` (percentiles of t, 0 <= lo < hi <= 100), or None."""
    if text is None:
        return None
    if isinstance(text, str):
        parts = text.strip().split("-")
        if len(parts) != 2:
            raise TopoInputError(
                f"--percentile-band must be LO-HI percentiles such as 0-1, got {text!r}"
            )
    else:
        parts = list(text)
    try:
        lo, hi = (float(x) for x in parts)
    except (TypeError, ValueError):
        raise TopoInputError(
            f"--percentile-band must be LO-HI percentiles such as 0-1, got {text!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi <= 100.0):
        raise TopoInputError(
            f"--percentile-band needs 0 <= LO < HI <= 100 (percentiles of t), got {text!r}"
        )
    return lo, hi


def design_of(stim_set: Any, plan: Plan) -> Design:
    """The stimuli's conditions and splits, and which are the contrast's target and others."""
    conditions = list(stim_set.conditions)
    targets = [c for c, w in plan.weights.items() if w > 0]
    missing = [c for c in targets if c not in conditions]
    if missing:
        raise TopoInputError(
            f"the stimuli have no condition {missing[0]!r} (the contrast's target); they have "
            f"{', '.join(conditions)}",
            stim_set.root,
        )
    # selectivity: the effect on the target against every other condition the stimuli hold,
    # not only the contrast's negative side
    others = [c for c in conditions if c not in targets]
    return Design(conditions, stim_set.condition_index(), stim_set.split_index(), targets, others)


# ---------------------------------------------------------------------- 2. targets
def selection_t(plan: Plan, n_units: int) -> tuple[np.ndarray, str | None]:
    """The contrast's t map that targets are selected on, and a note when it is circular.

    From the results folder's per-(condition, split) statistics: the t of the even half only,
    so the selection never sees the odd half that the effects are measured on (the folder's own
    smoothing and pooling are in those statistics). A folder without usable statistics gives
    its t map of all stimuli, and the note says that selection and measurement then overlap.
    """
    from topocli.stats.contrasts import contrast_t, weights_vector
    from topocli.stats.maps import split_moments
    from topocli.stats.suffstats import SufficientStats

    results = plan.source.results
    conditions = plan.source.conditions
    usable = results.has("stats.safetensors")
    if usable:
        results.verify(["stats.safetensors"])
        stats = SufficientStats.load(results.path("stats.safetensors"))
        usable = stats.n_units == n_units and stats.n_groups == 2 * len(conditions) > 0
    if usable and all(c in conditions for c in plan.weights):
        n, mean, var = split_moments(stats)
        w = weights_vector(plan.weights, conditions)
        return contrast_t(w, n[:, 0], mean[:, 0], var[:, 0], "greater").t, None
    note = (
        "the results folder has no per-split statistics for this contrast: targets were "
        "selected on its t map of all stimuli, so selection and measurement (odd half) overlap"
    )
    return plan.source.t_map(plan.contrast, n_units), note


def select_target(plan: Plan, sheet: Sheet, t: np.ndarray, dose: float) -> Selection:
    """The target units of one dose."""
    if plan.mode == "stimulate":
        if plan.cluster is not None:
            _, site = cluster_members(plan.source, plan.contrast, plan.cluster)
        else:
            if not np.isfinite(t).any():
                raise TopoInputError("the contrast has no unit with a finite t to pick from")
            site = int(np.nanargmax(t))
        units, weights = stimulation_units(sheet, site, dose, plan.across_areas)
        return Selection(units, weights, dose, site, f"site unit {site}, spread {dose:g} mm")
    if plan.cluster is not None:
        members, _ = cluster_members(plan.source, plan.contrast, plan.cluster)
        units = members[: max(1, int(math.ceil(dose * members.size / 100.0 - 1e-9)))]
        label = f"cluster {plan.cluster}" + (f", top {dose:g}%" if dose < 100 else "")
    elif plan.percentile_band is not None:
        lo, hi = plan.percentile_band
        units = band_units(t, lo, hi)
        label = f"percentile band {lo:g}-{hi:g} of {plan.contrast} (t)"
    else:
        units = top_units(t, dose)
        label = f"top {dose:g}% of {plan.contrast}"
    return Selection(units, np.ones(units.size), dose, None, label)


# ---------------------------------------------------------------------- 6. perturbed passes
@dataclass
class PassCount:
    """What the perturbed passes of one dose cost: perturbations run, draws used and saved."""

    evaluated: int = 0
    drawn: int = 0
    duplicates: int = 0
    draws_used: dict[str, int] | None = None
    draws_max: int = 0
    overdrawn: int = 0
    prefix_blocks: list[str] | None = None
    prefix_note: str | None = None


def _round_size(model: Any, prep: Prepared) -> int:
    """Perturbations per round of the sequential test: what one batched forward holds."""
    from topocli.workflows.intervene.readouts import rows_per_forward

    return max(1, min(rows_per_forward(model, b, prep) for b in prep.batches))


def perturb_dose(
    plan: Plan,
    model: Any,
    prep: Prepared,
    target: Selection,
    controls: Sequence[Control],
    ref: Reference | None,
    base: Baseline,
    probe: Any = None,
    progress: Any = None,
    probe_base: np.ndarray | None = None,
    design: Design | None = None,
) -> tuple[DoseResult, PassCount]:
    """The target and the control draws of one dose, evaluated in batched forwards.

    Each distinct perturbation runs once (a draw identical to an earlier one reuses its
    read-outs); blocks up to the first edited area replay the unperturbed pass
    (:class:`topocli.models.prefix.PrefixReuse`, when ``plan.prefix_reuse``). With
    ``plan.sequential_h`` the draws of each control kind run in rounds, in draw order, until
    every statistic of ``stats.csv`` has ``h`` draws reaching the target (Besag & Clifford) or
    all ``plan.n_controls`` are drawn; the kind keeps its draws up to the last stopping point,
    so the result does not depend on the round size.

    Parameters
    ----------
    plan : Plan
    model : TopoModel
    prep : Prepared
        The prepared stimuli (all, or the probe's test half).
    target : Selection
    controls : sequence of Control
    ref : Reference or None
        Per-unit reference numbers (None for ablate).
    base : Baseline
        The unperturbed read-outs.
    probe : fitted classifier, optional
    progress : rich Progress, optional
    probe_base : ndarray, optional
        The probe's unperturbed predictions (needed by the sequential test with ``probe``).
    design : Design, optional
        Needed by the sequential test.

    Returns
    -------
    DoseResult, PassCount
    """
    from topocli.models.prefix import PrefixReuse
    from topocli.workflows.intervene.controls import perturbation_key
    from topocli.workflows.intervene.readouts import new_outcome

    values = perturbation_values(plan.mode, plan.strength, target, ref)
    # a steer control pushes along its own units' direction with the target's norm: the same
    # push, elsewhere
    norm = float(np.linalg.norm(values)) if plan.mode == "steer" else None
    controls = list(controls)
    sels = [target] + [c.selection for c in controls]
    vals = [values] + [
        perturbation_values(plan.mode, plan.strength, c.selection, ref, norm) for c in controls
    ]
    pset = PerturbationSet(model, [s.units for s in sels], vals, plan.mode in REPLACE_MODES)
    reuse = PrefixReuse(model, pset.edited_areas) if plan.prefix_reuse else None
    out = new_outcome(pset.n, prep, base, probe)
    keys = [perturbation_key(s.units, v) for s, v in zip(sels, vals)]
    first_of: dict[bytes, int] = {}
    count = PassCount(draws_max=plan.n_controls, drawn=pset.n)
    label = f"dose {target.dose:g}"

    def run_rows(rows: list[int]) -> None:
        """Evaluate ``rows``: each new perturbation once, duplicates copied from the first."""
        new, aliases = [], []
        for j in rows:
            if keys[j] in first_of:
                aliases.append(j)
            else:
                first_of[keys[j]] = j
                new.append(j)
        if new:
            evaluate(model, prep, pset, base, probe, progress, label, new, out, reuse)
        for j in aliases:
            _copy_row(out, first_of[keys[j]], j)
        count.evaluated += len(new)
        count.duplicates += len(aliases)

    kinds = list(dict.fromkeys(c.kind for c in controls))
    rows_of = {k: [1 + i for i, c in enumerate(controls) if c.kind == k] for k in kinds}
    h = plan.sequential_h
    if h is None or h > plan.n_controls or design is None:
        run_rows(list(range(pset.n)))
        used = {k: len(r) for k, r in rows_of.items()}
    else:
        used = _sequential_rounds(
            plan,
            rows_of,
            run_rows,
            out,
            base,
            probe_base,
            design,
            _round_size(model, prep),
            first_of,
            keys,
        )
        count.overdrawn = sum(
            1
            for k, r in rows_of.items()
            for j in r[used[k] :]
            if keys[j] in first_of and first_of[keys[j]] == j
        )
    keep = [0] + [j for k in kinds for j in rows_of[k][: used[k]]]
    kept = [controls[j - 1] for j in keep[1:]]
    count.draws_used = used
    if reuse is not None:
        count.prefix_blocks = [model.blocks[k].name for k in reuse.skipped_blocks]
        count.prefix_note = reuse.reason if not reuse.skipped_blocks else None
    outcome = _subset_rows(out, np.asarray(keep))
    return DoseResult(target.dose, target, values, kept, outcome), count


def _sequential_rounds(
    plan: Plan,
    rows_of: dict[str, list[int]],
    run_rows: Any,
    out: Any,
    base: Baseline,
    probe_base: np.ndarray | None,
    design: Design,
    round_size: int,
    first_of: dict[bytes, int],
    keys: Sequence[bytes],
) -> dict[str, int]:
    """Run the draws of each kind in rounds until its statistics stop; the draws used per kind."""
    from topocli.workflows.intervene.statistics import control_statistics, sequential_stop

    h = int(plan.sequential_h)
    driving = plan.mode in ("steer", "stimulate") and plan.strength > 0
    done = {k: len(r) == 0 for k, r in rows_of.items()}
    used = {k: 0 for k in rows_of}
    drawn = {k: 0 for k in rows_of}
    pending = [0]  # the target runs in the first round
    while True:
        active = [k for k in rows_of if not done[k]]
        # fill the round with draws that need a forward; duplicates ride along for free
        share = max(1, (round_size - len(pending)) // max(1, len(active)))
        for k in active:
            fresh = 0
            while drawn[k] < len(rows_of[k]) and fresh < share:
                j = rows_of[k][drawn[k]]
                pending.append(j)
                drawn[k] += 1
                fresh += keys[j] not in first_of and all(keys[j] != keys[i] for i in pending[:-1])
        if pending:
            run_rows(pending)
            pending = []
        if not active:
            break
        stats = control_statistics(out, plan.readouts, base, probe_base, design, driving)
        for k in active:
            rows = rows_of[k][: drawn[k]]
            stops = [sequential_stop(float(v[0]), v[rows], h) for v in stats.values()]
            if all(s is not None for s in stops):
                done[k], used[k] = True, max(stops)
            elif drawn[k] == len(rows_of[k]):
                done[k], used[k] = True, len(rows_of[k])
        if all(done.values()):
            break
    return used


def _copy_row(out: Any, src: int, dst: int) -> None:
    for name in ("cosine", "loss", "predicted", "agreement", "continuation_loss"):
        arr = getattr(out, name, None)
        if arr is not None:
            arr[dst] = arr[src]


def _subset_rows(out: Any, rows: np.ndarray) -> Any:
    from dataclasses import fields, replace

    return replace(
        out,
        **{
            f.name: getattr(out, f.name)[rows]
            for f in fields(out)
            if getattr(out, f.name) is not None
        },
    )


# ---------------------------------------------------------------------- the command
def run_intervene(
    ctx: Any,
    from_dir: Path,
    cluster: int | None = None,
    contrast: str | None = None,
    top_percent: float | None = None,
    mode: str = "ablate",
    strength: float = 1.0,
    spread_mm: float = 2.0,
    across_areas: bool = False,
    dose: str | None = None,
    readout: str = "fidelity",
    stimuli: Path | None = None,
    controls: str = "random,distance-matched",
    n_controls: int = DEFAULT_N_CONTROLS,
    probe_classifier: str = "logistic",
    out_console: Any = None,
    sequential_h: int | None = DEFAULT_SEQUENTIAL_H,
    percentile_band: str | None = None,
    prefix_reuse: bool = True,
    generation_tokens: int = DEFAULT_GENERATION_TOKENS,
) -> Path:
    """``topo intervene``: perturb, measure, compare with controls, write a results folder.

    ``sequential_h``, ``percentile_band`` and ``prefix_reuse``: see :func:`plan_intervention`;
    ``generation_tokens``: greedy tokens per prompt of the ``generation`` read-out.
    """
    from topocli.reporting.results import ResultsFolder
    from topocli.stimuli.stimulus_set import load_stimulus_set

    started = time.perf_counter()
    # 1. plan: bad options and an unusable --from folder fail before the model loads
    plan = plan_intervention(
        from_dir,
        cluster,
        contrast,
        top_percent,
        mode,
        strength,
        spread_mm,
        across_areas,
        dose,
        readout,
        controls,
        n_controls,
        probe_classifier,
        sequential_h,
        percentile_band,
        prefix_reuse,
    )
    if "generation" in plan.readouts and (
        int(generation_tokens) != generation_tokens or generation_tokens < 1
    ):
        raise TopoInputError(
            f"--generation-tokens must be an integer >= 1, got {generation_tokens}"
        )
    notes: list[str] = []
    if stimuli is not None:
        stim_set = load_stimulus_set(stimuli, allow_outside=getattr(ctx, "allow_outside", False))
    else:
        stim_set, stim_notes = source_stimuli(
            plan.source, allow_outside=getattr(ctx, "allow_outside", False)
        )
        notes += stim_notes
    design = design_of(stim_set, plan)
    given_spec = ctx.model_spec
    if not given_spec:  # reload the model the folder was made with
        ctx.model_spec = model_spec_from_manifest(plan.source.manifest)
    out = Path(ctx.out) if ctx.out is not None else Path(f"intervene-{plan.mode}")
    batch_size = int(ctx.batch_size)
    with ResultsFolder(out, getattr(ctx, "overwrite", False)) as rf:
        model = ctx.load_model()
        check_identity(plan.source, model, given_spec)
        check_readouts(model, plan.readouts, stim_set.modality, len(design.conditions))
        sheet = model.sheet
        # 2. targets, selected on the even half of the stimuli (measured on the odd half)
        t, circular = selection_t(plan, sheet.n_units)
        notes += [circular] if circular else []
        targets = [select_target(plan, sheet, t, d) for d in plan.doses]
        if plan.cluster is not None:
            notes.append(
                f"cluster {plan.cluster} was defined by the results folder on all its stimuli; "
                "its effects are measured on the odd half only, but the selection is not "
                "independent of them: confirm with --contrast (selected on the even half)"
            )
        # 3. controls
        control_sets = []
        for i, target in enumerate(targets):
            found, control_notes = make_controls(
                sheet, target, plan.controls, plan.n_controls, ctx.seed, i
            )
            control_sets.append(found)
            notes += control_notes
        model.eval()
        timing: dict[str, float] = {}
        clock = time.perf_counter()
        prep = prepare_stimuli(
            model, stim_set, batch_size, plan.readouts, generation_tokens=generation_tokens
        )
        with ctx.progress() as progress:
            # 4. unperturbed pass (and the probe trained on it)
            base = run_baseline(model, prep, progress)
            probe, probe_base, perturbed_prep = _baseline_probe(
                plan,
                model,
                stim_set,
                design,
                base,
                prep,
                batch_size,
                ctx.seed,
                generation_tokens,
            )
            timing["unperturbed_and_probe_s"] = time.perf_counter() - clock
            # 5. reference (ablation needs no reference numbers)
            ref = None
            if plan.mode != "ablate":
                ref, ref_notes = load_reference(
                    plan.source, model, stim_set, plan.weights, batch_size, progress
                )
                notes += ref_notes
            # 6. perturbed passes
            clock, cpu = time.perf_counter(), time.process_time()
            results, counts = [], []
            for target, ctrls in zip(targets, control_sets):
                res, count = perturb_dose(
                    plan,
                    model,
                    perturbed_prep,
                    target,
                    ctrls,
                    ref,
                    base,
                    probe,
                    progress,
                    probe_base,
                    design,
                )
                results.append(res)
                counts.append(count)
            timing["perturbed_passes_s"] = time.perf_counter() - clock
            # CPU seconds of this process: the figure to compare on a shared machine
            timing["perturbed_passes_cpu_s"] = time.process_time() - cpu
        # 7. statistics
        clock = time.perf_counter()
        driving = plan.mode in ("steer", "stimulate") and plan.strength > 0
        tables = result_tables(results, plan.readouts, base, probe_base, design, plan.mode, driving)
        tables.stats = sequential_stats(tables.stats, results, plan, base, probe_base, design)
        timing["statistics_s"] = time.perf_counter() - clock
        notes += [
            f"dose {r.dose:g}: {c.prefix_note}; the full forward ran"
            for r, c in zip(results, counts)
            if c.prefix_note and plan.prefix_reuse
        ]
        # 8. write
        ref_desc = ref.source if ref is not None else "none needed (ablate sets units to 0)"
        write_results(
            rf,
            sheet,
            t,
            results,
            tables,
            list(plan.readouts),
            _summary(plan, model, design, results, len(stim_set), ref_desc, ctx.seed),
            notes,
            parameters=_parameters(plan, ctx, stimuli),
            inputs={
                "results": str(plan.source.root),
                "stimuli": [str(p) for p in _stim_paths(stim_set)],
            },
            seed=ctx.seed,
            extra={
                **_manifest_extra(plan, model, design, results, ref_desc, notes),
                "passes": _passes_extra(plan, results, counts, timing),
            },
            started=started,
        )
    _warn_notes(notes)
    if not ctx.quiet and out_console is not None:
        print_summary(tables.stats, out_console)
        out_console.print(f"wrote {out}")
    return out


def sequential_stats(
    stats: Any,
    results: Sequence[DoseResult],
    plan: Plan,
    base: Baseline,
    probe_base: np.ndarray | None,
    design: Design,
) -> Any:
    """``stats.csv`` with the sequential (Besag & Clifford) p where the test stopped early.

    Adds ``p_method`` and ``n_controls_max``; with no early stop (``--sequential-h 0``) the p
    is the ordinary permutation p and ``p_method`` says so.
    """
    from topocli.workflows.intervene.statistics import control_statistics, sequential_p

    h = plan.sequential_h if plan.sequential_h and plan.sequential_h <= plan.n_controls else None
    stats = stats.copy()
    stats["p_method"] = "none" if not plan.controls else "permutation"
    stats["n_controls_max"] = plan.n_controls if plan.controls else 0
    if h is None or stats.empty:
        return stats
    driving = plan.mode in ("steer", "stimulate") and plan.strength > 0
    p_col = stats["p_permutation"].to_numpy(dtype=np.float64).copy()
    method = stats["p_method"].to_numpy(dtype=object).copy()
    for res in results:
        values = control_statistics(res.outcome, plan.readouts, base, probe_base, design, driving)
        kinds = np.array([c.kind for c in res.controls])
        for i in np.flatnonzero((stats["dose"] == res.dose).to_numpy()):
            row = stats.iloc[i]
            if row["control"] == "none":
                continue
            v = values[(row["readout"], row["statistic"])]
            p_col[i] = sequential_p(float(v[0]), v[1:][kinds == row["control"]], h)
            method[i] = f"sequential (Besag-Clifford, h={h})"
    stats["p_permutation"] = p_col
    stats["p_method"] = method
    return stats


def _passes_extra(
    plan: Plan, results: Sequence[DoseResult], counts: Sequence[Any], timing: dict[str, float]
) -> dict[str, Any]:
    """The manifest's account of the perturbed passes: how many, what was saved, how long."""
    from topocli.workflows.intervene.statistics import expected_draws_null

    h = plan.sequential_h if plan.sequential_h and plan.sequential_h <= plan.n_controls else None
    per_dose = {}
    for r, c in zip(results, counts):
        per_dose[f"{r.dose:g}"] = {
            "perturbations_evaluated": c.evaluated,
            "duplicate_draws_reused": c.duplicates,
            "draws_used": c.draws_used,
            "draws_evaluated_past_the_stop": c.overdrawn,
            "prefix_replayed_blocks": c.prefix_blocks or [],
        }
    return {
        "perturbations_evaluated": int(sum(c.evaluated for c in counts)),
        # the target and every control draw made (kinds that found no control draw none)
        "perturbations_drawn": int(sum(c.drawn for c in counts)),
        "sequential_h": h,
        "expected_draws_per_kind_under_null_one_statistic": (
            expected_draws_null(h, plan.n_controls) if h else plan.n_controls
        ),
        "prefix_reuse": plan.prefix_reuse,
        "per_dose": per_dose,
        "seconds": {k: round(v, 4) for k, v in timing.items()},
    }


def _warn_notes(notes: Sequence[str]) -> None:
    """Dropped controls, circular selections and changed stimuli: said in the terminal too."""
    from topocli.errors import warn

    for note in dict.fromkeys(notes):
        warn(note)


def _baseline_probe(
    plan: Plan,
    model: Any,
    stim_set: Any,
    design: Design,
    base: Baseline,
    prep: Prepared,
    batch_size: int,
    seed: int,
    generation_tokens: int = 0,
) -> tuple[Any, np.ndarray | None, Prepared]:
    """The probe fitted on the even half, its unperturbed predictions, the stimuli to perturb
    (the odd half)."""
    # targets are selected on the even half, so only the odd half is perturbed and measured
    test = np.flatnonzero(design.split == 1)
    measured = prepare_stimuli(
        model, stim_set, batch_size, plan.readouts, test, generation_tokens=generation_tokens
    )
    measured.continuation = base.continuation
    if "probe" not in plan.readouts:
        return None, None, measured
    train = design.split == 0
    probe = fit_probe(base.final[train], design.condition_index[train], plan.probe_classifier, seed)
    return probe, probe.predict(base.final), measured


def _target_description(plan: Plan) -> str:
    desc = (
        f"cluster {plan.cluster} of {plan.contrast}"
        if plan.cluster is not None
        else f"top units of {plan.contrast}"
    )
    return f"a site of {desc} (stimulation)" if plan.mode == "stimulate" else desc


def _summary(
    plan: Plan,
    model: Any,
    design: Design,
    results: Sequence[DoseResult],
    n_stimuli: int,
    ref_desc: str,
    seed: int,
) -> dict[str, Any]:
    """The report's key values."""
    from topocli.models.checkpoint import model_identity
    from topocli.reporting.reader import describe_identity

    return {
        "results folder": str(plan.source.root),
        "model": describe_identity(model_identity(model)),
        "mode": plan.mode,
        "target": _target_description(plan),
        "target conditions": ", ".join(design.targets),
        "other conditions": ", ".join(design.others),
        "doses": ", ".join(f"{d:g}" for d in plan.doses),
        "units per dose": ", ".join(str(r.target.units.size) for r in results),
        "strength": plan.strength,
        "readouts": ", ".join(plan.readouts),
        "controls": ", ".join(plan.controls) or "none",
        "control draws per kind": plan.n_controls if plan.controls else 0,
        "stimuli": n_stimuli,
        "reference": ref_desc,
        "seed": seed,
    }


def _parameters(plan: Plan, ctx: Any, stimuli: Path | None) -> dict[str, Any]:
    """The manifest's parameters: the options as planned, and how the model ran."""
    return {
        "from": str(plan.source.root),
        "model": ctx.model_spec,
        "contrast": plan.contrast,
        "cluster": plan.cluster,
        "mode": plan.mode,
        "strength": plan.strength,
        "spread_mm": plan.spread_mm,
        "across_areas": plan.across_areas,
        "doses": plan.doses,
        "readouts": plan.readouts,
        "controls": plan.controls,
        "n_controls": plan.n_controls,
        "probe_classifier": plan.probe_classifier,
        "sequential_h": plan.sequential_h,
        "percentile_band": list(plan.percentile_band) if plan.percentile_band else None,
        "prefix_reuse": plan.prefix_reuse,
        "stimuli": str(stimuli) if stimuli is not None else None,
        "device": getattr(ctx, "device_name", None),
        "dtype": getattr(ctx, "dtype_name", None),
        "batch_size": int(ctx.batch_size),
    }


def _manifest_extra(
    plan: Plan,
    model: Any,
    design: Design,
    results: Sequence[DoseResult],
    ref_desc: str,
    notes: Sequence[str],
) -> dict[str, Any]:
    """The manifest's ``extra``: model identity, source folder, conditions, reference, notes."""
    from topocli.models.checkpoint import model_identity

    return {
        "model": model_identity(model),
        "source": {
            "command": plan.source.command,
            "path": str(plan.source.root),
            "created": plan.source.manifest.get("created"),
        },
        "contrast_weights": plan.weights,
        "target_conditions": design.targets,
        "other_conditions": design.others,
        "units_per_dose": {f"{r.dose:g}": int(r.target.units.size) for r in results},
        "reference": ref_desc,
        "notes": list(notes),
    }


def _stim_paths(stim_set: Any) -> list[Path]:
    root = Path(stim_set.root)
    if root.is_file():
        return [root]
    parents = [s.path.parent for s in stim_set.stimuli if s.path is not None]
    return list(dict.fromkeys(parents)) or [root]
