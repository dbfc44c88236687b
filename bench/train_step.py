"""Training step time with the spatial loss / without it (goal: ratio <= 1.2).

Two benchmarks:

* default: the embedded MiniLM (the original benchmark, ``--steps`` batches per timed run)::

      python bench/train_step.py [--steps 10] [--batch-size 32]

* ``--real``: the packaged real backbones, each built as ``topo train`` builds it (adaptor mode,
  adaptor noise 1e-3, stacked sheet at 1 mm per unit, the default areas, alpha 20, radius 5 mm,
  32 neighbourhoods), one backbone per subprocess so that its peak RSS is its own::

      python bench/train_step.py --real [--models smollm2,efficientnet-lite0,whisper-base]
          [--reps 5] [--threads 1] [--text-batch 8] [--image-batch 4] [--audio-batch 3]

  ``whisper-base`` falls back to ``whisper-tiny`` (said on stderr) when its package is absent.
  Per backbone one batch is prepared once and reused (text: the first lines of corpus/train,
  at most 128 tokens; images: 224 px generated retinotopy patches; audio: 2 s generated tones,
  which Whisper's extractor pads to its 30 s window). Optimizer steps (AdamW, the loop's own
  :func:`topocli.training.loop.step_losses`) alternate, after one warm-up each, between with
  and without the spatial loss, ``--reps`` times. The table gives the medians of the wall
  time and their ratio, the ratio of the medians of the process CPU time (less sensitive to
  other tenants of shared cores), the spatial loss alone (forward + backward, on the batch's
  activations), the adaptor inverse's share of a step (``linalg_inv_ex`` forward and its
  backward, from one step under torch.profiler), the pass-on product ``Z W^+`` (forward and
  backward, timed alone on the step's shapes; ``Z = X W`` costs the same again) as a share of
  the step, the step an adaptor-mode hook passing ``X`` on would take (see
  :func:`_pass_x_step_time`; not what ``topo train`` does today) and the peak RSS of the
  backbone's subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REAL_MODELS = ("smollm2", "efficientnet-lite0", "whisper-base")
FALLBACK = {"whisper-base": "whisper-tiny"}
ALPHA, RADIUS_MM, NEIGHBOURHOODS, MAX_TOKENS = 20.0, 5.0, 32, 128
KINDS = ("with", "without")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="MiniLM: batches per timed run")
    ap.add_argument("--batch-size", type=int, default=32, help="MiniLM batch size")
    ap.add_argument("--data", default="corpus/train", help="text stimuli")
    ap.add_argument("--real", action="store_true", help="time the packaged real backbones")
    ap.add_argument("--models", default=",".join(REAL_MODELS))
    ap.add_argument("--reps", type=int, default=5, help="timed steps per kind (median)")
    ap.add_argument("--text-batch", type=int, default=8)
    ap.add_argument("--image-batch", type=int, default=4)
    ap.add_argument("--audio-batch", type=int, default=3)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="--real: torch threads (1: on shared cores, every multi-threaded op waits for "
        "descheduled threads at its barrier)",
    )
    ap.add_argument("--json", help="--real: also write the rows (every step's time) here")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one backbone, JSON on stdout
    args = ap.parse_args()
    if args.one:
        print(json.dumps(bench_backbone(args.one, args)))
    elif args.real:
        bench_real(args)
    else:
        bench_minilm(args)


# ---------------------------------------------------------------------- the original benchmark
def bench_minilm(args) -> None:
    """The embedded MiniLM control: ``--steps`` batches per run, best of three runs per kind."""
    from topocli.models.inputs import prepare_batch
    from topocli.models.registry import CONTROL_MODEL, resolve_model
    from topocli.stimuli.stimulus_set import load_stimulus_set
    from topocli.training.distillation import task_loss
    from topocli.training.loop import trainable_setup
    from topocli.training.spatial_loss import build_neighbourhood_pool, spatial_loss

    model = resolve_model(CONTROL_MODEL, adaptor_noise=1e-3)
    params = trainable_setup(model)
    opt = torch.optim.AdamW(params, lr=1e-3)
    data = load_stimulus_set(args.data)
    pool = build_neighbourhood_pool(model.sheet, RADIUS_MM)
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
                loss = loss + ALPHA * spatial_loss(acts, pool, NEIGHBOURHOODS, gen)
            if loss.requires_grad:
                loss.backward()
            opt.step()
        times[with_spatial] = min(times.get(with_spatial, 1e9), time.perf_counter() - t0)
    print(
        f"{args.steps} steps: with spatial loss {times[True]:.2f} s, without "
        f"{times[False]:.2f} s: ratio {times[True] / times[False]:.3f} (goal <= 1.2)"
    )


# ---------------------------------------------------------------------- real backbones
def bench_real(args) -> None:
    """One subprocess per backbone; prints the table."""
    rows = []
    t_all = time.perf_counter()
    for name in args.models.split(","):
        name = available(name.strip())
        cmd = [sys.executable, __file__, "--one", name, "--reps", str(args.reps)]
        cmd += ["--threads", str(args.threads)]
        cmd += ["--data", args.data, "--text-batch", str(args.text_batch)]
        cmd += ["--image-batch", str(args.image_batch), "--audio-batch", str(args.audio_batch)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{name} done ({time.perf_counter() - t_all:.0f} s so far)", file=sys.stderr)
    print(
        f"torch {torch.__version__}, {args.threads} torch thread(s), "
        f"{os.cpu_count()} CPU(s); alpha {ALPHA:g}, radius {RADIUS_MM:g} mm, {NEIGHBOURHOODS} "
        f"neighbourhoods; medians of {args.reps} steps of each kind, alternating"
    )
    head = (
        "| backbone | input | units | step with / without (s) | ratio | CPU-time ratio "
        "| spatial loss (s) | inverse share | pass-on share | passing X on (s) | peak RSS (GB) |"
    )
    print(head)
    print("| --- " * 11 + "|")
    for r in rows:
        print(
            f"| {r['model']} | {r['input']} | {r['units']:,} | {r['with']:.3f} / "
            f"{r['without']:.3f} | {r['ratio']:.3f} | {r['cpu_ratio']:.3f} | "
            f"{r['spatial_loss_s']:.4f} | {r['inverse_share']:.1%} | {r['pass_on_share']:.1%} | "
            f"{r['pass_x_step_s']:.3f} ({r['pass_x_speedup']:.1f}x) | {r['peak_rss_gb']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"total {time.perf_counter() - t_all:.0f} s")


def available(name: str) -> str:
    """``name``, or its fallback (said on stderr) when its weights' package is not installed."""
    from topocli.models.packaged import PACKAGED, module_dir

    missing = [p for p in PACKAGED[name].packages if module_dir(p.module) is None]
    if missing and name in FALLBACK:
        print(f"{name}: {missing[0].dist} not installed; using {FALLBACK[name]}", file=sys.stderr)
        return FALLBACK[name]
    return name


def bench_backbone(name: str, args) -> dict:
    """Time steps with / without the spatial loss on one backbone; returns one table row."""
    from topocli.models.packaged import PACKAGED
    from topocli.models.registry import resolve_model
    from topocli.training.loop import trainable_setup
    from topocli.training.spatial_loss import build_neighbourhood_pool

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # what run_train passes for `topo train --model NAME` with default options
    model = resolve_model(
        name, mode="adaptor", adaptor_noise=1e-3, layout="stacked", mm_per_unit=1.0, seed=0
    )
    if "text" in model.processors:
        model.processors["text"].model_max_length = MAX_TOKENS
    model.train(False)
    modality = PACKAGED[name].modality
    with tempfile.TemporaryDirectory() as tmp:
        batch, described = _batch(model, modality, Path(tmp), args)
    pool = build_neighbourhood_pool(model.sheet, RADIUS_MM)
    params = trainable_setup(model)
    optimizer = torch.optim.AdamW(params, lr=1e-5)  # small lr: W stays near I over the steps
    generator = torch.Generator().manual_seed(0)
    times = {k: [] for k in KINDS}
    cpu = {k: [] for k in KINDS}
    for rep in range(args.reps + 1):  # the first round is the warm-up
        for kind in KINDS:
            c0 = time.process_time()
            dt = _timed_step(model, batch, pool, generator, optimizer, kind == "with")
            if rep:
                times[kind].append(dt)
                cpu[kind].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    inverse = _profiled_inverse(model, batch, pool, generator, optimizer)
    pass_on = sum(_pass_on_time(tokens, width) for tokens, width in _hook_shapes(model, batch))
    spatial = _spatial_loss_time(model, batch, pool, generator)
    pass_x = _pass_x_step_time(model, batch, pool, generator)
    return {
        "model": name,
        "input": described,
        "units": model.sheet.n_units,
        "areas": len(model.blocks),
        "with": med["with"],
        "without": med["without"],
        "ratio": med["with"] / med["without"],
        "cpu_with": med_cpu["with"],
        "cpu_without": med_cpu["without"],
        "cpu_ratio": med_cpu["with"] / med_cpu["without"],
        "spatial_loss_s": spatial,
        "pass_x_step_s": pass_x,
        "pass_x_speedup": med["with"] / pass_x,
        "inverse_share": inverse["inverse_s"] / inverse["step_s"],
        "inverse_calls": inverse["calls"],
        "pass_on_share": pass_on / med["with"],
        "times": times,
        "cpu_times": cpu,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def _batch(model, modality: str, folder: Path, args):
    """One prepared batch of ``modality`` stimuli, and its description for the table."""
    from topocli.models.inputs import prepare_batch
    from topocli.stimuli.generators import generate_retinotopy, generate_tonotopy
    from topocli.stimuli.stimulus_set import load_stimulus_set

    if modality == "text":
        data, n = load_stimulus_set(args.data), args.text_batch
    elif modality == "image":
        n = args.image_batch
        generate_retinotopy(folder, [(0.3, 0.5), (0.7, 0.5)], n_per_position=n, size_px=224)
        data = load_stimulus_set(folder)
    else:
        n = args.audio_batch
        generate_tonotopy(folder, [440.0, 1760.0], n_per_frequency=n, duration_s=2.0)
        data = load_stimulus_set(folder)
    batch = prepare_batch(model, data.stimuli[:n], None)
    if modality == "text":
        tokens = int(batch.masks[0].shape[1])
        described = f"batch {n}, text padded to {tokens} tokens"
    elif modality == "image":
        described = f"batch {n}, 224 px images"
    else:
        described = f"batch {n}, 2 s clips (padded to 30 s)"
    return batch, described


def _timed_step(model, batch, pool, generator, optimizer, spatial: bool) -> float:
    """Wall time of one optimizer step, with or without the spatial loss."""
    from topocli.training.loop import step_losses

    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    t_loss, s_loss = step_losses(model, batch, pool, NEIGHBOURHOODS, generator, spatial=spatial)
    loss = t_loss if s_loss is None else t_loss + ALPHA * s_loss
    if loss.requires_grad:  # adaptor mode passes X on: without the spatial loss nothing trains
        loss.backward()
    optimizer.step()
    return time.perf_counter() - t0


INVERSE_EVENTS = ("aten::linalg_inv_ex", "aten::linalg_pinv", "LinalgInvExBackward0")


def _profiled_inverse(model, batch, pool, generator, optimizer) -> dict:
    """One step (with the spatial loss) under torch.profiler: the adaptor inverse's forward
    (``linalg_inv_ex``, or ``linalg_pinv`` for a singular W) and backward time, and the step's.

    Only top-level events count, so nested ones (the LU inside inv_ex) are not counted twice.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step = _timed_step(model, batch, pool, generator, optimizer, True)
    inverse, calls = 0.0, 0
    for ev in prof.events():
        if _is_inverse(ev) and not _inside_inverse(ev):
            inverse += ev.cpu_time_total / 1e6
            calls += "Backward" not in ev.name
    return {"inverse_s": inverse, "step_s": step, "calls": calls}


def _is_inverse(ev) -> bool:
    return any(name in ev.name for name in INVERSE_EVENTS)


def _inside_inverse(ev) -> bool:
    """Whether an ancestor of profiler event ``ev`` is already an inverse event."""
    parent = ev.cpu_parent
    while parent is not None:
        if _is_inverse(parent):
            return True
        parent = parent.cpu_parent
    return False


def _pass_x_step_time(model, batch, pool, generator, reps: int = 3) -> float:
    """Median time of the step an adaptor-mode hook that passes ``X`` on would take.

    ``X_hat = X W W^+ = X`` for any invertible ``W``, so the student's output does not depend
    on the adaptors: the task loss is constant in ``W`` and the spatial loss's gradient reaches
    ``W`` only through the recorded ``Z = pool(X) W``. Such a step is one forward pass without
    gradients through the backbone (recording), the spatial loss and a backward through the
    pooled products only; timed here as the no-grad recording pass plus the spatial loss
    (forward + backward) on its activations. The teacher pass is not needed: the student's
    output is the teacher's, bit for bit.
    """
    from topocli.training.spatial_loss import spatial_loss

    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            _, acts = model.record(batch.inputs, batch.modality, "mean", batch.masks)
        acts.requires_grad_(True)
        (ALPHA * spatial_loss(acts, pool, NEIGHBOURHOODS, generator)).backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def _spatial_loss_time(model, batch, pool, generator, reps: int = 5) -> float:
    """Median time of the spatial loss alone (forward + backward) on this batch's activations."""
    from topocli.training.spatial_loss import spatial_loss

    with torch.no_grad():
        _, acts = model.record(batch.inputs, batch.modality, "mean", batch.masks)
    acts.requires_grad_(True)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        (ALPHA * spatial_loss(acts, pool, NEIGHBOURHOODS, generator)).backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def _hook_shapes(model, batch) -> list[tuple[int, int]]:
    """(tokens, width) that each recorded block's hook multiplies by ``W^+`` in a step."""
    shapes = []

    def grab(k):
        def hook(_m, _i, output):
            x = output[0] if isinstance(output, tuple) else output
            if hasattr(x, "keys"):
                x = next(iter(x.values()))
            if model.blocks[k].layout == "nchw":
                shapes.append((x.shape[0] * x.shape[2] * x.shape[3], x.shape[1]))
            else:
                shapes.append((x.numel() // x.shape[-1], x.shape[-1]))

        return hook

    handles = [b.module.register_forward_hook(grab(k)) for k, b in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            model.forward(batch.inputs, batch.modality)
    finally:
        for h in handles:
            h.remove()
    return shapes


def _pass_on_time(tokens: int, width: int, reps: int = 5) -> float:
    """Median time of ``Z @ P`` forward and backward (both operands need gradients)."""
    z = torch.randn(tokens, width, requires_grad=True)
    p = torch.randn(width, width, requires_grad=True)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        (z @ p).backward(torch.ones(tokens, width))
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


if __name__ == "__main__":
    main()
