"""End-to-end timing of the README demo: ``topo screen`` with no arguments.

Runs the command twice in fresh subprocesses: first with an empty activation cache (cold: the
model runs on every stimulus of the shipped categories and of the known localizers), then again
(warm: activations and known-localizer maps come from the cache). Prints the wall time of each
run, the stages recorded in the manifest and the ratio to the 120 s goal for a newcomer's CPU.

Usage: ``python bench/screen_e2e.py [--keep DIR] [-- extra topo screen options]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 120.0


def run(out: Path, cache: Path, extra: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "TOPO_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "topocli.cli", "screen", "--out", str(out), "--overwrite", "-q"]
    t0 = time.perf_counter()
    subprocess.run(cmd + extra, env=env, check=True)
    wall = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    return wall, manifest["extra"].get("timings_s") or {}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, help="write the results folder here")
    args = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    with tempfile.TemporaryDirectory(prefix="topo-screen-bench-") as tmp:
        out = args.keep or Path(tmp) / "screen"
        cache = Path(tmp) / "cache"
        print(f"cpus: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.1f}")
        for label in ("cold cache", "warm cache"):
            wall, stages = run(out, cache, extra)
            shown = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
            print(
                f"{label}: {wall:.1f} s wall ({wall / GOAL_S:.2f} x the {GOAL_S:.0f} s goal); "
                f"stages: {shown}"
            )
        print((out / "categories.csv").read_text().splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
