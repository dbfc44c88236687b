"""The terminal output of ``topo stimuli``: the table of buildable sets, a build's summary."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table


def print_sets(rows: list[dict], per_condition: int | None, console: Console) -> None:
    """Set, input, conditions with their candidate counts, and state; then what each needs."""
    table = Table(title="stimulus sets (topo stimuli build NAME)", box=box.SIMPLE_HEAD)
    table.add_column("set", no_wrap=True)
    table.add_column("input", no_wrap=True)
    table.add_column("conditions (candidates)", overflow="fold")
    table.add_column("state", no_wrap=True)
    for r in rows:
        conds = ", ".join(f"{c} ({'any' if k < 0 else k})" for c, k in r["counts"].items())
        state = "needs sources" if r["needs"] else "buildable"
        if r["split"] == "train":
            state += " (training)"
        table.add_row(r["name"], r["modality"], conds, state)
    console.print(table)
    for r in rows:
        console.print(f"[bold]{r['name']}[/]: {r['description']}", highlight=False)
        for key, st in r["sources"].items():
            role = "" if key in r["required"] else " (optional)"
            line = st.version if st.present else st.needs
            console.print(f"  {st.source.package}{role}: {line}", highlight=False)
        if r["short"] and not r["needs"]:
            console.print(
                f"  fewer than {r['per_condition']} candidates: {', '.join(r['short'])} "
                "(a build gives what there is and says so in its README)",
                highlight=False,
            )
    console.print(
        "Candidates are an upper bound: originals that do not decode are skipped at build "
        "time and listed in PROVENANCE.csv.",
        highlight=False,
    )


def print_build(result, console: Console) -> None:
    """Counts per condition of a finished build, and where it is."""
    table = Table(title=f"{result.name}: {result.out}", box=box.SIMPLE_HEAD)
    table.add_column("condition", no_wrap=True)
    table.add_column("stimuli", justify="right")
    table.add_column("skipped", justify="right")
    for cond, n in result.counts.items():
        mark = "" if n >= result.asked else f" (of {result.asked})"
        table.add_row(cond, f"{n}{mark}", str(result.skipped.get(cond, 0)))
    console.print(table)
    console.print(
        "PROVENANCE.csv: source, version, licence and transforms of every file; "
        "README.md: method and remaining low-level differences.",
        highlight=False,
    )


def print_cached(name: str, folder, console: Console) -> None:
    """Where a cached build is, and what it holds."""
    import json

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    counts = (manifest.get("extra") or manifest).get("counts", {})
    text = ", ".join(f"{c} {n}" for c, n in counts.items())
    console.print(f"{name}: {folder}", highlight=False)
    if text:
        console.print(f"  {text}", highlight=False)
