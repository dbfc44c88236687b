"""Training step time with the spatial loss / without it, on the embedded MiniLM (one run).

python bench/train_step.py [--steps 10] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from topocli.activations.extraction import prepare_batch
from topocli.models.registry import CONTROL_MODEL, resolve_model
from topocli.stimuli.stimulus_set import load_stimulus_set
from topocli.training.distillation import task_loss
from topocli.training.loop import trainable_setup
from topocli.training.spatial_loss import build_neighbourhood_pool, spatial_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data", default="corpus/train")
    args = ap.parse_args()
    model = resolve_model(CONTROL_MODEL, adaptor_noise=1e-3)
    params = trainable_setup(model)
    opt = torch.optim.AdamW(params, lr=1e-3)
    data = load_stimulus_set(args.data)
    pool = build_neighbourhood_pool(model.sheet, 5.0)
    gen = torch.Generator().manual_seed(0)
    batches = [
        prepare_batch(model, data.stimuli[i * args.batch_size : (i + 1) * args.batch_size], None)
        for i in range(args.steps)
    ]
    times = {}
    for with_spatial in (False, True) * 3:
        t0 = time.perf_counter()
        for b in batches:
            opt.zero_grad()
            with torch.no_grad(), model.bypass():
                teacher = model.forward(b.inputs, b.modality)
            student, acts = model.record(b.inputs, b.modality, "mean", b.masks)
            loss = task_loss(student, teacher, b.masks)
            if with_spatial:
                loss = loss + 20 * spatial_loss(acts, pool, 32, gen)
            loss.backward()
            opt.step()
        times[with_spatial] = min(times.get(with_spatial, 1e9), time.perf_counter() - t0)
    print(
        f"{args.steps} steps: with spatial loss {times[True]:.2f} s, without "
        f"{times[False]:.2f} s: ratio {times[True] / times[False]:.3f} (goal <= 1.2)"
    )


if __name__ == "__main__":
    main()
