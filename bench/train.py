"""Benchmarks for ``topo train`` (issue 3); every ratio is measured in the same run.

Part 1 (below): the vectorised spatial loss
(:func:`topocli.training.spatial_loss.spatial_loss`) against
per-neighbourhood Python loops on the same activations and the same centres:

* ``numpy loop``: :func:`topocli.training.spatial_loss.spatial_loss_reference`, the formula written
  directly (``np.corrcoef``, ``np.tril_indices``, one neighbourhood at a time, float64, CPU);
* ``torch loop``: the way the reference implementations do it in training: neighbourhood index
  lists and their distances precomputed, then per neighbourhood ``torch.corrcoef``, the lower
  triangle and a Pearson correlation, forward and backward, on the chosen device.

Goal: vectorised >= 5x faster than the loop, same value. Sheets: (a) the default MiniLM-like sheet
(6 areas x 384 units, stacked, 72 x 32) and (b) a Topo-Omni-sized one (32 vision and 32 audio
areas of 1280 units side by side over 36 language-model areas of 2048 units, width 512: 304 x 512,
155,648 units), radius 20 units, 100 neighbourhoods, batch 32.

Part 2 (the trainer's step time with / without the spatial loss) is added with the trainer; see
the marked place at the end of the file.

Usage::

    python bench/train.py                      # CPU
    python bench/train.py --device cuda        # GPU (the numpy loop still runs on the CPU)
    python bench/train.py --threads 1          # on a shared, busy CPU (avoids OpenMP stalls)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from topocli.sheet import AreaSpec, Sheet  # noqa: E402
from topocli.training.spatial_loss import (  # noqa: E402
    NeighbourhoodPool,
    build_neighbourhood_pool,
    sample_centres,
    spatial_loss,
    spatial_loss_reference,
)


# ---------------------------------------------------------------------- sheets and data
def minilm_sheet() -> Sheet:
    """The default MiniLM-like sheet: six 384-unit layers stacked (72 x 32)."""
    return Sheet.build([AreaSpec(f"layer{i}", 384, "text") for i in range(6)])


def omni_sheet() -> Sheet:
    """A Topo-Omni-sized sheet: vision | audio towers (5 x 256 each) over LM layers (4 x 512)."""
    specs = (
        [AreaSpec(f"vision{i}", 1280, "vision") for i in range(32)]
        + [AreaSpec(f"audio{i}", 1280, "audio") for i in range(32)]
        + [AreaSpec(f"lm{i}", 2048, "text") for i in range(36)]
    )
    return Sheet.build(specs, width=512, stages=[["vision", "audio"], ["text"]])


def activations(sheet: Sheet, n_samples: int, seed: int) -> torch.Tensor:
    """A smooth field over the sheet plus noise (float32): correlations that vary with distance."""
    rng = np.random.default_rng(seed)
    omega = rng.normal(0.0, 1.0 / 6.0, size=(64, 2))
    phase = rng.uniform(0, 2 * np.pi, size=64)
    basis = np.cos(sheet.positions_mm @ omega.T + phase)  # [U, 64]
    field = rng.normal(size=(n_samples, 64)) @ basis.T / 8.0
    return torch.from_numpy((field + rng.normal(size=field.shape)).astype(np.float32))


# ---------------------------------------------------------------------- the torch loop baseline
def loop_setup(pool: NeighbourhoodPool, centres: torch.Tensor, device: torch.device) -> list:
    """Per neighbourhood: unit indices, lower-triangle indices and D pairs (not timed)."""
    idx, valid = pool.neighbourhoods(centres)
    d_full = pool.inv_distance
    hoods = []
    for n in range(centres.numel()):
        cells = torch.nonzero(valid[n]).reshape(-1)
        i, j = torch.tril_indices(cells.numel(), cells.numel(), offset=-1)
        d = d_full[cells][:, cells][i, j]
        hoods.append(tuple(t.to(device) for t in (idx[n, cells], i, j, d)))
    return hoods


def loop_loss(x: torch.Tensor, hoods: list) -> torch.Tensor:
    """The spatial loss one neighbourhood at a time, as the reference implementations do it."""
    losses = []
    for units, i, j, d in hoods:
        r = torch.corrcoef(x[:, units].T)[i, j]
        losses.append(0.5 * (1.0 - torch.corrcoef(torch.stack([r, d]))[0, 1]))
    return torch.stack(losses).mean()


# ---------------------------------------------------------------------- timing
def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, object]:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up, and its last value."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    out = fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_loss(name: str, sheet: Sheet, radius: float, args, device: torch.device) -> dict:
    t0 = time.perf_counter()
    pool = build_neighbourhood_pool(sheet, radius)
    t_pool = time.perf_counter() - t0
    x_cpu = activations(sheet, args.batch, args.seed)
    x = x_cpu.to(device)
    centres = sample_centres(pool, args.neighbourhoods, torch.Generator().manual_seed(args.seed))
    hoods = loop_setup(pool, centres, device)

    def vec_forward() -> float:
        with torch.no_grad():
            return float(spatial_loss(x, pool, centres=centres))

    def vec_step() -> float:
        xg = x.detach().requires_grad_(True)
        loss = spatial_loss(xg, pool, centres=centres)
        loss.backward()
        return loss.detach().item()

    def loop_step() -> float:
        xg = x.detach().requires_grad_(True)
        loss = loop_loss(xg, hoods)
        loss.backward()
        return loss.detach().item()

    t_vec_f, v_vec = timed(vec_forward, args.repeats, device)
    t_vec_fb, _ = timed(vec_step, args.repeats, device)
    t_loop_fb, v_loop = timed(loop_step, max(1, args.repeats // 2), device)
    t0 = time.perf_counter()
    v_ref = spatial_loss_reference(x_cpu.numpy(), pool, centres=centres)
    t_ref = time.perf_counter() - t0
    return {
        "sheet": name,
        "grid": f"{sheet.grid_shape[0]}x{sheet.grid_shape[1]}",
        "units": sheet.n_units,
        "radius": radius,
        "k": pool.stencil_size,
        "mean_size": float(pool.sizes[centres].float().mean()),
        "pool_s": t_pool,
        "ref_s": t_ref,
        "loop_s": t_loop_fb,
        "vec_f_s": t_vec_f,
        "vec_fb_s": t_vec_fb,
        "v_ref": v_ref,
        "v_loop": v_loop,
        "v_vec": v_vec,
    }


def print_loss_table(rows: list[dict], args, device: torch.device) -> None:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"\nspatial loss: vectorised vs per-neighbourhood loops ({where}, "
        f"{torch.get_num_threads()} CPU threads, batch {args.batch}, "
        f"{args.neighbourhoods} neighbourhoods, median of {args.repeats})"
    )
    print(
        f"{'sheet':<8}{'grid':>9}{'units':>8}{'radius':>7}{'k':>6}{'size':>7}"
        f"{'pool s':>8}{'numpy loop s':>13}{'torch loop s':>13}{'vec fwd s':>10}"
        f"{'vec f+b s':>10}{'numpy/vec':>10}{'loop/vec':>9}{'|vec-ref|':>10}"
    )
    for r in rows:
        print(
            f"{r['sheet']:<8}{r['grid']:>9}{r['units']:>8}{r['radius']:>7g}{r['k']:>6}"
            f"{r['mean_size']:>7.0f}{r['pool_s']:>8.2f}{r['ref_s']:>13.3f}{r['loop_s']:>13.3f}"
            f"{r['vec_f_s']:>10.4f}{r['vec_fb_s']:>10.4f}"
            f"{r['ref_s'] / r['vec_f_s']:>9.0f}x{r['loop_s'] / r['vec_fb_s']:>8.0f}x"
            f"{abs(r['v_vec'] - r['v_ref']):>10.1e}"
        )
    print(
        "numpy loop: the formula in numpy, forward only, on the CPU; torch loop: per-neighbourhood "
        "torch.corrcoef,\nforward + backward on the device; numpy/vec compares with the "
        "vectorised forward, loop/vec with its forward + backward.\nsize: mean units per drawn "
        "neighbourhood; k: stencil cells (padded width)."
    )
    for r in rows:
        print(
            f"  {r['sheet']} r={r['radius']:g}: loss vec {r['v_vec']:.7f}  numpy {r['v_ref']:.7f}"
            f"  torch loop {r['v_loop']:.7f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--neighbourhoods", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--sheets", default="minilm:5,minilm:10,omni:20", help="name:radius_units, comma-separated"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sheets = {"minilm": minilm_sheet, "omni": omni_sheet}
    rows = []
    for item in args.sheets.split(","):
        name, _, radius = item.partition(":")
        rows.append(bench_loss(name, sheets[name](), float(radius), args, device))
    print_loss_table(rows, args, device)
    # ==========================================================================================
    # PART 2 (to be added with the trainer, issue 3): trainer step time with / without the spatial
    # loss on the default MiniLM adaptor model (goal <= 1.2), same batch, same run. Call it here
    # and print its ratio after the table above.
    # ==========================================================================================


if __name__ == "__main__":
    main()
