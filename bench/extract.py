"""Extraction overhead and memory, measured in one run.

1. time of topo's extraction (hooks + adaptors + pooling + streaming statistics) divided by the
   time of bare forward passes of the same backbone on the same prepared batches (goal <= 1.05);
2. peak RSS of extracting 10x the stimuli divided by 1x (goal <= 1.2), each in a fresh process.

    python bench/extract.py [--stimuli 512] [--batch-size 32] [--repeats 3] [--model minilm-control]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = (
    "the a river city quiet music old red child runs sings bright under over slowly market "
    "window teacher storm green garden reads builds yesterday mountain bread paper ocean light"
).split()


def write_stimuli(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for cond in ("a", "b"):
        lines = [
            " ".join(rng.choice(WORDS, size=rng.integers(6, 14))) + f" {i}." for i in range(n // 2)
        ]
        (root / cond).mkdir(parents=True, exist_ok=True)
        (root / cond / "s.txt").write_text("\n".join(lines) + "\n")
    return root


def overhead(model_spec: str, n: int, batch_size: int, repeats: int) -> dict:
    import torch

    from topocli.activations.extraction import batch_order, extract, prepare_batch
    from topocli.models.registry import resolve_model
    from topocli.stats.suffstats import SufficientStats
    from topocli.stimuli.stimulus_set import load_stimulus_set

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        stim = load_stimulus_set(write_stimuli(Path(tmp), n))
        model = resolve_model(model_spec)
        batches = [
            prepare_batch(model, [stim.stimuli[i] for i in rows], rows)
            for rows in batch_order(stim, batch_size)
        ]
        bare, ours, full = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            with torch.no_grad(), model.bypass():
                for b in batches:
                    model.forward(b.inputs, b.modality)
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            stats = SufficientStats(stim.n_groups, model.sheet.n_units)
            groups = stim.group_index()
            with torch.no_grad():
                for b in batches:
                    _, acts = model.record(b.inputs, b.modality, "mean", b.masks)
                    stats.update(acts, groups[b.indices])
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            extract(model, stim, batch_size=batch_size)
            full.append(time.perf_counter() - t0)
    return {
        "bare_s": min(bare),
        "topo_s": min(ours),
        "ratio": min(ours) / min(bare),
        "full_s": min(full),
    }


def rss_child(model_spec: str, n: int, batch_size: int) -> None:
    import resource

    from topocli.activations.extraction import extract
    from topocli.models.registry import resolve_model
    from topocli.stimuli.stimulus_set import load_stimulus_set

    with tempfile.TemporaryDirectory() as tmp:
        stim = load_stimulus_set(write_stimuli(Path(tmp), n))
        model = resolve_model(model_spec)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        extract(model, stim, batch_size=batch_size)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": n, "peak_kb": peak, "after_load_kb": base}))


def peak_rss(model_spec: str, n: int, batch_size: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--rss-child",
            str(n),
            "--model",
            model_spec,
            "--batch-size",
            str(batch_size),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stimuli", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="minilm-control")
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.model, args.rss_child, args.batch_size)
        return
    t = overhead(args.model, args.stimuli, args.batch_size, args.repeats)
    print(
        f"extraction {t['topo_s']:.3f} s vs bare forward {t['bare_s']:.3f} s on "
        f"{args.stimuli} stimuli: ratio {t['ratio']:.3f} (goal <= 1.05)"
    )
    one = peak_rss(args.model, args.stimuli, args.batch_size)
    ten = peak_rss(args.model, 10 * args.stimuli, args.batch_size)
    print(
        f"peak RSS {one['peak_kb'] / 1024:.0f} MB for {args.stimuli} stimuli, "
        f"{ten['peak_kb'] / 1024:.0f} MB for {10 * args.stimuli}: ratio "
        f"{ten['peak_kb'] / one['peak_kb']:.3f} (goal <= 1.2)"
    )


if __name__ == "__main__":
    main()
