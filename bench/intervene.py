"""``topo intervene``: wall time against its forward-pass floor, measured in the same run.

The floor is the bare forward time of the measured stimuli (the odd half, the run's batches
and rows per forward, no edit) times the number of perturbed passes the run actually needed,
each through the blocks it actually runs (with prefix reuse: the blocks after the first
perturbed area; without: all of them). ``wall / floor`` near 1 means that probe fits, read-out
evaluation, edits and statistics are nearly free.

Usage (LOC from ``topo localize --model minilm -l language --out LOC``)::

    python bench/intervene.py --from LOC --n-controls 100            # new defaults
    python bench/intervene.py --from LOC --n-controls 100 --legacy   # h off, no prefix reuse
    python bench/intervene.py --from LOC --n-controls 10 --edits dense,columns  # both, one run

``--legacy`` runs every draw through the full forward (the method before sequential stopping
and prefix reuse); the statistics of both runs use the same seeded draws. ``--edits`` runs the
command once per edit path, in that order, in one process: ``columns`` (edits applied to the
edited units only, ``X + (Z'_S - Z_S) W^+_S``, the default) and ``dense`` (``Z = X W``, edit,
``Z' W^+``: the path before it); it prints each run's ratios to the one floor and the largest
difference of their statistics.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


class _Ctx:
    """A Context that keeps the model it loads (to time bare forwards in the same process)."""

    def __init__(self, out: Path, batch_size: int, seed: int, column_edits: bool = True) -> None:
        from topocli.cli.context import Context

        self.inner = Context(out=out, overwrite=True, quiet=True, batch_size=batch_size, seed=seed)
        self.model = None
        self.column_edits = column_edits

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        if name in ("inner", "model", "column_edits"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)

    def load_model(self, **kw):
        self.model = self.inner.load_model(**kw)
        for hook_point in self.model.hook_points.values():
            hook_point.column_edits = self.column_edits
        return self.model


def bare_seconds(model, prep, first_area: int | None, reps: int = 3) -> float:
    """Median seconds of one unperturbed perturbation-equivalent over all batches.

    Each batch runs at the run's geometry (``rows_per_forward`` copies stacked), divided by the
    copies; with ``first_area`` the blocks up to it replay the recorded prefix.
    """
    from topocli.models.prefix import PrefixReuse
    from topocli.workflows.intervene.readouts import _forward, rows_per_forward

    times, cpus = [], []
    for _ in range(reps):
        total = cpu = 0.0
        reuse = PrefixReuse(model, [first_area]) if first_area is not None else None
        with torch.no_grad():
            for i, batch in enumerate(prep.batches):
                copies = rows_per_forward(model, batch, prep)
                if reuse is not None:  # the recording pass, not timed
                    with reuse.pass_for(i, len(batch.indices), copies):
                        _forward(model, batch, copies, prep)
                start, start_cpu = time.perf_counter(), time.process_time()
                if reuse is not None:
                    with reuse.pass_for(i, len(batch.indices), copies):
                        _forward(model, batch, copies, prep)
                else:
                    _forward(model, batch, copies, prep)
                total += (time.perf_counter() - start) / copies
                cpu += (time.process_time() - start_cpu) / copies
        times.append(total)
        cpus.append(cpu)
    return statistics.median(times), statistics.median(cpus)


STAT_COLUMNS = ["target_value", "control_mean", "control_sd", "p_permutation", "effect_size_z"]


def run_once(args: argparse.Namespace, column_edits: bool) -> tuple[_Ctx, Path, float, float]:
    """One ``topo intervene`` run; returns (context, results folder, wall s, CPU s)."""
    from topocli.workflows.intervene.run import run_intervene

    out = Path(tempfile.mkdtemp()) / "iv"
    ctx = _Ctx(out, args.batch_size, args.seed, column_edits)
    h = 0 if args.legacy else args.sequential_h
    started, started_cpu = time.perf_counter(), time.process_time()
    run_intervene(
        ctx,
        args.src,
        contrast=args.contrast,
        dose=None if args.percentile_band else args.dose,
        percentile_band=args.percentile_band,
        readout=args.readout,
        controls=args.controls,
        n_controls=args.n_controls,
        sequential_h=h,
        prefix_reuse=not args.legacy,
    )
    return ctx, out, time.perf_counter() - started, time.process_time() - started_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="src", required=True, type=Path)
    parser.add_argument("--contrast", default="sentences-nonwords")
    parser.add_argument("--dose", default="1,5,10")
    parser.add_argument(
        "--percentile-band", default=None, help="e.g. 45-55: a null-like target (no --dose)"
    )
    parser.add_argument("--readout", default="probe,fidelity")
    parser.add_argument("--controls", default="random,distance-matched")
    parser.add_argument("--n-controls", type=int, default=100)
    parser.add_argument("--sequential-h", type=int, default=10)
    parser.add_argument("--legacy", action="store_true", help="h off and no prefix reuse")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=3, help="bare-forward repetitions (median)")
    parser.add_argument(
        "--edits", default="columns", help="edit paths to run, in order: columns, dense or both"
    )
    args = parser.parse_args()

    from topocli.workflows.intervene.readouts import prepare_stimuli
    from topocli.workflows.intervene.source import read_source, source_stimuli

    paths = [p.strip() for p in args.edits.split(",") if p.strip()]
    if not paths or set(paths) - {"columns", "dense"}:
        parser.error("--edits takes columns, dense or both (comma-separated)")
    runs = {}
    for name in paths:
        runs[name] = run_once(args, column_edits=name == "columns")
    ctx, out, wall, _ = runs[paths[0]]
    manifest = json.loads((out / "manifest.json").read_text())
    passes = manifest["extra"]["passes"]
    model = ctx.model
    stim, _ = source_stimuli(read_source(args.src))
    readouts = manifest["parameters"]["readouts"]
    test = np.flatnonzero(stim.split_index() == 1)
    prep = prepare_stimuli(model, stim, args.batch_size, readouts, test)
    targets = pd.read_csv(out / "targets.csv")
    area_index = {name: k for k, name in enumerate(model.sheet.area_names)}
    bare: dict[int | None, tuple[float, float]] = {None: bare_seconds(model, prep, None, args.reps)}
    full, full_cpu = bare[None]
    floor = floor_cpu = 0.0
    for dose, info in passes["per_dose"].items():
        areas = targets[targets["dose"] == float(dose)]["area"].map(area_index)
        first = int(areas.min()) if info["prefix_replayed_blocks"] else None
        if first not in bare:
            bare[first] = bare_seconds(model, prep, first, args.reps)
        floor += bare[first][0] * info["perturbations_evaluated"]
        floor_cpu += bare[first][1] * info["perturbations_evaluated"]
    print(f"model forward (full) per perturbation: {full:.3f} s on {len(test)} stimuli")
    print(
        f"perturbations evaluated: {passes['perturbations_evaluated']} of "
        f"{passes['perturbations_drawn']} drawn ({'legacy' if args.legacy else 'new'})"
    )
    used = {d: i["draws_used"] for d, i in passes["per_dose"].items()}
    print(f"draws used per dose: {json.dumps(used)}")
    print(
        f"expected draws per kind under the null (one statistic): "
        f"{passes['expected_draws_per_kind_under_null_one_statistic']:.1f}"
    )
    print(f"floor: {floor:.1f} s (CPU {floor_cpu:.1f} s; full forward CPU {full_cpu:.3f} s)")
    print(
        "| edits | command wall s (CPU s) | perturbed step s (CPU s) | step / floor wall (CPU) "
        "| command wall / floor |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, (_ctx, folder, run_wall, run_cpu) in runs.items():
        sec = json.loads((folder / "manifest.json").read_text())["extra"]["passes"]["seconds"]
        step, step_cpu = sec["perturbed_passes_s"], sec["perturbed_passes_cpu_s"]
        print(
            f"| {name} | {run_wall:.1f} ({run_cpu:.1f}) | {step:.1f} ({step_cpu:.1f}) "
            f"| {step / floor:.3f} ({step_cpu / floor_cpu:.3f}) | {run_wall / floor:.3f} |"
        )
        print(f"  seconds by step ({name}): {sec}")
    if len(runs) > 1:
        tables = {n: pd.read_csv(r[1] / "stats.csv") for n, r in runs.items()}
        a, b = (tables[n][STAT_COLUMNS].to_numpy(float) for n in paths[:2])
        diff = np.abs(a - b)
        rel = diff / np.maximum(np.abs(b), 1e-300)
        same_p = np.array_equal(
            a[:, STAT_COLUMNS.index("p_permutation")], b[:, STAT_COLUMNS.index("p_permutation")]
        )
        print(
            f"statistics {paths[0]} vs {paths[1]}: max abs diff {np.nanmax(diff):.2e}, "
            f"max rel diff {np.nanmax(rel):.2e}, p identical: {same_p}"
        )
    print(
        f"full-forward floor of all drawn perturbations: "
        f"{full * passes['perturbations_drawn']:.1f} s"
    )


if __name__ == "__main__":
    main()
