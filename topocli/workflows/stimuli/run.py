"""``topo stimuli list`` and ``topo stimuli build``: the steps, in order.

``list``: for every set, its conditions, how many candidates its present sources give per
condition, and each source's state (version, or the apt-get line that installs it).
``build``: check the options and sources, build the set atomically
(:func:`topocli.stimuli.builders.build.build_set`) into ``--out`` or, with no folder, into the
stimuli cache (:func:`~topocli.stimuli.builders.build.cached_build`, where the localizers and
``topo train`` find it), print the counts per condition. With no count, each set builds its
default (48 per condition for the localizer sets, a few hundred for the training sets).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from topocli.stimuli.builders.build import (
    build_set,
    cached_build,
    resolve_count,
    validate_options,
)
from topocli.stimuli.builders.sets import SETS, candidate_counts, get_set
from topocli.stimuli.builders.sources import SOURCES, status


def set_rows(per_condition: int | None = None, root: str | Path | None = None) -> list[dict]:
    """One row per buildable set: conditions, candidates per condition, sources and needs.

    Parameters
    ----------
    per_condition : int, optional
        The count a condition is compared against (``short`` lists those with fewer);
        default: each set's own default count.
    root : str or Path, optional
        Source root (default ``/``).
    """
    statuses = {key: status(src, root) for key, src in SOURCES.items()}
    rows = []
    for name, definition in SETS.items():
        own = {k: statuses[k] for k in (*definition.required, *definition.optional)}
        counts = candidate_counts(definition, own)
        n = resolve_count(name, per_condition)
        missing = [st for k, st in own.items() if k in definition.required and not st.present]
        rows.append(
            {
                "name": name,
                "modality": definition.modality,
                "description": definition.description,
                "counts": counts,
                "split": definition.split,
                "per_condition": n,
                "short": [c for c, k in counts.items() if 0 <= k < n],
                "sources": own,
                "required": list(definition.required),
                "needs": sorted({st.source.install for st in missing}),
            }
        )
    return rows


def run_list(console: Console, per_condition: int | None = None, quiet: bool = False) -> list[dict]:
    """Print the buildable sets (``topo stimuli list``); returns the rows."""
    from topocli.workflows.stimuli.report import print_sets

    validate_options(per_condition, 0)
    rows = set_rows(per_condition)
    if not quiet:
        print_sets(rows, per_condition, console)
    return rows


def run_build(
    name: str,
    out: Path | None,
    console: Console,
    per_condition: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    quiet: bool = False,
):
    """Build one set (``topo stimuli build``) and print its summary.

    Parameters
    ----------
    out : Path or None
        The folder to write; None: the stimuli cache (an existing cached build is reused, and
        its folder printed).

    Returns
    -------
    BuildResult or Path
        The build, or the cached folder when ``out`` is None.
    """
    from topocli.workflows.stimuli.report import print_build, print_cached

    get_set(name)
    validate_options(per_condition, seed)
    if out is None:
        folder = cached_build(name, per_condition, seed)
        if not quiet:
            print_cached(name, folder, console)
        return folder
    result = build_set(name, out, per_condition, seed, overwrite=overwrite)
    if not quiet:
        print_build(result, console)
    return result
