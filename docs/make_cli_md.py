"""Regenerate docs/cli.md from the CLI's own --help texts: python docs/make_cli_md.py"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COMMANDS = [
    "info", "train", "localize", "smooth", "screen", "intervene", "compare", "models",
    "stimuli list", "stimuli build",
]

INTRO = """# Command line

Generated from `topo COMMAND --help` by `docs/make_cli_md.py`; the help text is the reference.

Shared conventions: `--model` takes a checkpoint folder, a Hugging Face model folder, a hub id
already in the local cache, `minilm` (shipped topographic default) or `minilm-control`;
`--device auto|cpu|cuda`, `--dtype`, `--batch-size`, `--seed`, `--out DIR` (a results folder,
written atomically), `--overwrite`, `--debug` (tracebacks), `--quiet`. Bad input, usage errors
included: one line on stderr, exit code 2, nothing written. A feature that is not built says so
and exits 1.

An earlier results folder is passed with `--from DIR` (repeatable in `screen` and `compare`).
List options are repeated (`--dose 1 --dose 5`) or comma-separated (`--dose 1,5`). A contrast
may be given in any spelling (`a>b`, `a-b`, `a - b`, `1*a - 1*b` are one contrast). Every
results folder holds `manifest.json` and `summary.json` (the printed summary, machine-readable).
"""


def main() -> None:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    parts = [INTRO]
    for cmd in COMMANDS:
        text = subprocess.run([sys.executable, "-m", "topocli.cli", *cmd.split(), "--help"],
                              capture_output=True, text=True, env=env).stdout
        parts.append(f"## topo {cmd}\n\n```text\n{text.rstrip()}\n```\n")
    Path(__file__).with_name("cli.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
