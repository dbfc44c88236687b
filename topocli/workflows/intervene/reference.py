"""Reference numbers per unit (mean, category direction, SD) for mean / steer / stimulate.

They come from the source folder's ``stats.safetensors`` when it holds unsmoothed mean-pooled
statistics of the (condition, split) groups; otherwise from an unperturbed pass over the
intervention's stimuli through the one activation pipeline
(:func:`topocli.activations.extraction.extract`), whose cache a localize or screen run over the
same stimuli has usually filled already.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from topocli.errors import TopoInputError
from topocli.workflows.intervene.source import SourceResults

FOLDER_SOURCE = "stats.safetensors of the results folder"
PASS_SOURCE = "an unperturbed pass over the intervention's stimuli through the activation pipeline"


@dataclass
class Reference:
    """Per-unit reference numbers: mean, category direction and SD, and where they came from."""

    mean: np.ndarray
    direction: np.ndarray
    sd: np.ndarray
    source: str


def weighted_direction(
    means: np.ndarray, counts: np.ndarray, conditions: Sequence[str], weights: Mapping[str, float]
) -> np.ndarray:
    """``mean(positive conditions) - mean(negative conditions)``, each side weight-normalised."""
    w = np.array([float(weights.get(c, 0.0)) for c in conditions])
    w = np.where(counts > 0, w, 0.0)
    pos, neg = np.clip(w, 0, None), np.clip(-w, 0, None)
    direction = np.zeros(means.shape[1])
    if pos.sum() > 0:
        direction += pos @ means / pos.sum()
    if neg.sum() > 0:
        direction -= neg @ means / neg.sum()
    return direction


def reference_from_stats(
    stats: Any,
    conditions: Sequence[str],
    weights: Mapping[str, float],
    source: str = FOLDER_SOURCE,
) -> Reference:
    """Reference numbers from (condition, split) sufficient statistics (groups 2*c + split)."""
    n_all, mean_all, m2_all = stats.total()
    k = len(conditions)
    if stats.n_groups != 2 * k:
        raise TopoInputError(
            f"stats.safetensors holds {stats.n_groups} groups, expected {2 * k} (2 per condition)"
        )
    means = np.zeros((k, stats.n_units))
    counts = np.zeros(k)
    for c in range(k):
        n, m, _ = stats.pooled([2 * c, 2 * c + 1])
        means[c], counts[c] = m, n
    sd = np.sqrt(m2_all / max(n_all - 1.0, 1.0))
    direction = weighted_direction(means, counts, conditions, weights)
    return Reference(mean_all, direction, sd, source)


def reference_from_activations(
    acts: np.ndarray, condition_index: np.ndarray, conditions: Sequence[str], weights: Mapping
) -> Reference:
    """Reference numbers from unperturbed pooled activations [N, U]."""
    k = len(conditions)
    counts = np.bincount(condition_index, minlength=k).astype(np.float64)
    means = np.zeros((k, acts.shape[1]))
    for c in range(k):
        if counts[c]:
            means[c] = acts[condition_index == c].mean(axis=0)
    sd = acts.std(axis=0, ddof=1) if len(acts) > 1 else np.zeros(acts.shape[1])
    direction = weighted_direction(means, counts, conditions, weights)
    return Reference(
        acts.mean(axis=0), direction, sd, "an unperturbed pass over the intervention's stimuli"
    )


def reference_from_pass(
    model: Any,
    stim_set: Any,
    weights: Mapping[str, float],
    batch_size: int = 32,
    progress: Any = None,
    use_cache: bool = True,
) -> Reference:
    """Reference numbers from an unperturbed mean-pooled pass through the activation pipeline.

    Parameters
    ----------
    model : TopoModel
    stim_set : StimulusSet
    weights : mapping of str to float
        The contrast's condition weights (for the direction).
    batch_size : int
    progress : rich Progress, optional
    use_cache : bool
        Read / write the activation cache (float16: the statistics are of the rounded values).

    Returns
    -------
    Reference
    """
    from topocli.activations.extraction import extract

    with extract(
        model, stim_set, batch_size, "mean", use_cache=use_cache, progress=progress
    ) as ext:
        return reference_from_stats(ext.stats, list(stim_set.conditions), weights, PASS_SOURCE)


def folder_reference(
    source: SourceResults, n_units: int, weights: Mapping[str, float]
) -> tuple[Reference | None, list[str]]:
    """Reference numbers from the source folder's ``stats.safetensors``, if usable.

    Returns
    -------
    reference : Reference or None
        None when the file is missing, smoothed, last-token pooled or of another sheet.
    notes : list of str
        Why an existing file was not used.
    """
    from topocli.stats.suffstats import SufficientStats

    path = source.root / "stats.safetensors"
    if not path.is_file():
        return None, []
    stats = SufficientStats.load(path)
    meta = stats.metadata
    params = source.manifest.get("parameters") or {}
    conds = json.loads(meta["conditions"]) if "conditions" in meta else source.conditions
    fwhm = float(meta.get("fwhm_mm", params.get("fwhm_mm") or 0) or 0)
    pooling = meta.get("pooling", params.get("pooling") or "mean")
    if stats.n_units == n_units and fwhm == 0 and pooling == "mean" and conds:
        return reference_from_stats(stats, conds, weights), []
    return None, [
        "stats.safetensors holds smoothed or last-token statistics; reference means come "
        "from an unperturbed pass over the stimuli"
    ]


def load_reference(
    source: SourceResults,
    model: Any,
    stim_set: Any,
    weights: Mapping[str, float],
    batch_size: int = 32,
    progress: Any = None,
) -> tuple[Reference, list[str]]:
    """The reference of a run: the folder's statistics when usable, else a pipeline pass.

    Returns
    -------
    reference : Reference
    notes : list of str
        Why the folder's statistics were not used (empty when they were, or were missing).
    """
    ref, notes = folder_reference(source, int(model.sheet.n_units), weights)
    if ref is None:
        ref = reference_from_pass(model, stim_set, weights, batch_size, progress)
    return ref, notes
