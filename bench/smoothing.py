"""Benchmark: topo's sheet smoothing (float64, normalised) against scipy's gaussian_filter.

The stack is ``--maps`` maps on a ``--rows x --cols`` sheet (default 100 maps, 304 x 512: the
Topo-Omni sheet). These calls run on the same float32 stack, alternating, ``--repeats`` times
(medians printed):

- ``topo 1 thread``: :func:`topocli.stats.smoothing.smooth_units` with ``threads=1``, the CPU
  path (float64 banded BLAS products, kernel truncated at 3 sigma, normalised convolution
  inside each area);
- ``topo all cores``: the same with its default ``threads`` (every core the process may use;
  each thread smooths its own maps);
- ``scipy nearest``: ``scipy.ndimage.gaussian_filter(stack, (0, s, s), mode="nearest")`` at its
  default truncation (4 sigma), what the peers call (single-threaded); its edges differ, so only
  timing is compared;
- ``correlate1d``: the same normalised convolution as topo's from scipy's own C loop
  (``correlate1d`` along each axis, ``mode="constant"``, the mask pass shared by all maps, then
  divided), one of the options measured for topo's CPU path;
- ``topo torch`` (``--torch``): the old CPU path, ``conv2d`` (float32).

Accuracy: topo's path against a float64 reference of the same normalised convolution (the
``correlate1d`` one), as the largest absolute difference and that over the largest absolute
reference value (goal <= 1e-12 relative).
CPU time is printed beside wall time because the machine may be shared.

Usage: ``python bench/smoothing.py [--fwhm 4 8] [--maps 100] [--repeats 5] [--quick] [--torch]``.
Run with ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` so that only topo's own threads (the
``all cores`` call) use more than one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from topocli.sheet import AreaSpec, Sheet  # noqa: E402
from topocli.stats.smoothing import (  # noqa: E402
    fwhm_to_sigma,
    gaussian_kernel1d,
    smooth_units,
    thread_count,
)


def alternate(calls: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall s, CPU s) of each call, the calls run in turn ``repeats`` times."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: tuple(np.median(np.array(v), axis=0)) for name, v in times.items()}


def reference(x: np.ndarray, sheet: Sheet, fwhm: float) -> np.ndarray:
    """Float64 normalised convolution of a one-area rectangular sheet via correlate1d."""
    k = gaussian_kernel1d(fwhm_to_sigma(fwhm, sheet.mm_per_unit), max_radius=max(sheet.grid_shape))
    grids = x.astype(np.float64).reshape((-1, *sheet.grid_shape))

    def sep(a: np.ndarray) -> np.ndarray:
        a = ndimage.correlate1d(a, k, axis=-1, mode="constant")
        return ndimage.correlate1d(a, k, axis=-2, mode="constant")

    den = sep(np.ones((1, *sheet.grid_shape)))  # one mask pass, shared by every map
    return (sep(grids) / den).reshape(x.shape)


def main() -> None:
    """Parse the options, run the calls, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=304)
    parser.add_argument("--cols", type=int, default=512)
    parser.add_argument("--maps", type=int, default=100)
    parser.add_argument("--fwhm", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="30 maps, 3 repeats")
    parser.add_argument("--torch", action="store_true", help="also time the old conv2d path")
    args = parser.parse_args()
    if args.quick:
        args.maps, args.repeats = 30, 3
    sheet = Sheet.build([AreaSpec("sheet", args.rows * args.cols)], "stacked", width=args.cols)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.maps, sheet.n_units), dtype=np.float32)
    stack = x.reshape(args.maps, args.rows, args.cols)
    cores = thread_count(None)
    print(
        f"{args.maps} maps on a {args.rows} x {args.cols} sheet, medians of {args.repeats}; "
        f"'all cores' = {cores} threads; ratios are scipy nearest / topo, wall (CPU)"
    )
    print(
        "| FWHM mm | topo 1 thread s (CPU s) | topo all cores s (CPU s) | scipy nearest s (CPU s) "
        "| correlate1d s (CPU s) | scipy / topo 1 thread | scipy / topo all cores "
        "| correlate1d / topo 1 thread | max abs (rel) diff vs float64 reference |"
        + (" topo torch s |" if args.torch else "")
    )
    print("| --- " * (9 + args.torch) + "|")
    for fwhm in args.fwhm:
        sigma = fwhm_to_sigma(fwhm, sheet.mm_per_unit)
        calls = {
            "one": lambda f=fwhm: smooth_units(x, sheet, f, backend="numpy", threads=1),
            "all": lambda f=fwhm: smooth_units(x, sheet, f, backend="numpy"),
            "scipy": lambda s=sigma: ndimage.gaussian_filter(stack, (0, s, s), mode="nearest"),
            "corr": lambda f=fwhm: reference(x, sheet, f),
        }
        if args.torch:
            calls["torch"] = lambda f=fwhm: smooth_units(x, sheet, f, backend="torch")
        med = alternate(calls, args.repeats)
        x64 = x.astype(np.float64)
        want = reference(x64, sheet, fwhm)
        got = smooth_units(x64, sheet, fwhm)
        diff = np.abs(got - want)
        # relative to the map's scale: elementwise ratios blow up where a smoothed value
        # crosses zero (4e-16 off a value of 1e-8)
        rel = float(diff.max() / np.abs(want).max())
        (ow, oc), (aw, ac), (sw, sc), (cw, cc) = (med[k] for k in ("one", "all", "scipy", "corr"))
        row = (
            f"| {fwhm:g} | {ow:.3f} ({oc:.3f}) | {aw:.3f} ({ac:.3f}) | {sw:.3f} ({sc:.3f}) "
            f"| {cw:.3f} ({cc:.3f}) | {sw / ow:.2f} ({sc / oc:.2f}) "
            f"| {sw / aw:.2f} ({sc / ac:.2f}) | {cw / ow:.2f} ({cc / oc:.2f}) "
            f"| {float(diff.max()):.1e} ({rel:.1e}) |"
        )
        if args.torch:
            row += f" {med['torch'][0]:.3f} |"
        print(row)


if __name__ == "__main__":
    main()
