"""Pairing model fROIs with human fROIs or parcel categories through the condition map."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from topocli.errors import TopoInputError
from topocli.stats.agreement import ConditionMap, parse_model_froi
from topocli.workflows.compare.human_side import HumanData
from topocli.workflows.compare.models import ModelResults


@dataclass
class Pair:
    """One model fROI matched with one human fROI or category."""

    model: ModelResults
    froi: str
    contrast: str
    area: str
    target: str


def match_pairs(cmap: ConditionMap, models: Sequence[ModelResults]) -> tuple[list[Pair], list[str]]:
    """Expand the condition map's fROI entries over every model folder.

    A key ``contrast@area`` matches that fROI, a bare ``contrast`` every area that has it.
    Entries a folder lacks are skipped with a note; none matching at all is an error.
    """
    pairs: list[Pair] = []
    notes: list[str] = []
    for model in models:
        froi_table = model.profiles.drop_duplicates("froi")
        for key, target in cmap.frois.items():
            contrast, area = parse_model_froi(key)
            hits = froi_table[
                (froi_table["contrast"] == contrast)
                & ((froi_table["area"] == area) if area else True)
            ]
            if hits.empty:
                notes.append(f"{model.label}: no model fROI '{key}' in {model.path}; skipped")
                continue
            for row in hits.itertuples(index=False):
                pairs.append(Pair(model, row.froi, row.contrast, row.area, target))
    if not pairs:
        have = sorted({f for m in models for f in m.frois})
        raise TopoInputError(
            f"none of the condition map's model fROIs ({', '.join(cmap.frois)}) is in the model "
            f"results (they have: {', '.join(have[:12])}{' ...' if len(have) > 12 else ''})",
            cmap.path,
        )
    return pairs, notes


def pairs_with_human_profiles(pairs: list[Pair], human: HumanData, notes: list[str]) -> list[Pair]:
    """Pairs whose human target has a profile; the others are dropped with a note.

    Parameters
    ----------
    pairs : list of Pair
    human : HumanData
        Its ``notes`` say why a target has no profile.
    notes : list of str
        Appended to, one note per dropped target.

    Raises
    ------
    TopoInputError
        No pair is left.
    """
    missing = [t for t in dict.fromkeys(p.target for p in pairs) if t not in human.profiles]
    for target in missing:
        why = "; ".join(human.notes.get(target, [])) or "no data"
        notes.append(f"human '{target}' has no profile ({why}); its pairs are skipped")
    kept = [p for p in pairs if p.target in human.profiles]
    if not kept:
        raise TopoInputError(
            "no human fROI profile could be built: " + " | ".join(notes[-len(missing) :])
        )
    return kept
