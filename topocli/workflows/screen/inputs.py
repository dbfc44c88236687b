"""The stimulus sets of a screen: shipped categories and baselines, checks, pools.

A screen's categories must each hold enough stimuli for a split-half analysis, must not also be
(a part of) the baseline pool they are tested against, and must be of a modality the model
takes. An unlabeled discovery pool is one condition; its stimuli are relabelled once the
discovered clusters are known (splits reassigned even / odd within each cluster).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from topocli.errors import TopoInputError
from topocli.stimuli.stimulus_set import Stimulus, StimulusSet

MIN_STIMULI = 4
BASELINE = "baseline"
UNASSIGNED = "unassigned"


def shipped_categories(modality: str = "text") -> StimulusSet:
    """The project's shipped category sets (``localizers/categories``) for a modality."""
    from topocli.stimuli.localizers import shipped_category_sets
    from topocli.stimuli.stimulus_set import load_stimulus_set

    folder = shipped_category_sets()
    if modality != "text" or not folder.is_dir():
        raise TopoInputError(f"no shipped category sets for {modality}; pass --stimuli DIR")
    return load_stimulus_set(folder)


def shipped_baseline(modality: str = "text", categories: StimulusSet | None = None) -> StimulusSet:
    """The project's mixed baseline pool for a modality (:func:`~topocli.stimuli.localizers.
    baseline_pool`: shipped sentences, or a cached build for images and sounds).

    A built pool may hold files a user's category also holds (a folder copied from the same
    build): those stimuli are left out of the baseline, with a warning, so that no stimulus is
    on both sides of the contrast.
    """
    from topocli.errors import warn
    from topocli.stimuli.localizers import baseline_pool
    from topocli.stimuli.stimulus_set import load_stimulus_set

    pool = load_stimulus_set(baseline_pool(modality))
    if modality == "text" or categories is None:
        return pool
    screened = {_digest(s) for s in categories.stimuli}
    keep = [s for s in pool.stimuli if _digest(s) not in screened]
    if len(keep) < len(pool.stimuli):
        warn(
            f"{len(pool.stimuli) - len(keep)} stimuli of the {modality} baseline pool "
            f"({pool.root}) are also in the screened categories; left out of the baseline"
        )
    conditions = [c for c in pool.conditions if any(s.condition == c for s in keep)]
    return StimulusSet(pool.root, keep, conditions)


def _condition_folder(stim_set: StimulusSet, condition: str) -> Path:
    for s in stim_set.stimuli:
        if s.condition == condition and s.path is not None:
            return s.path.parent
    return Path(stim_set.root)


def check_categories(stim_set: StimulusSet, minimum: int = MIN_STIMULI) -> None:
    """Every category needs ``minimum`` stimuli (2 per split); name the first that has fewer."""
    for cond, n in stim_set.counts().items():
        if n < minimum:
            raise TopoInputError(
                f"category {cond!r} has {n} stimul{'us' if n == 1 else 'i'}; "
                f"need at least {minimum}",
                _condition_folder(stim_set, cond),
            )


def _digest(stimulus: Stimulus) -> str:
    """SHA-256 of one stimulus's content (its text, or its file's bytes)."""
    return hashlib.sha256(stimulus.content_bytes()).hexdigest()


def _stimuli_hash(stimuli: Iterable[Stimulus]) -> str:
    """Order- and name-independent hash of a list of stimuli (sorted per-stimulus digests)."""
    digests = sorted(_digest(s) for s in stimuli)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def _folders(stimuli: Iterable[Stimulus]) -> set[Path]:
    return {s.path.parent.resolve() for s in stimuli if s.path is not None}


def check_not_in_baseline(categories: StimulusSet, baseline: StimulusSet) -> None:
    """A category folder must not also be (a part of) the baseline: same path or same content."""
    base_dirs = _folders(baseline.stimuli) | {Path(baseline.root).resolve()}
    base_hashes = {_stimuli_hash(baseline.stimuli)}
    by_condition: dict[str, list[Stimulus]] = {}
    by_file: dict[Path, list[Stimulus]] = {}
    for s in baseline.stimuli:
        by_condition.setdefault(s.condition, []).append(s)
        if s.path is not None:
            by_file.setdefault(s.path, []).append(s)
    base_hashes |= {_stimuli_hash(v) for v in by_condition.values()}
    base_hashes |= {_stimuli_hash(v) for v in by_file.values()}
    for cond in categories.conditions:
        members = [s for s in categories.stimuli if s.condition == cond]
        folder = _condition_folder(categories, cond)
        if _folders(members) & base_dirs:
            raise TopoInputError(
                f"category {cond!r} is also in the baseline pool ({baseline.root}); "
                "pass another --against",
                folder,
            )
        if _stimuli_hash(members) in base_hashes:
            raise TopoInputError(
                f"category {cond!r} has the same stimuli as (part of) the baseline pool "
                f"({baseline.root}); pass another --against",
                folder,
            )


def relabel(stimuli: Sequence[Stimulus], conditions: Sequence[str]) -> list[Stimulus]:
    """The stimuli with new conditions; splits reassigned even/odd in order within each."""
    seen: dict[str, int] = {}
    out = []
    for s, cond in zip(stimuli, conditions, strict=True):
        i = seen.get(cond, 0)
        seen[cond] = i + 1
        out.append(dataclasses.replace(s, condition=cond, split=i % 2))
    return out


def with_baseline_group(categories: StimulusSet, baseline: StimulusSet) -> tuple[StimulusSet, str]:
    """The categories plus the whole baseline pool as one more condition (returns its name)."""
    name = BASELINE
    while name in categories.conditions:
        name = f"_{name}"
    base = relabel(baseline.stimuli, [name] * len(baseline))
    combined = StimulusSet(
        Path(categories.root), list(categories.stimuli) + base, [*categories.conditions, name]
    )
    return combined, name


def load_pool(folder: str | Path, allow_outside: bool = False) -> StimulusSet:
    """An unlabeled pool: every stimulus under ``folder`` (sub-folders ignored as labels)."""
    from topocli.stimuli.stimulus_set import load_stimulus_set

    root = Path(folder)
    if root.is_dir() and not any(
        p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
    ):
        raise TopoInputError("the discovery pool is empty", root)
    try:
        pool = load_stimulus_set(root, allow_outside=allow_outside)
    except TopoInputError as exc:
        if "empty" in str(exc) or "no stimuli" in str(exc):
            raise TopoInputError("the discovery pool is empty", root) from None
        raise
    if len(pool) == 0:
        raise TopoInputError("the discovery pool is empty", root)
    return StimulusSet(root, relabel(pool.stimuli, ["pool"] * len(pool)), ["pool"])


def check_modality(model: Any, stim_set: StimulusSet, hint: str = "") -> None:
    """The model must take the stimuli's modality (one-line error otherwise)."""
    mods = getattr(model, "modalities", None)
    if mods is None:
        return
    modality = stim_set.modality
    if modality not in mods:
        from topocli.models.registry import model_hint

        have = ", ".join(sorted(mods)) or "nothing"
        raise TopoInputError(
            f"{modality} categories, but this model takes {have}{hint or model_hint(modality)}",
            stim_set.root,
        )
