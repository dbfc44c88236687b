"""The table of ``topo models`` (fits 80 columns; the pip lines follow the table)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table


def state_of(row: dict) -> str:
    if not row["installed"]:
        return "not installed"
    return "ready" if row["converted"] else "installed"


def print_models(rows: list[dict], console: Console) -> None:
    """Name, input, state and source sha256; then each one's contents, licence and format, and
    what each missing one needs (80 columns: the shipped controls' names are long)."""
    table = Table(title="models (--model NAME)", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("input", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("sha256", no_wrap=True)
    for r in rows:
        sha = (r.get("sha256") or "-")[:10]
        table.add_row(r["name"], r["modality"], state_of(r), sha)
    console.print(table)
    for r in rows:
        console.print(
            f"[bold]{r['name']}[/]: {r['contents']} ({r['licence']}, {r['format']})",
            highlight=False,
        )
        if r["needs"]:
            console.print(f"  needs: {r['needs']}", highlight=False, soft_wrap=False)
    console.print(
        "ready: usable now; installed: converted on first use into $TOPO_MODEL_DIR "
        "(default ~/.cache/topo/models). A model folder, checkpoint or cached hub id works "
        "as --model too.",
        highlight=False,
    )
