"""``topo stimuli list`` and ``topo stimuli build``: the steps, in order.

``list``: for every set, its conditions, how many candidates its present sources give per
condition, and each source's state (version, or the apt-get line that installs it).
``build``: check the options and sources, build the set atomically
(:func:`topocli.stimuli.builders.build.build_set`), print the counts per condition.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from topocli.stimuli.builders.build import build_set, validate_options
from topocli.stimuli.builders.sets import SETS, candidate_counts, get_set
from topocli.stimuli.builders.sources import SOURCES, status


def set_rows(per_condition: int = 48, root: str | Path | None = None) -> list[dict]:
    """One row per buildable set: conditions, candidates per condition, sources and needs.

    Parameters
    ----------
    per_condition : int
        The count a condition is compared against (``short`` lists those with fewer).
    root : str or Path, optional
        Source root (default ``/``).
    """
    statuses = {key: status(src, root) for key, src in SOURCES.items()}
    rows = []
    for name, definition in SETS.items():
        own = {k: statuses[k] for k in (*definition.required, *definition.optional)}
        counts = candidate_counts(definition, own)
        missing = [st for k, st in own.items() if k in definition.required and not st.present]
        rows.append(
            {
                "name": name,
                "modality": definition.modality,
                "description": definition.description,
                "counts": counts,
                "short": [c for c, k in counts.items() if 0 <= k < per_condition],
                "sources": own,
                "required": list(definition.required),
                "needs": sorted({st.source.install for st in missing}),
            }
        )
    return rows


def run_list(console: Console, per_condition: int = 48, quiet: bool = False) -> list[dict]:
    """Print the buildable sets (``topo stimuli list``); returns the rows."""
    from topocli.workflows.stimuli.report import print_sets

    validate_options(per_condition, 0)
    rows = set_rows(per_condition)
    if not quiet:
        print_sets(rows, per_condition, console)
    return rows


def run_build(
    name: str,
    out: Path,
    console: Console,
    per_condition: int = 48,
    seed: int = 0,
    overwrite: bool = False,
    quiet: bool = False,
):
    """Build one set into ``out`` (``topo stimuli build``) and print its summary."""
    from topocli.workflows.stimuli.report import print_build

    get_set(name)
    validate_options(per_condition, seed)
    result = build_set(name, out, per_condition, seed, overwrite=overwrite)
    if not quiet:
        print_build(result, console)
    return result
