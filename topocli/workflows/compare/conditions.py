"""Condition maps: which model condition and fROI is which human condition and fROI.

A map is given (a TOML/CSV file or a shipped name), else the shipped map named after the model's
localizer, else the names both sides share; it is then checked against both sides before any
number is computed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from topocli.errors import TopoInputError
from topocli.stats.agreement import MIN_SHARED_CONDITIONS, ConditionMap, load_condition_map
from topocli.workflows.compare.models import ModelResults


def shipped_condition_map(name: str) -> Path | None:
    """``localizers/condition_maps/<name>.toml`` when the project ships one."""
    from topocli.stimuli.localizers import library_root

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        return None
    path = library_root() / "condition_maps" / f"{name}.toml"
    return path if path.is_file() else None


def resolve_condition_map(
    spec: str | Path | None,
    models: Sequence[ModelResults],
    human_conditions: Sequence[str],
    human_targets: Sequence[str],
) -> tuple[ConditionMap, str]:
    """The condition map to use and how it was chosen.

    ``spec`` is a TOML/CSV file or the name of a shipped map. Without it: the shipped map
    named after the first model's localizer, else the identity on names found on both sides
    (a contrast maps to a human target of its own name, or to its localizer's parcel
    category).

    Returns
    -------
    (ConditionMap, str)
        The map and a sentence for the report.
    """
    if spec is not None:
        path = Path(spec)
        if not path.exists():
            shipped = shipped_condition_map(str(spec))
            if shipped is not None:
                return load_condition_map(shipped), f"shipped condition map '{spec}' ({shipped})"
        return load_condition_map(path), f"condition map {path}"
    localizer = next((m.localizer for m in models if m.localizer), None)
    shipped = shipped_condition_map(localizer) if localizer else None
    if shipped is not None:
        return (
            load_condition_map(shipped),
            f"shipped condition map of localizer '{localizer}' ({shipped})",
        )
    human_c, human_t = set(human_conditions), set(human_targets)
    cmap = ConditionMap()
    for model in models:
        for condition in model.conditions:
            if condition in human_c:
                cmap.conditions[condition] = condition
        categories = _localizer_categories(model.localizer)
        for contrast in dict.fromkeys(model.profiles["contrast"]):
            target = categories.get(contrast) if categories.get(contrast) in human_t else None
            target = target or (contrast if contrast in human_t else None)
            if target:
                cmap.frois[contrast] = target
    if not cmap.conditions:
        raise TopoInputError(
            "no condition has the same name on both sides; pass --condition-map "
            f"(model: {', '.join(models[0].conditions)}; human: {', '.join(human_conditions)})"
        )
    if not cmap.frois:
        raise TopoInputError(
            "no model contrast names a human fROI or category; pass --condition-map "
            f"(human fROIs/categories: {', '.join(list(human_targets)[:20])})"
        )
    return cmap, "same names on both sides (no condition map given)"


def _localizer_categories(name: str | None) -> dict[str, str]:
    if not name:
        return {}
    try:
        from topocli.stimuli.localizers import load_localizer

        localizer = load_localizer(name)
    except Exception:  # an unknown or custom localizer: no categories
        return {}
    out = {}
    for contrast_name, contrast in localizer.contrasts.items():
        category = contrast.parcel_category or localizer.parcel_category
        if category:
            out[contrast_name] = category
    return out


def check_condition_map(
    cmap: ConditionMap,
    models: Sequence[ModelResults],
    human_conditions: Sequence[str],
    human_targets: Sequence[str] | None,
) -> None:
    """Every condition of the map exists on both sides; targets exist on the human side.

    Raises
    ------
    TopoInputError
        One line listing every absent name by side, or fewer than 3 mapped conditions present
        on both sides.
    """
    human_c = set(human_conditions)
    problems = []
    for model in models:
        absent = [c for c in cmap.conditions if c not in set(model.conditions)]
        if absent:
            problems.append(
                f"model conditions absent from {model.path} ({model.label}): {absent} "
                f"(it has {model.conditions})"
            )
    absent_human = [h for h in cmap.conditions.values() if h not in human_c]
    if absent_human:
        problems.append(
            f"human conditions absent from the human data: {absent_human} "
            f"(it has {sorted(human_c)})"
        )
    if human_targets is not None:
        absent = sorted({t for t in cmap.frois.values() if t not in set(human_targets)})
        if absent:
            problems.append(f"human fROIs/categories absent from the human data: {absent}")
    if problems:
        raise TopoInputError("condition map: " + "; ".join(problems), cmap.path)
    shared = [h for h in cmap.conditions.values() if h in human_c]
    if len(shared) < MIN_SHARED_CONDITIONS:
        raise TopoInputError(
            f"condition map gives {len(shared)} shared condition(s) "
            f"({', '.join(shared) or 'none'}); a profile correlation needs at least "
            f"{MIN_SHARED_CONDITIONS}",
            cmap.path,
        )


def in_human_names(profile: pd.DataFrame, cmap: ConditionMap) -> pd.DataFrame:
    """A model profile on the mapped conditions only, indexed by their human names.

    Parameters
    ----------
    profile : pandas.DataFrame
        Indexed by model condition (:func:`topocli.workflows.compare.models.model_profile`).
    cmap : ConditionMap

    Returns
    -------
    pandas.DataFrame
        The rows of the conditions ``cmap`` maps, in the profile's order, renamed.
    """
    kept = [c for c in profile.index if c in cmap.conditions]
    out = profile.loc[kept].copy()
    out.index = pd.Index([cmap.conditions[c] for c in kept], name="condition")
    return out
