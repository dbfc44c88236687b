"""The printed summary of a command, machine-readable: ``summary.json`` beside the manifest.

Each command's ``report.py`` builds its summary with :func:`summary_rows` / plain mappings and
hands it to :meth:`topocli.reporting.html.Report.set_summary`;
:meth:`~topocli.reporting.results.ResultsFolder.write_report` writes it as ``summary.json``
(``{"format", "tool", "command", "created", "summary"}``). :func:`summary_of` reads it back for
``--json`` and for scripts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from topocli.errors import TopoInputError
from topocli.reporting.results import SUMMARY, to_jsonable


def summary_rows(table: Any, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """A DataFrame as JSON-able records (NaN -> null), optionally a subset of columns."""
    frame = table if columns is None else table[[c for c in columns if c in table.columns]]
    return to_jsonable(frame.to_dict(orient="records"))


def summary_of(folder: str | Path) -> dict[str, Any]:
    """The ``summary.json`` of a results folder (what the command printed, as data).

    Parameters
    ----------
    folder : str or Path
        A topo results folder (or, for ``topo train``, the checkpoint folder).

    Returns
    -------
    dict
        ``{"format": 1, "tool": "topo", "command": ..., "created": ..., "summary": {...}}``.

    Raises
    ------
    TopoInputError
        No ``summary.json`` (a folder written before topo had it, or not a results folder), or
        one that is not topo's JSON.
    """
    path = Path(folder) / SUMMARY
    if not path.is_file():
        raise TopoInputError(
            "has no summary.json (not a topo results folder, or written by an older topo)",
            Path(folder),
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TopoInputError(f"summary.json is not valid JSON ({exc})", path) from exc
    if not isinstance(data, dict) or data.get("tool") != "topo" or "summary" not in data:
        raise TopoInputError("summary.json was not written by topo", path)
    return data
