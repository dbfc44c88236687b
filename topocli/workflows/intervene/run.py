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

Read-outs and statistics
------------------------
- ``fidelity``: cosine between each stimulus's final representation under the intervention and
  unperturbed; effect = ``1 - cosine``;
- ``lm-loss``: mean next-token cross-entropy per stimulus (causal language models only); effect =
  loss increase;
- ``probe``: a classifier (logistic regression or nearest centroid, scikit-learn) trained on the
  unperturbed final representations of the even half of the stimuli, tested on the odd half;
  effect = accuracy drop; also the share of test stimuli predicted as the target category.

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
from topocli.workflows.intervene.targets import Selection, stimulation_units, top_units


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
) -> Plan:
    """Check every option and read the source folder; raise TopoInputError on bad input."""
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
    )


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
    else:
        units = top_units(t, dose)
        label = f"top {dose:g}% of {plan.contrast}"
    return Selection(units, np.ones(units.size), dose, None, label)


# ---------------------------------------------------------------------- 6. perturbed passes
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
) -> DoseResult:
    """The target and every control draw of one dose, evaluated in the same batched forwards.

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

    Returns
    -------
    DoseResult
    """
    values = perturbation_values(plan.mode, plan.strength, target, ref)
    # a steer control pushes along its own units' direction with the target's norm: the same
    # push, elsewhere
    norm = float(np.linalg.norm(values)) if plan.mode == "steer" else None
    sels = [target] + [c.selection for c in controls]
    vals = [values] + [
        perturbation_values(plan.mode, plan.strength, c.selection, ref, norm) for c in controls
    ]
    pset = PerturbationSet(model, [s.units for s in sels], vals, plan.mode in REPLACE_MODES)
    outcome = evaluate(model, prep, pset, base, probe, progress, f"dose {target.dose:g}")
    return DoseResult(target.dose, target, values, list(controls), outcome)


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
) -> Path:
    """``topo intervene``: perturb, measure, compare with controls, write a results folder."""
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
        prep = prepare_stimuli(model, stim_set, batch_size, plan.readouts)
        with ctx.progress() as progress:
            # 4. unperturbed pass (and the probe trained on it)
            base = run_baseline(model, prep, progress)
            probe, probe_base, perturbed_prep = _baseline_probe(
                plan, model, stim_set, design, base, prep, batch_size, ctx.seed
            )
            # 5. reference (ablation needs no reference numbers)
            ref = None
            if plan.mode != "ablate":
                ref, ref_notes = load_reference(
                    plan.source, model, stim_set, plan.weights, batch_size, progress
                )
                notes += ref_notes
            # 6. perturbed passes
            results = [
                perturb_dose(plan, model, perturbed_prep, target, ctrls, ref, base, probe, progress)
                for target, ctrls in zip(targets, control_sets)
            ]
        # 7. statistics
        driving = plan.mode in ("steer", "stimulate") and plan.strength > 0
        tables = result_tables(results, plan.readouts, base, probe_base, design, plan.mode, driving)
        # 8. write
        ref_desc = ref.source if ref is not None else "none needed (ablate sets units to 0)"
        write_results(
            rf,
            sheet,
            t,
            results,
            tables,
            plan.readouts,
            _summary(plan, model, design, results, len(stim_set), ref_desc, ctx.seed),
            notes,
            parameters=_parameters(plan, ctx, stimuli),
            inputs={
                "results": str(plan.source.root),
                "stimuli": [str(p) for p in _stim_paths(stim_set)],
            },
            seed=ctx.seed,
            extra=_manifest_extra(plan, model, design, results, ref_desc, notes),
            started=started,
        )
    _warn_notes(notes)
    if not ctx.quiet and out_console is not None:
        print_summary(tables.stats, out_console)
        out_console.print(f"wrote {out}")
    return out


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
) -> tuple[Any, np.ndarray | None, Prepared]:
    """The probe fitted on the even half, its unperturbed predictions, the stimuli to perturb
    (the odd half)."""
    # targets are selected on the even half, so only the odd half is perturbed and measured
    test = np.flatnonzero(design.split == 1)
    measured = prepare_stimuli(model, stim_set, batch_size, plan.readouts, test)
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
