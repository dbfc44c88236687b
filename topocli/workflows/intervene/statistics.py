"""Statistics of an intervention: effects per stimulus, permutation p, z against the controls.

``stats.csv`` compares the target intervention's effect on the target condition(s) (and its
selectivity: effect on target minus effect on the other conditions) with each control
distribution: permutation ``p = (1 + #{control >= target}) / (n_controls + 1)``, or with the
sequential test (Besag & Clifford 1991) ``p = h / L`` when the ``h``-th draw reaching the target
came at draw ``L`` (:func:`sequential_p`), and effect size
``z = (target - mean(controls)) / sd(controls)``; and, within the target intervention,
per-stimulus effects on target against other conditions (one-sided Welch t, Cohen's d).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from topocli.workflows.intervene.controls import Control
from topocli.workflows.intervene.readouts import Baseline, Outcome
from topocli.workflows.intervene.targets import Selection


def permutation_p(target: float, controls: Sequence[float]) -> float:
    """``(1 + #{control >= target}) / (n + 1)``; NaN controls are left out; NaN without any."""
    c = np.asarray(controls, dtype=np.float64)
    c = c[np.isfinite(c)]
    if not np.isfinite(target) or c.size == 0:
        return float("nan")
    return float((1 + np.count_nonzero(c >= target)) / (c.size + 1))


def sequential_stop(target: float, controls: Sequence[float], h: int | None) -> int | None:
    """The draw (1-based, in order) at which the ``h``-th control reaching ``target`` came.

    NaN controls never reach the target. None when fewer than ``h`` reach it (or ``h`` is None:
    no early stop); 0 when the target is NaN (nothing to test: resolved at once).
    """
    if not np.isfinite(target):
        return 0
    if h is None:
        return None
    c = np.asarray(controls, dtype=np.float64)
    hits = np.flatnonzero(np.isfinite(c) & (c >= target))
    return int(hits[h - 1] + 1) if hits.size >= h else None


def sequential_p(target: float, controls: Sequence[float], h: int | None) -> float:
    """Besag & Clifford (1991) sequential Monte Carlo p of ``target`` against ``controls``.

    Controls are read in draw order (NaN ones left out); drawing stops at the ``L``-th draw,
    when ``h`` of them have reached the target: ``p = h / L``. When fewer than ``h`` reach it
    among all ``n`` draws given (the maximum), ``p = (1 + G) / (n + 1)`` with ``G`` the number
    that reach it: the ordinary permutation p. Under the null (target exchangeable with the
    controls) ``P(p <= a) <= a`` for every ``a``: the p is exact for the stopping rule.
    ``h`` None is the ordinary permutation p.
    """
    c = np.asarray(controls, dtype=np.float64)
    c = c[np.isfinite(c)]
    stop = sequential_stop(target, c, h)
    if stop == 0 or c.size == 0:
        return float("nan")
    if stop is not None:
        return float(h / stop)
    return permutation_p(target, c)


def expected_draws_null(h: int, n_max: int) -> float:
    """Expected number of control draws of the sequential test under the null.

    The target's rank among ``n_max + 1`` exchangeable continuous values is uniform; given
    ``G`` of the ``n_max`` controls above it (``G`` uniform on 0..n_max), the ``h``-th of them
    comes at draw ``L`` with ``E[L] = h (n_max + 1) / (G + 1)`` (order statistics of a random
    subset), and all ``n_max`` draws are made when ``G < h``.
    """
    g = np.arange(n_max + 1, dtype=np.float64)
    draws = np.where(g >= h, h * (n_max + 1) / (g + 1), float(n_max))
    return float(draws.mean())


def control_statistics(
    outcome: Outcome,
    readouts: Sequence[str],
    base: Baseline,
    probe_base: np.ndarray | None,
    design: Design,
    driving: bool,
) -> dict[tuple[str, str], np.ndarray]:
    """The statistics that ``stats.csv`` tests, per perturbation [M] (row 0: the target).

    Keys ``(readout, statistic)``: ``target_effect`` (mean effect on the target conditions),
    ``selectivity`` (that minus the mean effect on the other conditions) and, for the probe,
    ``target_bias``: the same numbers :func:`topocli.workflows.intervene.report.stats_table`
    tests, so that the sequential stopping rule looks at what is reported.
    """
    out: dict[tuple[str, str], np.ndarray] = {}
    for readout in readouts:
        eff, used = per_stimulus_effects(readout, outcome, base, probe_base, design)
        mask = np.zeros(design.split.size, dtype=bool)
        mask[used] = True
        target_eff = mean_over(eff, design.rows_of(design.targets, mask))
        other_eff = mean_over(eff, design.rows_of(design.others, mask))
        out[(readout, "target_effect")] = target_eff
        out[(readout, "selectivity")] = target_eff - other_eff
        if readout == "probe":
            out[(readout, "target_bias")] = target_bias(outcome, probe_base, design, driving)
    return out


def effect_size_z(target: float, controls: Sequence[float]) -> float:
    """``(target - mean) / sd`` of the control distribution (ddof 1); NaN if undefined."""
    c = np.asarray(controls, dtype=np.float64)
    c = c[np.isfinite(c)]
    if c.size < 2 or not np.isfinite(target):
        return float("nan")
    sd = c.std(ddof=1)
    return float((target - c.mean()) / sd) if sd > 0 else float("nan")


def welch_greater(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """One-sided Welch t (a > b), its p and Cohen's d (pooled SD); NaN when undefined."""
    from scipy import stats as sps

    a = a[np.isfinite(a)]
    b = b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return float("nan"), float("nan"), float("nan")
    va, vb = a.var(ddof=1), b.var(ddof=1)
    if va == 0 and vb == 0:
        return float("nan"), float("nan"), float("nan")
    res = sps.ttest_ind(a, b, equal_var=False, alternative="greater")
    pooled = ((a.size - 1) * va + (b.size - 1) * vb) / (a.size + b.size - 2)
    d = (a.mean() - b.mean()) / math.sqrt(pooled) if pooled > 0 else float("nan")
    return float(res.statistic), float(res.pvalue), float(d)


@dataclass
class Design:
    """Stimulus-level facts the statistics need."""

    conditions: list[str]
    condition_index: np.ndarray
    split: np.ndarray
    targets: list[str]
    others: list[str]

    def rows_of(self, names: Sequence[str], among: np.ndarray | None = None) -> np.ndarray:
        ids = [self.conditions.index(c) for c in names if c in self.conditions]
        sel = np.isin(self.condition_index, ids)
        if among is not None:
            sel &= among
        return np.flatnonzero(sel)


@dataclass
class DoseResult:
    """One dose: the target selection, its controls and the per-stimulus read-outs."""

    dose: float
    target: Selection
    values: np.ndarray
    controls: list[Control]
    outcome: Outcome
    notes: list[str] = field(default_factory=list)


def per_stimulus_effects(
    readout: str, outcome: Outcome, base: Baseline, probe_base: np.ndarray | None, design: Design
) -> tuple[np.ndarray, np.ndarray]:
    """Effect per (perturbation, stimulus) [M, N] (NaN where not measured) and the rows used:
    the odd half (the targets were selected on the even half)."""
    test = np.flatnonzero(design.split == 1)
    if readout == "fidelity":
        return 1.0 - outcome.cosine, test
    if readout == "lm-loss":
        return outcome.loss - base.loss[None, :], test
    if readout == "generation":
        # degradation: the share of greedy tokens that differ from the unperturbed continuation
        return 1.0 - outcome.agreement, test
    truth = design.condition_index
    eff = np.full(outcome.predicted.shape, np.nan)
    correct0 = (probe_base == truth).astype(np.float64)
    correct = (outcome.predicted[:, test] == truth[test]).astype(np.float64)
    eff[:, test] = correct0[None, test] - correct
    return eff, test


def mean_over(eff: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean effect per perturbation over ``rows`` of [M, N] (NaN cells left out)."""
    if rows.size == 0:
        return np.full(eff.shape[0], np.nan)
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        return np.nanmean(eff[:, rows], axis=1)


@contextmanager
def _quiet_nanmean() -> Iterator[None]:
    # an all-NaN row (a perturbation measured on no stimulus of the group) is a NaN mean, not a
    # warning on the terminal
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        yield


def readout_values(
    readout: str,
    outcome: Outcome | None,
    base: Baseline,
    probe_base: np.ndarray | None,
    design: Design,
    m: int,
) -> list[tuple[str, str, np.ndarray, float]]:
    """(condition, readout name, value per perturbation [M], unperturbed value) rows."""
    out = []
    groups = [(c, design.rows_of([c])) for c in design.conditions]
    groups.append(("all", np.arange(design.condition_index.size)))
    if readout == "fidelity":
        cos = outcome.cosine if outcome is not None else np.ones((m, design.split.size))
        for name, rows in groups:
            out.append((name, "fidelity_cosine", mean_over(cos, rows), 1.0))
    elif readout == "lm-loss":
        loss = outcome.loss if outcome is not None else np.tile(base.loss, (m, 1))
        for name, rows in groups:
            base_v = float(mean_over(base.loss[None, :], rows)[0])
            out.append((name, "lm_loss", mean_over(loss, rows), base_v))
    elif readout == "generation":
        n = design.split.size
        agree = outcome.agreement if outcome is not None else np.ones((m, n))
        loss = (
            outcome.continuation_loss
            if outcome is not None
            else np.tile(base.continuation_loss, (m, 1))
        )
        for name, rows in groups:
            base_v = float(mean_over(base.continuation_loss[None, :], rows)[0])
            out.append((name, "generation_agreement", mean_over(agree, rows), 1.0))
            out.append((name, "continuation_loss", mean_over(loss, rows), base_v))
    else:
        test = design.split == 1
        truth = design.condition_index
        pred = outcome.predicted if outcome is not None else np.tile(probe_base, (m, 1))
        for name, rows in groups:
            rows = rows[test[rows]]
            if rows.size == 0:
                continue
            acc = (pred[:, rows] == truth[rows]).mean(axis=1)
            acc0 = float((probe_base[rows] == truth[rows]).mean())
            out.append((name, "probe_accuracy", acc, acc0))
            for k, cat in enumerate(design.conditions):
                share = (pred[:, rows] == k).mean(axis=1)
                share0 = float((probe_base[rows] == k).mean())
                out.append((name, f"probe_predicted:{cat}", share, share0))
    return out


def target_bias(
    outcome: Outcome, probe_base: np.ndarray, design: Design, driving: bool
) -> np.ndarray:
    """Change in the share of test stimuli predicted as a target condition, per perturbation.

    Signed so that the expected direction is positive: more predictions of the target when the
    intervention drives the units (steer / stimulate with strength > 0), fewer otherwise.
    """
    test = np.flatnonzero(design.split == 1)
    ids = [design.conditions.index(c) for c in design.targets if c in design.conditions]
    share = np.isin(outcome.predicted[:, test], ids).mean(axis=1)
    share0 = np.isin(probe_base[test], ids).mean()
    return (share - share0) * (1.0 if driving else -1.0)
