"""Extraction overhead and memory of each real backbone, measured in one run.

For every model (default: the three packaged real backbones, one per modality):

1. time of topo's extraction (hooks + pooling + streaming statistics) divided by the time of
   bare forward passes of the same backbone on the same prepared batches (goal <= 1.05); the two
   alternate, ``--repeats`` times each, and the minimum of each is kept (a shared machine's
   noise only ever adds time);
2. peak RSS of extracting 10x the stimuli divided by 1x (goal <= 1.2), each in a fresh process.

Stimuli are made in code for the model's modality: sentences (text), 96 x 96 colour images
(image), 1-3 s tone-and-noise clips (audio; Whisper still runs its 30 s window).

    python bench/extract.py [--models smollm2,efficientnet-lite0,whisper-tiny] [--stimuli N]
        [--batch-size 16] [--repeats 3]
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


def write_text(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for cond in ("a", "b"):
        lines = [
            " ".join(rng.choice(WORDS, size=rng.integers(6, 14))) + f" {i}." for i in range(n // 2)
        ]
        (root / cond).mkdir(parents=True, exist_ok=True)
        (root / cond / "s.txt").write_text("\n".join(lines) + "\n")
    return root


def write_images(root: Path, n: int, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    for c, cond in enumerate(("a", "b")):
        (root / cond).mkdir(parents=True, exist_ok=True)
        for i in range(n // 2):
            # gratings of random orientation and colour: structure a CNN responds to
            theta, freq = rng.uniform(0, np.pi), rng.uniform(2, 12) * (1 + c)
            wave = np.sin(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy))
            rgb = (0.5 + 0.5 * wave[..., None] * rng.uniform(0.2, 1, 3)) * 255
            Image.fromarray(rgb.astype(np.uint8)).save(root / cond / f"{i}.png")
    return root


def write_audio(root: Path, n: int, seed: int = 0) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    for c, cond in enumerate(("a", "b")):
        (root / cond).mkdir(parents=True, exist_ok=True)
        for i in range(n // 2):
            t = np.arange(int(16000 * rng.uniform(1, 3))) / 16000
            tone = np.sin(2 * np.pi * rng.uniform(200, 2000) * (1 + c) * t)
            wave = 0.3 * tone + 0.05 * rng.standard_normal(t.size)
            sf.write(root / cond / f"{i}.wav", wave.astype(np.float32), 16000)
    return root


WRITERS = {"text": write_text, "image": write_images, "audio": write_audio}


# stimuli per model at 1x: what a shared 2-core machine runs in a few minutes, 10x included
DEFAULT_STIMULI = {"text": 64, "image": 32, "audio": 8}


def write_stimuli(root: Path, n: int, modality: str = "text", seed: int = 0) -> Path:
    return WRITERS[modality](root, n, seed)


def modality_of(model) -> str:
    """The modality a model is benchmarked on: its only one, else text."""
    mods = sorted(model.modalities)
    return mods[0] if len(mods) == 1 else "text"


def overhead(model_spec: str, n: int | None, batch_size: int, repeats: int) -> dict:
    import torch

    from topocli.activations.extraction import batch_order, extract, prepare_batch
    from topocli.models.registry import resolve_model
    from topocli.stats.suffstats import SufficientStats
    from topocli.stimuli.stimulus_set import load_stimulus_set

    model = resolve_model(model_spec)
    modality = modality_of(model)
    n = n or DEFAULT_STIMULI[modality]
    with tempfile.TemporaryDirectory() as tmp:
        stim = load_stimulus_set(write_stimuli(Path(tmp), n, modality))
        batches = [
            prepare_batch(model, [stim.stimuli[i] for i in rows], rows)
            for rows in batch_order(stim, batch_size)
        ]
        groups = stim.group_index()
        # per batch, bare and topo alternate (which goes first alternates too), and each
        # batch keeps its fastest time per side: another process's load hits both sides alike
        bare = np.full((repeats, len(batches)), np.inf)
        ours = np.full((repeats, len(batches)), np.inf)
        with torch.no_grad():
            for b in batches[:1]:  # warm-up: first-call allocations count for neither side
                model.record(b.inputs, b.modality, "mean", b.masks)
            for r in range(repeats):
                stats = SufficientStats(stim.n_groups, model.sheet.n_units)
                for j, b in enumerate(batches):
                    for side in ((0, 1) if (r + j) % 2 == 0 else (1, 0)):
                        t0 = time.perf_counter()
                        if side == 0:
                            with model.bypass():
                                model.forward(b.inputs, b.modality)
                            bare[r, j] = time.perf_counter() - t0
                        else:
                            _, acts = model.record(b.inputs, b.modality, "mean", b.masks)
                            stats.update(acts, groups[b.indices])
                            ours[r, j] = time.perf_counter() - t0
        full = []
        t0 = time.perf_counter()
        extract(model, stim, batch_size=batch_size)
        full.append(time.perf_counter() - t0)
    return {
        "model": model_spec,
        "modality": modality,
        "n": n,
        "units": int(model.sheet.n_units),
        "areas": len(model.blocks),
        "bare_s": float(bare.min(0).sum()),
        "topo_s": float(ours.min(0).sum()),
        "ratio": float(ours.min(0).sum() / bare.min(0).sum()),
        "full_s": min(full),
    }


def rss_child(model_spec: str, n: int, batch_size: int) -> None:
    import resource

    from topocli.activations.extraction import extract
    from topocli.models.registry import resolve_model
    from topocli.stimuli.stimulus_set import load_stimulus_set

    model = resolve_model(model_spec)
    with tempfile.TemporaryDirectory() as tmp:
        stim = load_stimulus_set(write_stimuli(Path(tmp), n, modality_of(model)))
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
    ap.add_argument("--models", default="smollm2,efficientnet-lite0,whisper-tiny")
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--stimuli", type=int, default=None, help="1x stimuli (default per modality)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.model, args.rss_child, args.batch_size)
        return
    rows = []
    for spec in (args.model or args.models).split(","):
        t = overhead(spec, args.stimuli, args.batch_size, args.repeats)
        one = peak_rss(spec, t["n"], args.batch_size)
        ten = peak_rss(spec, 10 * t["n"], args.batch_size)
        t["rss_1x_mb"], t["rss_10x_mb"] = one["peak_kb"] / 1024, ten["peak_kb"] / 1024
        t["rss_ratio"] = ten["peak_kb"] / one["peak_kb"]
        rows.append(t)
        print(json.dumps(t), flush=True)
    print(
        f"\n{'model':20s} {'modality':8s} {'areas':>5s} {'units':>7s} {'N':>4s} {'bare s':>8s} "
        f"{'topo s':>8s} {'ratio':>6s} {'RSS 1x':>8s} {'RSS 10x':>8s} {'ratio':>6s}"
    )
    for t in rows:
        print(
            f"{t['model']:20s} {t['modality']:8s} {t['areas']:5d} {t['units']:7d} {t['n']:4d} "
            f"{t['bare_s']:8.3f} {t['topo_s']:8.3f} {t['ratio']:6.3f} {t['rss_1x_mb']:7.0f}M "
            f"{t['rss_10x_mb']:7.0f}M {t['rss_ratio']:6.3f}"
        )
    print("goals: time ratio <= 1.05, RSS ratio <= 1.2")


if __name__ == "__main__":
    main()
