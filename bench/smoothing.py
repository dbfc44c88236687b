"""Benchmark: topo's sheet smoothing (float64, normalised) against scipy's gaussian_filter.

The stack is ``--maps`` maps on a ``--rows x --cols`` sheet (default 100 maps, 304 x 512: the
Topo-Omni sheet). These calls run on the same float32 stack, alternating, ``--repeats`` times
(medians printed):

- ``topo 1 thread``: :func:`topocli.stats.smoothing.smooth_units` with ``threads=1`` on its
  default CPU backend (:func:`~topocli.stats.smoothing.cpu_backend`, printed: ``numba``, the
  compiled direct separable filter, when numba is installed, else ``numpy``), kernel truncated
  at 3 sigma, normalised convolution inside each area;
- ``topo all cores``: the same with its default ``threads`` (every core the process may use;
  each thread smooths its own maps);
- ``BLAS 1 thread``: ``backend="numpy"``, ``threads=1`` (float64 banded BLAS products), the
  path taken without numba;
- ``scipy nearest``: ``scipy.ndimage.gaussian_filter(stack, (0, s, s), mode="nearest")`` at its
  default truncation (4 sigma), what the peers call (single-threaded); its edges differ, so only
  timing is compared;
- ``correlate1d`` (``--correlate1d``): the same normalised convolution as topo's from scipy's
  own C loop (``correlate1d`` along each axis, ``mode="constant"``, the mask pass shared by all
  maps, then divided), one of the options measured for topo's CPU path;
- ``topo torch`` (``--torch``): the old CPU path, ``conv2d`` (float32).

Accuracy: each CPU backend on float64 input against a float64 reference of the same normalised
convolution (built from ``correlate1d``), as the largest absolute difference over the largest
absolute reference value (goal <= 1e-12). CPU time is printed beside wall time because the
machine may be shared.

``--first-call`` instead times, in fresh processes, the import and the first call of the numba
backend with an empty numba cache (``NUMBA_CACHE_DIR`` a new folder: it compiles) and again
with that cache filled (it loads), for float32 and float64 maps.

Usage: ``python bench/smoothing.py [--fwhm 4 8] [--maps 100] [--repeats 5] [--quick] [--torch]
[--correlate1d] [--first-call]``. Run with ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` so that
only topo's own threads (the ``all cores`` call) use more than one core.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from topocli.sheet import AreaSpec, Sheet  # noqa: E402
from topocli.stats.smoothing import (  # noqa: E402
    cpu_backend,
    fwhm_to_sigma,
    gaussian_kernel1d,
    smooth_units,
    thread_count,
)

ROOT = Path(__file__).resolve().parents[1]


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


# the first call in a fresh process, timed by that process (import, then compile or cache load)
_FIRST_CALL = """
import sys, time
t0 = time.perf_counter()
import numpy as np
from topocli.sheet import AreaSpec, Sheet
from topocli.stats.smoothing import cpu_backend, smooth_units
assert cpu_backend() == "numba", cpu_backend()
t1 = time.perf_counter()
sheet = Sheet.build([AreaSpec("sheet", 64 * 64)], "stacked", width=64)
x = np.ones((2, sheet.n_units), dtype=sys.argv[1])
smooth_units(x, sheet, 4.0, backend="numba")
t2 = time.perf_counter()
smooth_units(x, sheet, 4.0, backend="numba")
print(t1 - t0, t2 - t1, time.perf_counter() - t2)
"""


def first_calls() -> None:
    """Time import and first numba call in fresh processes, empty cache then filled cache."""
    print("| numba cache | maps dtype | import s | first call s | second call s |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        for state in ("empty (compiles)", "filled (loads)"):
            for dtype in ("float32", "float64"):
                run = subprocess.run(
                    [sys.executable, "-c", _FIRST_CALL, dtype],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                imp, first, second = (float(v) for v in run.stdout.split())
                print(f"| {state} | {dtype} | {imp:.2f} | {first:.2f} | {second:.4f} |")


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
    parser.add_argument("--correlate1d", action="store_true", help="also time correlate1d")
    parser.add_argument("--first-call", action="store_true", help="numba compile / cache load")
    args = parser.parse_args()
    if args.first_call:
        first_calls()
        return
    if args.quick:
        args.maps, args.repeats = 30, 3
    sheet = Sheet.build([AreaSpec("sheet", args.rows * args.cols)], "stacked", width=args.cols)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.maps, sheet.n_units), dtype=np.float32)
    stack = x.reshape(args.maps, args.rows, args.cols)
    cores, backend = thread_count(None), cpu_backend()
    smooth_units(x[:1], sheet, 4.0)  # numba: compile or load from its cache before timing
    extra = [name for name, on in (("correlate1d", args.correlate1d), ("torch", args.torch)) if on]
    print(
        f"{args.maps} maps on a {args.rows} x {args.cols} sheet, medians of {args.repeats}; "
        f"topo's CPU backend: {backend}; 'all cores' = {cores} threads; ratios are "
        "scipy nearest / topo, wall (CPU)"
    )
    print(
        f"| FWHM mm | topo ({backend}) 1 thread s (CPU s) | topo ({backend}) all cores s (CPU s) "
        "| BLAS 1 thread s (CPU s) | scipy nearest s (CPU s) | scipy / topo 1 thread "
        "| scipy / topo all cores | scipy / BLAS 1 thread | max rel diff vs float64 reference: "
        f"{backend}, BLAS |" + "".join(f" {name} s (CPU s) |" for name in extra)
    )
    print("| --- " * (9 + len(extra)) + "|")
    for fwhm in args.fwhm:
        sigma = fwhm_to_sigma(fwhm, sheet.mm_per_unit)
        calls = {
            "one": lambda f=fwhm: smooth_units(x, sheet, f, threads=1),
            "all": lambda f=fwhm: smooth_units(x, sheet, f),
            "blas": lambda f=fwhm: smooth_units(x, sheet, f, backend="numpy", threads=1),
            "scipy": lambda s=sigma: ndimage.gaussian_filter(stack, (0, s, s), mode="nearest"),
        }
        if args.correlate1d:
            calls["correlate1d"] = lambda f=fwhm: reference(x, sheet, f)
        if args.torch:
            calls["torch"] = lambda f=fwhm: smooth_units(x, sheet, f, backend="torch")
        med = alternate(calls, args.repeats)
        x64 = x.astype(np.float64)
        want = reference(x64, sheet, fwhm)
        # relative to the map's scale: elementwise ratios blow up where a smoothed value
        # crosses zero (4e-16 off a value of 1e-8)
        scale = np.abs(want).max()
        rel = [
            float(np.abs(smooth_units(x64, sheet, fwhm, backend=b) - want).max() / scale)
            for b in (backend, "numpy")
        ]
        (ow, oc), (aw, ac), (bw, bc), (sw, sc) = (med[k] for k in ("one", "all", "blas", "scipy"))
        row = (
            f"| {fwhm:g} | {ow:.3f} ({oc:.3f}) | {aw:.3f} ({ac:.3f}) | {bw:.3f} ({bc:.3f}) "
            f"| {sw:.3f} ({sc:.3f}) | {sw / ow:.2f} ({sc / oc:.2f}) "
            f"| {sw / aw:.2f} ({sc / ac:.2f}) | {sw / bw:.2f} ({sc / bc:.2f}) "
            f"| {rel[0]:.1e}, {rel[1]:.1e} |"
        )
        row += "".join(f" {med[name][0]:.3f} ({med[name][1]:.3f}) |" for name in extra)
        print(row)


if __name__ == "__main__":
    main()
