"""``topo stimuli``: build localizer stimulus sets offline from packaged material.

Two thin commands over :mod:`topocli.workflows.stimuli.run`: ``list`` and ``build``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from topocli.cli.context import out as _out

stimuli_app = typer.Typer(
    name="stimuli",
    help=(
        "Build visual and auditory localizer stimulus sets on this machine from installed "
        "packages (Debian tuxpaint stamps, Noto Color Emoji, asterisk prompts, sonic-pi "
        "samples, wallpapers, espeak-ng). Each build is a folder with one sub-folder per "
        "condition (what localize --stimuli and screen --stimuli read), PROVENANCE.csv and "
        "the licence texts of its sources.\n\n"
        "Example: topo stimuli list; topo stimuli build emfl-visual --out emfl-visual/; "
        "topo localize --model efficientnet-lite0 -l emfl_visual --stimuli emfl-visual/"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)

PerConditionOpt = Annotated[
    int | None,
    typer.Option(
        "--per-condition",
        min=1,
        help="Stimuli per condition (default 48; train-visual 512 and train-auditory 400, one "
        "condition each); a condition whose sources give fewer gets all there is.",
        show_default=False,
    ),
]


@stimuli_app.command("list")
def list_sets(
    per_condition: PerConditionOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing.")] = False,
) -> None:
    """List every set it can build: conditions, candidates per condition, and for each source
    its version or the apt-get line that installs it.

    Example: topo stimuli list
    """
    from topocli.workflows.stimuli.run import run_list

    run_list(_out, per_condition=per_condition, quiet=quiet)


@stimuli_app.command("build")
def build(
    name: Annotated[
        str,
        typer.Argument(
            help="emfl-visual | categories-visual | voice | emfl-auditory | retinotopy | "
            "tonotopy | train-visual | train-auditory (see topo stimuli list)."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Folder to write (atomically); default: the stimuli cache ($TOPO_STIMULI_DIR "
            "or ~/.cache/topo/stimuli), reused when already built.",
        ),
    ] = None,
    per_condition: PerConditionOpt = None,
    seed: Annotated[
        int, typer.Option(min=0, help="Which originals are drawn, and scramble / quilt noise.")
    ] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier build at --out.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing.")] = False,
) -> None:
    """Build one set into --out: the same bytes for the same seed (manifest.json aside).

    A missing source is one line naming the package to install (exit code 2). Originals
    that do not decode are skipped and listed in PROVENANCE.csv with the reason.

    Example: topo stimuli build voice --out voice/ --per-condition 64 --seed 1
    """
    from topocli.workflows.stimuli.run import run_build

    run_build(name, out, _out, per_condition, seed, overwrite=overwrite, quiet=quiet)
