"""Terminal tables that read at the console's width (80 columns included).

A table is declared as :class:`Column` s with a priority; :func:`fit_table` keeps every column
that fits, dropping the least important first, and names the dropped ones in the caption (they
are in the CSV tables and ``summary.json``). Name columns keep each name on one line (up to
``NAME_MAX`` characters; longer ones fold, ``overflow="fold"``) and are never cut to ``emoti…``;
free-text columns wrap between words; numbers never wrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

NAME_MAX = 28  # a name longer than this may fold onto a second line; shorter ones never do
CELL_PAD = 3  # rich's default box: one space each side and one rule per column


@dataclass(frozen=True)
class Column:
    """One column of a terminal table.

    Parameters
    ----------
    header : str
    justify : {"left", "right", "center"}
    priority : int
        0: always shown; larger: dropped earlier when the table does not fit.
    name : bool
        A name (category, contrast, area...): kept on one line up to ``NAME_MAX``
        characters, never ellipsised.
    wrap : bool
        Free text (e.g. "language: sentences-nonwords (0.31)"): may wrap between words.
    """

    header: str
    justify: str = "right"
    priority: int = 1
    name: bool = False
    wrap: bool = False


def _natural(col: Column, cells: Sequence[str]) -> int:
    return max([len(col.header), *(len(c) for c in cells)] or [1])


def _minimum(col: Column, cells: Sequence[str]) -> int:
    """Numbers: their widest cell or header. Names: the longest name (up to NAME_MAX) and the
    header's longest word, so names stay on one line and only the header may wrap."""
    header_word = max(len(w) for w in col.header.split() or [""])
    if col.wrap:
        longest_word = max([len(w) for c in cells for w in c.split()] or [1])
        return max(min(longest_word, NAME_MAX), header_word)
    if not col.name:
        return _natural(col, cells)
    longest = min(max([len(c) for c in cells] or [1]), NAME_MAX)
    return max(longest, header_word)


def fit_columns(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Indices of the columns kept at ``width`` characters (in their order).

    Columns are dropped from the highest priority number down (the rightmost first among
    equals) until the table's minimum width fits; priority 0 is never dropped. Dropped columns
    that fit in the room left are then put back, most important first.
    """
    cells = [[str(r[i]) for r in rows] for i in range(len(columns))]
    keep = list(range(len(columns)))

    def needed(idx: list[int]) -> int:
        return 1 + sum(_minimum(columns[i], cells[i]) + CELL_PAD for i in idx)

    dropped = []
    while needed(keep) > width:
        droppable = [i for i in keep if columns[i].priority > 0]
        if not droppable:
            break
        worst = max(droppable, key=lambda i: (columns[i].priority, i))
        keep.remove(worst)
        dropped.append(worst)
    for i in sorted(dropped, key=lambda i: (columns[i].priority, i)):
        if needed(sorted([*keep, i])) <= width:
            keep = sorted([*keep, i])
    return keep


def fit_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Any]],
    width: int,
    title: str | None = None,
    more: str | None = None,
) -> Any:
    """A :class:`rich.table.Table` of ``rows`` that fits ``width`` characters.

    Parameters
    ----------
    columns : sequence of Column
    rows : sequence of sequence
        Cell texts, one per column (converted with ``str``).
    width : int
        The console width (``console.width``).
    title : str, optional
    more : str, optional
        Where the dropped columns are (default: "in the CSV tables and summary.json").

    Returns
    -------
    rich.table.Table
    """
    from rich.table import Table

    text_rows = [[str(c) for c in r] for r in rows]
    keep = fit_columns(columns, text_rows, width)
    dropped = [columns[i].header for i in range(len(columns)) if i not in keep]
    caption = None
    if dropped:
        caption = (
            f"not shown at {width} columns: {', '.join(dropped)} "
            f"({more or 'in the CSV tables and summary.json'})"
        )
    table = Table(title=title, caption=caption, caption_justify="left")
    for i in keep:
        col = columns[i]
        cells = [r[i] for r in text_rows]
        table.add_column(
            col.header,
            justify=col.justify,  # type: ignore[arg-type]
            no_wrap=not (col.name or col.wrap),
            overflow="fold",
            min_width=_minimum(col, cells),
        )
    for r in text_rows:
        table.add_row(*(r[i] for i in keep))
    return table
