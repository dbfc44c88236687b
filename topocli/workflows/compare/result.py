"""What :func:`topocli.workflows.compare.run.compare` returns, and its profile table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from topocli.stats.agreement import ConditionMap
from topocli.workflows.compare.human_side import HumanData
from topocli.workflows.compare.models import ModelResults, model_profile
from topocli.workflows.compare.pairs import Pair

PROFILE_COLUMNS = [
    "side",
    "source",
    "froi",
    "condition",
    "shared_condition",
    "mean",
    "sem",
    "sd",
    "n",
    "n_elements",
    "n_rois",
]
_SUMMARY_METRICS = ("dprime_model", "dprime_human", "dice_model", "dice_human")


@dataclass
class CompareResult:
    """Everything :func:`~topocli.workflows.compare.run.compare` computed.

    Written by :func:`~topocli.workflows.compare.report.write_compare_results`.

    Attributes
    ----------
    models : list of ModelResults
    human : HumanData
    cmap : ConditionMap
        The condition map used.
    cmap_source : str
        How it was chosen (a sentence for the report).
    pairs : list of Pair
        The model fROI / human target pairs compared.
    metrics : pandas.DataFrame
        ``metrics.csv`` (:data:`~topocli.workflows.compare.metrics.METRIC_COLUMNS`).
    profiles : pandas.DataFrame
        ``profiles.csv`` (:data:`PROFILE_COLUMNS`, :func:`profiles_table`).
    agreements : dict
        (model label, model fROI, human target) -> profile agreement.
    notes : list of str
        What was skipped or could not be computed.
    params : dict
        The parameters as used (recorded in the manifest).
    """

    models: list[ModelResults]
    human: HumanData
    cmap: ConditionMap
    cmap_source: str
    pairs: list[Pair]
    metrics: pd.DataFrame
    profiles: pd.DataFrame
    agreements: dict[tuple[str, str, str], dict]
    notes: list[str]
    params: dict[str, Any]

    def summary_table(self) -> pd.DataFrame:
        """One row per fROI pair: r, p, CI (Pearson and Spearman), d' both sides, Dice."""
        values = {
            (r.model, r.model_froi, r.human_froi, r.metric): r.value
            for r in self.metrics.itertuples(index=False)
        }
        rows = []
        for pair in self.pairs:
            key = (pair.model.label, pair.froi, pair.target)
            agreement = self.agreements[key]
            row = {m: values.get((*key, m), np.nan) for m in _SUMMARY_METRICS}
            rows.append(
                {
                    "model": pair.model.label,
                    "model_froi": pair.froi,
                    "human_froi": pair.target,
                    "n_conditions": agreement["n_conditions"],
                    "pearson_r": agreement["pearson_r"],
                    "pearson_p": agreement["pearson_p_perm"],
                    "pearson_ci_low": agreement["pearson_ci_low"],
                    "pearson_ci_high": agreement["pearson_ci_high"],
                    "spearman_r": agreement["spearman_r"],
                    "spearman_p": agreement["spearman_p_perm"],
                    "spearman_ci_low": agreement["spearman_ci_low"],
                    "spearman_ci_high": agreement["spearman_ci_high"],
                    "dprime_model": row.get("dprime_model", np.nan),
                    "dprime_human": row.get("dprime_human", np.nan),
                    "dice_model": row.get("dice_model", np.nan),
                    "dice_human": row.get("dice_human", np.nan),
                }
            )
        return pd.DataFrame(rows)


def profiles_table(pairs: Sequence[Pair], human: HumanData, cmap: ConditionMap) -> pd.DataFrame:
    """``profiles.csv``: every compared profile, model and human, in long form.

    Parameters
    ----------
    pairs : sequence of Pair
        Each model fROI and each human target appears once, whatever its number of pairs.
    human : HumanData
    cmap : ConditionMap
        Fills ``shared_condition``: the human name of a condition both sides have, else empty.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`PROFILE_COLUMNS`; model conditions keep their model names.
    """
    frames = []
    seen: set[tuple[str, str]] = set()
    for pair in pairs:
        if (pair.model.label, pair.froi) in seen:
            continue
        seen.add((pair.model.label, pair.froi))
        profile = model_profile(pair.model, pair.froi).reset_index()
        profile.insert(0, "side", "model")
        profile.insert(1, "source", pair.model.label)
        profile.insert(2, "froi", pair.froi)
        profile.insert(4, "shared_condition", profile["condition"].map(cmap.conditions))
        frames.append(profile)
    for target in dict.fromkeys(p.target for p in pairs):
        if target not in human.profiles:
            continue
        profile = human.profiles[target].reset_index()
        profile.insert(0, "side", "human")
        profile.insert(1, "source", human.source)
        profile.insert(2, "froi", target)
        shared = set(cmap.conditions.values())
        profile.insert(
            4, "shared_condition", profile["condition"].where(profile["condition"].isin(shared))
        )
        frames.append(profile)
    return pd.concat(frames, ignore_index=True)[PROFILE_COLUMNS]
