"""Benchmark: topo's sheet smoothing (float64, normalised) against scipy's gaussian_filter.

The stack is ``--maps`` maps on a ``--rows x --cols`` sheet (default 100 maps, 304 x 512: the
Topo-Omni sheet). Three calls run on the same float32 stack, alternating, ``--repeats`` times
(medians printed):

- ``topo numpy``: :func:`topocli.stats.smoothing.smooth_units`, the CPU path (float64, kernel
  truncated at 3 sigma, normalised convolution inside each area);
- ``topo torch``: the same function forced onto the torch ``conv2d`` path (the old CPU path);
- ``scipy nearest``: ``scipy.ndimage.gaussian_filter(stack, (0, s, s), mode="nearest")`` at its
  default truncation (4 sigma), what the peers call; its edges differ, so only timing is compared.

Accuracy: topo's numpy path against a float64 reference of the same normalised convolution
(``scipy.ndimage.correlate1d`` along each axis, zero padded, on data and on the mask, then divided),
as the max absolute difference (goal ~1e-12); CPU time is printed beside wall time because the
machine may be shared.

Usage: ``python bench/smoothing.py [--fwhm 4 8] [--maps 100] [--repeats 5] [--quick]``.
Set ``OPENBLAS_NUM_THREADS=1`` to compare one thread with one thread (scipy.ndimage is
single-threaded).
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
from topocli.stats.smoothing import fwhm_to_sigma, gaussian_kernel1d, smooth_units  # noqa: E402


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

    den = sep(np.ones((1, *sheet.grid_shape)))
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
    args = parser.parse_args()
    if args.quick:
        args.maps, args.repeats = 30, 3
    sheet = Sheet.build([AreaSpec("sheet", args.rows * args.cols)], "stacked", width=args.cols)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.maps, sheet.n_units), dtype=np.float32)
    stack = x.reshape(args.maps, args.rows, args.cols)
    print(f"{args.maps} maps on a {args.rows} x {args.cols} sheet, medians of {args.repeats}")
    print(
        "| FWHM mm | topo numpy s (CPU s) | topo torch s | scipy nearest s (CPU s) "
        "| scipy / topo wall (CPU) | torch / numpy | max abs diff vs float64 reference |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for fwhm in args.fwhm:
        sigma = fwhm_to_sigma(fwhm, sheet.mm_per_unit)
        calls = {
            "numpy": lambda f=fwhm: smooth_units(x, sheet, f, backend="numpy"),
            "torch": lambda f=fwhm: smooth_units(x, sheet, f, backend="torch"),
            "scipy": lambda s=sigma: ndimage.gaussian_filter(stack, (0, s, s), mode="nearest"),
        }
        med = alternate(calls, args.repeats)
        x64 = x.astype(np.float64)
        diff = float(np.abs(smooth_units(x64, sheet, fwhm) - reference(x64, sheet, fwhm)).max())
        (nw, nc), (tw, _), (sw, sc) = med["numpy"], med["torch"], med["scipy"]
        print(
            f"| {fwhm:g} | {nw:.3f} ({nc:.3f}) | {tw:.3f} | {sw:.3f} ({sc:.3f}) "
            f"| {sw / nw:.2f} ({sc / nc:.2f}) | {tw / nw:.2f} | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
