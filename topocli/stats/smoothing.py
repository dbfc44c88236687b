"""fMRI-like Gaussian smoothing on the sheet, as normalised convolution inside a mask.

A Gaussian of full width at half maximum ``fwhm_mm`` has ``sigma = fwhm / sqrt(8 ln 2)`` mm, i.e.
``sigma / mm_per_unit`` grid units. The kernel is truncated at 3 sigma (radius
``int(3 * sigma + 0.5)`` cells, as ``scipy.ndimage.gaussian_filter(..., truncate=3)``) and applied
as two separable 1-D convolutions on the sheet grid with zero padding.

Smoothing is *normalised convolution* inside a mask ``m``::

    smoothed = G * (x m) / G * m      (at every unit of the mask)

so cells outside the mask (other areas, empty cells, the grid edge) neither contribute nor pull
the value towards zero. By default the mask is one area at a time, so nothing leaks from one area
into another; ``across_areas=True`` uses every cell holding a unit, which is meaningful only on a
``stacked`` (contiguous) sheet.

Three backends compute the same thing:

- ``"numba"`` (CPU input, when numba is installed): float64 throughout, a compiled direct
  separable filter (``topocli.stats._smoothing_numba``): ``r + 1`` multiplies per output and
  pass, each map read once and smoothed in cache, the mask pass run once per region (or once
  per NaN pattern in :func:`smooth_map`), maps split over ``threads``. About 3x
  ``scipy.ndimage.gaussian_filter`` on one thread (``bench/smoothing.py``). Compiled on first
  use and cached on disk (numba's ``cache=True``: ``__pycache__`` beside the module, else the
  user cache, ``~/.cache/numba``, or ``NUMBA_CACHE_DIR``).
- ``"numpy"`` (CPU input without numba, or forced): float64 throughout. Each 1-D pass is a
  banded Toeplitz product computed block by block with BLAS (a block of ``B`` outputs reads
  ``B + 2 r`` inputs), a few maps at a time so that they stay in cache, the chunks of maps
  split over the cores (``threads``). Exact: the same sums in another order (about 1e-16
  relative). On 100 maps of 304 x 512 it is several times faster than ``conv2d`` on CPU and
  1.1-2x ``scipy.ndimage.gaussian_filter``; see ``bench/smoothing.py`` and
  ``docs/performance.md``. (Direct shifted-add passes in numpy and
  ``scipy.ndimage.correlate1d`` were measured too and are slower.)
- ``"torch"`` (tensors on an accelerator): ``torch.nn.functional.conv2d`` on the input's device,
  in float64 for float64 input and float32 otherwise.

``backend="auto"`` picks numba (else numpy) for numpy arrays and CPU tensors, torch for other
devices; numba and numpy agree to about 1e-16 relative (float64 sums in another order), so the
one that is installed is the one that runs (:func:`cpu_backend` says which). Either way the
input's type, device, shape and floating dtype come back (integers come back float32).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from topocli.errors import TopoInputError, warn
from topocli.sheet import Sheet

TRUNCATE = 3.0
FWHM_PER_SIGMA = math.sqrt(8.0 * math.log(2.0))
BACKENDS = ("auto", "numba", "numpy", "torch")
# Outputs per block of a banded product: small enough that the 2 r halo stays cheap, large
# enough for BLAS to run near its peak. Measured on a 304 x 512 sheet, r = 5 and 10: 32 for the
# pass along the contiguous axis (a (rows x (B + 2r)) @ ((B + 2r) x B) product), 16 for the
# pass across rows (a (B x (B + 2r)) @ ((B + 2r) x cols) product).
_BLOCK_COLS = 32
_BLOCK_ROWS = 16
# OpenBLAS runs a product of m n k <= 4 * 65536 multiply-adds on the calling thread and wakes
# its thread pool above that; these products are too small to gain from it, and a woken pool
# on a loaded machine made them 5-30x slower (measured on 2 shared cores), so each product is
# cut below the threshold.
_SERIAL_MNK = 4 * 65536
# Grid cells (x maps) smoothed at once: ~2 MB of float64, so a chunk and its intermediate stay
# in a core's cache; one 304 x 512 map is one chunk, many small maps share one.
_CACHE_CELLS = 1 << 18
# Chunks of maps go to this many threads at most (the products and ufuncs release the GIL);
# ``None``: the cores this process may run on. Below _THREAD_CELLS cells in all, one thread.
THREADS: int | None = None
_THREAD_CELLS = 1 << 20


def fwhm_to_sigma(fwhm_mm: float, mm_per_unit: float) -> float:
    """Gaussian sigma in grid units for a FWHM in mm.

    Parameters
    ----------
    fwhm_mm : float
        Full width at half maximum in millimetres (>= 0).
    mm_per_unit : float
        Grid spacing of the sheet (> 0).

    Returns
    -------
    float
        ``fwhm_mm / sqrt(8 ln 2) / mm_per_unit``.
    """
    fwhm_mm = float(fwhm_mm)
    if not math.isfinite(fwhm_mm) or fwhm_mm < 0:
        raise TopoInputError(f"FWHM must be a finite number >= 0 mm, got {fwhm_mm}")
    if not mm_per_unit > 0:
        raise TopoInputError(f"mm per unit must be > 0, got {mm_per_unit}")
    return fwhm_mm / FWHM_PER_SIGMA / float(mm_per_unit)


def gaussian_kernel1d(
    sigma: float, truncate: float = TRUNCATE, max_radius: int | None = None
) -> np.ndarray:
    """Normalised 1-D Gaussian weights on ``[-r, r]``, ``r = int(truncate * sigma + 0.5)``.

    Same weights as ``scipy.ndimage.gaussian_filter1d``; ``sigma == 0`` gives ``[1.0]``.
    ``max_radius`` caps ``r`` (a grid of ``n`` cells never needs ``r >= n``: the weights beyond
    it would fall outside the grid, and normalised convolution ignores them), so a huge FWHM
    averages the whole region instead of allocating an enormous kernel.
    """
    reach = truncate * sigma + 0.5
    if max_radius is not None:
        reach = min(reach, float(max_radius))
    radius = int(reach)
    if radius == 0 or sigma <= 0:
        return np.ones(1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _band(kernel: np.ndarray, out_lo: int, out_hi: int, in_lo: int, in_hi: int) -> np.ndarray:
    """Rows ``out_lo:out_hi``, columns ``in_lo:in_hi`` of the zero-padded correlation matrix.

    ``T[i, j] = kernel[j - i + r]`` where ``|j - i| <= r``, else 0; built per block, so no
    ``n x n`` matrix is ever held.
    """
    r = (kernel.size - 1) // 2
    offset = np.arange(in_lo, in_hi)[None, :] - np.arange(out_lo, out_hi)[:, None] + r
    inside = (offset >= 0) & (offset < kernel.size)
    return np.where(inside, kernel[np.clip(offset, 0, kernel.size - 1)], 0.0)


class _Bands(NamedTuple):
    """The blocks of one axis: ``(out_lo, out_hi, in_lo, in_hi, matrix)`` each."""

    blocks: list[tuple[int, int, int, int, np.ndarray]]

    @classmethod
    def of(cls, n: int, kernel: np.ndarray, block: int, transpose: bool = False) -> _Bands:
        r = (kernel.size - 1) // 2
        blocks = []
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            a, b = max(0, lo - r), min(n, hi + r)
            band = _band(kernel, lo, hi, a, b)
            blocks.append((lo, hi, a, b, np.ascontiguousarray(band.T) if transpose else band))
        return cls(blocks)


def _separable(
    grid: np.ndarray,
    rows: _Bands,
    cols: _Bands,
    across: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Zero-padded separable correlation of ``grid[..., h, w]`` (float64) along ``h`` and ``w``.

    Each block is a few BLAS products, each kept under ``_SERIAL_MNK`` multiply-adds; ``grid``
    is kept small by the caller so that it and the intermediate stay in cache. Every product
    is batched per map (numpy's matmul loops over the leading axis), never across maps, so a
    map's result does not depend on which other maps it is smoothed with (the pipeline smooths
    batch by batch and must give the same bits as one call on all stimuli). ``across`` and
    ``out`` (shape ``(maps, h, w)``) are buffers to reuse: a fresh megabyte array costs its page
    faults at every call.
    """
    h, w = grid.shape[-2:]
    stack = grid.reshape(-1, h, w)
    across = np.empty_like(stack) if across is None else across
    for lo, hi, a, b, band_t in cols.blocks:
        step = max(1, _SERIAL_MNK // band_t.size)
        for i in range(0, h, step):
            cut = slice(i, i + step)
            np.matmul(stack[:, cut, a:b], band_t, out=across[:, cut, lo:hi])
    out = np.empty_like(stack) if out is None else out
    for lo, hi, a, b, band in rows.blocks:
        step = max(1, _SERIAL_MNK // band.size)
        for j in range(0, w, step):
            cut = slice(j, j + step)
            np.matmul(band, across[:, a:b, cut], out=out[:, lo:hi, cut])
    return out.reshape(grid.shape)


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """``index`` as a slice when it is a contiguous increasing range (a view, no gather)."""
    if index.size and index[-1] - index[0] == index.size - 1 and np.all(np.diff(index) == 1):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _smooth_region_numpy(
    x: np.ndarray,
    out: np.ndarray,
    region: _Region,
    kernel: np.ndarray,
    nan_aware: bool,
    threads: int,
) -> None:
    """Float64 normalised convolution inside one region, from ``x[N, U]`` into ``out[N, U]``.

    Maps go through in chunks of about ``_CACHE_CELLS`` grid cells, read from ``x`` and written
    to ``out`` directly: a chunk's grid and intermediates stay in cache and no full-size float64
    copy of the data is made, whatever the number of maps. Chunks are split over ``threads``
    threads, each with its own buffers; each map is computed alone, so its bits do not depend
    on the split.
    """
    boxes, h, w = region.shape
    size = boxes * h * w
    rows = _Bands.of(h, kernel, _BLOCK_ROWS)
    cols = _Bands.of(w, kernel, _BLOCK_COLS, transpose=True)
    cells, units = _as_slice(region.flat), _as_slice(region.units)
    # a region that fills its boxes (a rectangular area) is its own grid: no zero fill, and
    # the quotient goes straight into ``out`` when the units are a slice too
    full = isinstance(cells, slice) and cells == slice(0, size)
    direct = full and isinstance(units, slice)
    den = None
    if not nan_aware:
        mask = np.zeros((1, size))
        mask[:, cells] = 1.0
        den = _separable(mask.reshape(1, boxes, h, w), rows, cols).reshape(1, size)[:, cells]
    step = max(1, _CACHE_CELLS // size)
    parts = [slice(i, min(x.shape[0], i + step)) for i in range(0, x.shape[0], step)]

    def work(todo: list[slice]) -> None:
        # zeros outside the region's cells are written once; each chunk overwrites the cells
        grid = np.zeros((step, size))
        across, num = np.empty((2, step * boxes, h, w))
        mask = np.zeros((step, size)) if nan_aware else None
        for part in todo:
            n = part.stop - part.start
            g = grid[:n]
            if full:
                np.copyto(g, x[part, units], casting="unsafe")
            else:
                g[:, cells] = x[part, units]
            den_part = den
            if nan_aware:
                valid = np.isfinite(g[:, cells])
                g[:, cells] = np.where(valid, g[:, cells], 0.0)
                mask[:n, cells] = valid
                den_part = _separable(
                    mask[:n].reshape(-1, boxes, h, w), rows, cols, across[: n * boxes]
                ).reshape(n, size)[:, cells]
            res = _separable(
                g.reshape(-1, boxes, h, w), rows, cols, across[: n * boxes], num[: n * boxes]
            ).reshape(n, size)[:, cells]
            with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 only at NaN units
                if direct and not nan_aware:
                    np.divide(res, den_part, out=out[part, units], casting="same_kind")
                    continue
                res = np.divide(res, den_part, out=res)
            if nan_aware:
                res[~valid] = np.nan
            out[part, units] = res

    workers = min(threads, len(parts)) if x.shape[0] * size >= _THREAD_CELLS else 1
    if workers <= 1:
        work(parts)
        return
    with ThreadPoolExecutor(workers) as pool:
        for done in [pool.submit(work, parts[i::workers]) for i in range(workers)]:
            done.result()


_NUMBA: dict[str, object] = {}


def _numba_kernels():
    """The compiled kernels module, or None with the reason kept in ``_NUMBA["why"]``.

    Imported once, on first use: numba costs about half a second to import. numba not
    installed is not an error (the numpy backend gives the same numbers); numba installed but
    unusable (e.g. built for another numpy, or no writable cache directory) is said once.
    """
    if "module" not in _NUMBA:
        module, why = None, ""
        try:
            module = _import_kernels()
        except ModuleNotFoundError as exc:
            if exc.name == __name__.rpartition(".")[0] + "._smoothing_numba":
                raise  # topo itself is broken, not numba
            if exc.name != "numba":
                why = f"numba is installed but cannot be imported ({exc})"
            else:
                why = "numba is not installed (pip install numba)"
        except Exception as exc:  # noqa: BLE001 - whatever a broken numba install raises
            why = f"numba is installed but cannot be used ({type(exc).__name__}: {exc})"
            if "cache" in str(exc).lower():
                why += "; set NUMBA_CACHE_DIR to a writable folder"
        if why and not why.startswith("numba is not installed"):
            warn(f"smoothing runs on its numpy backend (the same numbers, slower): {why}")
        _NUMBA.update(module=module, why=why)
    return _NUMBA["module"]


def _import_kernels():
    """Import the kernels (a function of its own, so that tests can make it fail)."""
    from topocli.stats import _smoothing_numba

    return _smoothing_numba


def cpu_backend() -> str:
    """The backend ``backend="auto"`` uses on CPU: ``"numba"`` when it can run, else ``"numpy"``."""
    return "numba" if _numba_kernels() is not None else "numpy"


def _smooth_region_numba(
    x: np.ndarray,
    out: np.ndarray,
    region: _Region,
    kernel: np.ndarray,
    nan_aware: bool,
    threads: int,
) -> None:
    """Float64 normalised convolution inside one region with the compiled kernels.

    ``x`` (float32 or float64) and ``out`` (float32 or float64) are C-contiguous ``[N, U]``.
    The mask pass runs once for the region, or with ``nan_aware`` once per NaN pattern and
    thread (the maps sorted by pattern, so that maps sharing one share its pass). The maps
    are split over ``threads`` threads in contiguous runs; each map is computed alone, so its
    bits depend on neither the split nor the other maps.
    """
    kernels = _numba_kernels()
    boxes, h, w = region.shape
    size = boxes * h * w
    cells, units = _as_slice(region.flat), _as_slice(region.units)
    if isinstance(units, slice) and isinstance(cells, slice) and cells == slice(0, size):
        u0, cell_unit = units.start, np.zeros(1, np.int64)  # a rectangular area: read in place
    else:
        u0, cell_unit = -1, np.full(size, -1, np.int64)
        cell_unit[region.flat] = region.units
    maps = np.arange(x.shape[0], dtype=np.int64)
    pattern = np.zeros(x.shape[0], np.int64)
    den = np.empty(size)
    if nan_aware:
        pattern = _nan_patterns(x[:, units])
        maps = np.argsort(pattern, kind="stable")
        pattern = pattern[maps]
    else:
        mask = np.zeros(size)
        mask[region.flat] = 1.0
        kernels.separable(mask, region.shape, kernel, den)
    workers = min(threads, x.shape[0]) if x.shape[0] * size >= _THREAD_CELLS else 1

    def work(part: slice) -> None:
        den_part = np.empty(size) if nan_aware else den  # each thread its own mask passes
        todo, ids = maps[part], pattern[part]
        kernels.smooth_maps(
            x, out, todo, ids, u0, cell_unit, region.shape, kernel, den_part, nan_aware
        )

    bounds = np.linspace(0, x.shape[0], workers + 1).astype(int)
    parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    if workers <= 1:
        work(parts[0])
        return
    with ThreadPoolExecutor(workers) as pool:
        for done in [pool.submit(work, part) for part in parts]:
            done.result()


def _nan_patterns(values: np.ndarray) -> np.ndarray:
    """An id per row of ``values`` (``[N, n]``): rows with the same non-finite cells share one."""
    valid = np.isfinite(values)
    if valid.all():
        return np.zeros(values.shape[0], np.int64)
    ids: dict[bytes, int] = {}
    packed = np.packbits(valid, axis=1)
    return np.array([ids.setdefault(row.tobytes(), len(ids)) for row in packed], np.int64)


def _smooth_numba(
    x: np.ndarray,
    regions: list[_Region],
    kernel: np.ndarray,
    nan_aware: bool,
    dtype: object,
    threads: int,
) -> np.ndarray:
    """Smooth ``x[N, U]`` region by region into a new ``dtype`` array with the compiled kernels."""
    # two compiled versions only (each costs seconds to compile): float32 -> float32 (the
    # pipeline's batches) and float64 -> float64; any other input is converted exactly to
    # float64 and the float64 result rounded once to the returned dtype
    work = np.float32 if x.dtype == np.float32 and dtype == np.float32 else np.float64
    x = np.ascontiguousarray(x, dtype=work)
    out = np.empty(x.shape, dtype=work)
    for region in regions:
        _smooth_region_numba(x, out, region, kernel, nan_aware, threads)
    return out.astype(dtype, copy=False)


def thread_count(threads: int | None = None) -> int:
    """Threads of the numpy backend: ``threads``, else :data:`THREADS`, else the usable cores.

    Raises TopoInputError for a count below 1.
    """
    n = threads if threads is not None else THREADS
    if n is None:
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        return len(usable) if usable else os.cpu_count() or 1
    if int(n) != n or n < 1:
        raise TopoInputError(f"smoothing threads must be an integer >= 1, got {n!r}")
    return int(n)


def _smooth_numpy(
    x: np.ndarray,
    regions: list[_Region],
    kernel: np.ndarray,
    nan_aware: bool,
    dtype: object,
    threads: int,
) -> np.ndarray:
    """Smooth ``x[N, U]`` region by region into a new ``dtype`` array."""
    out = np.empty(x.shape, dtype=dtype)
    for region in regions:
        _smooth_region_numpy(x, out, region, kernel, nan_aware, threads)
    return out


def _conv_separable(grid: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-padded separable convolution of ``grid[N, H, W]`` with a 1-D ``kernel[K]``."""
    r = (kernel.numel() - 1) // 2
    x = grid.unsqueeze(1)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1), padding=(0, r))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1), padding=(r, 0))
    return x.squeeze(1)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _as_tensor(x: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool, object]:
    """Return ``(tensor, was_numpy, original dtype)``."""
    if isinstance(x, torch.Tensor):
        return x, False, x.dtype
    arr = np.asarray(x)
    return torch.from_numpy(np.ascontiguousarray(arr)), True, arr.dtype


def _back(out: torch.Tensor, was_numpy: bool, dtype: object) -> np.ndarray | torch.Tensor:
    if was_numpy:
        res = out.cpu().numpy()
        return res.astype(dtype, copy=False) if np.issubdtype(dtype, np.floating) else res
    return out.to(dtype) if dtype.is_floating_point else out


def _check_units(shape: tuple[int, ...], sheet: Sheet) -> None:
    if len(shape) == 0 or shape[-1] != sheet.n_units:
        raise TopoInputError(
            f"expected {sheet.n_units} sheet units in the last axis, got shape {tuple(shape)}"
        )


class _Region(NamedTuple):
    """Units smoothed together: ``units`` land at ``flat`` in a ``(boxes, h, w)`` stack of crops.

    Areas whose bounding boxes have the same shape share one region (one batched convolution);
    each area sits in its own box, so nothing crosses from one area into another.
    """

    units: np.ndarray
    flat: np.ndarray
    shape: tuple[int, int, int]


def _regions(sheet: Sheet, across_areas: bool) -> list[_Region]:
    """The smoothing regions of a sheet: the whole sheet, or every area in its own box."""
    if across_areas:
        if sheet.layout != "stacked":
            raise TopoInputError(
                "smoothing across areas needs a 'stacked' (contiguous) sheet; this sheet is "
                f"{sheet.layout!r}, whose areas are separate grids"
            )
        rows, cols = _local_cells(sheet.row, sheet.col)
        h, w = int(rows.max()) + 1, int(cols.max()) + 1
        return [_Region(np.arange(sheet.n_units), rows * w + cols, (1, h, w))]
    groups: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for k in range(len(sheet.areas)):
        sl = sheet.area_slice(k)
        rows, cols = _local_cells(sheet.row[sl], sheet.col[sl])
        box = (int(rows.max()) + 1, int(cols.max()) + 1)
        groups.setdefault(box, []).append((np.arange(sl.start, sl.stop), rows, cols))
    out = []
    for (h, w), members in groups.items():
        units = np.concatenate([m[0] for m in members])
        flat = np.concatenate([g * h * w + r * w + c for g, (_, r, c) in enumerate(members)])
        out.append(_Region(units, flat, (len(members), h, w)))
    return out


def _local_cells(row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return row.astype(np.int64) - int(row.min()), col.astype(np.int64) - int(col.min())


def _smooth_region(
    vals: torch.Tensor, valid: torch.Tensor | None, region: _Region, kernel: torch.Tensor
) -> torch.Tensor:
    """Normalised convolution of ``vals[N, n]`` (the region's units) inside the region.

    ``valid[N, n]`` (bool) excludes cells per map; ``None`` means every cell counts.
    """
    n_maps = vals.shape[0]
    boxes, h, w = region.shape
    size = boxes * h * w
    flat = torch.as_tensor(region.flat, device=vals.device)
    grid = vals.new_zeros((n_maps, size))
    if valid is None:
        grid[:, flat] = vals
        mask = vals.new_zeros((1, size))
        mask[:, flat] = 1.0
    else:
        grid[:, flat] = torch.where(valid, vals, torch.zeros_like(vals))
        mask = vals.new_zeros((n_maps, size))
        mask[:, flat] = valid.to(vals.dtype)
    num = _conv_separable(grid.view(-1, h, w), kernel).reshape(n_maps, size)[:, flat]
    den = _conv_separable(mask.view(-1, h, w), kernel).reshape(-1, size)[:, flat]
    out = num / den
    if valid is not None:
        out = torch.where(valid, out, torch.full_like(out, float("nan")))
    return out


def _pick_backend(x: np.ndarray | torch.Tensor, backend: str) -> str:
    if backend not in BACKENDS:
        raise TopoInputError(f"smoothing backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "numba" and _numba_kernels() is None:
        raise TopoInputError(f"smoothing backend 'numba' cannot run: {_NUMBA['why']}")
    if backend != "auto":
        return backend
    on_cpu = not isinstance(x, torch.Tensor) or x.device.type == "cpu"
    return cpu_backend() if on_cpu else "torch"


def _out_dtype(dtype: object) -> object:
    """The returned dtype: floating dtypes are kept, anything else comes back float32."""
    if isinstance(dtype, torch.dtype):
        return dtype if dtype.is_floating_point else torch.float32
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float32)


def _run_cpu(
    x,
    regions: list[_Region],
    kernel_np: np.ndarray,
    nan_aware: bool,
    threads: int,
    compiled: bool = False,
):
    """The CPU backends: numpy (``compiled`` False) or numba, on a numpy view of ``x``."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype not in (torch.float64, torch.float32):
            t = t.to(torch.float32)  # numpy has no bfloat16; float32 holds any of them exactly
        arr = t.numpy()
        dtype = np.float64 if t.dtype == torch.float64 else np.float32
    else:
        arr = np.asarray(x)
        dtype = _out_dtype(arr.dtype)
    flat = arr.reshape(-1, arr.shape[-1])
    run = _smooth_numba if compiled else _smooth_numpy
    out = run(flat, regions, kernel_np, nan_aware, dtype, threads)
    out = out.reshape(arr.shape)
    if isinstance(x, torch.Tensor):
        return torch.from_numpy(out).to(device=x.device, dtype=_out_dtype(x.dtype))
    return out


def _run_torch(x, regions: list[_Region], kernel_np: np.ndarray, nan_aware: bool, threads: int):
    t, was_numpy, dtype = _as_tensor(x)
    shape = t.shape
    work = _work_dtype(t.dtype)
    flat = t.reshape(-1, shape[-1]).to(work)
    kernel = torch.as_tensor(kernel_np, dtype=work, device=flat.device)
    out = torch.empty_like(flat)
    with torch.no_grad():
        for region in regions:
            idx = torch.as_tensor(region.units, device=flat.device)
            vals = flat[:, idx]
            valid = torch.isfinite(vals) if nan_aware else None
            out[:, idx] = _smooth_region(vals, valid, region, kernel)
    return _back(out.reshape(shape), was_numpy, dtype)


def _smooth(
    x,
    sheet: Sheet,
    fwhm_mm: float,
    across_areas: bool,
    nan_aware: bool,
    backend: str,
    threads: int | None = None,
):
    backend = _pick_backend(x, backend)
    n_threads = thread_count(threads)
    sigma = fwhm_to_sigma(fwhm_mm, sheet.mm_per_unit)
    regions = _regions(sheet, across_areas)
    _check_units(tuple(x.shape), sheet)
    kernel_np = gaussian_kernel1d(sigma, max_radius=max(sheet.grid_shape))
    if kernel_np.size == 1:
        return x
    if backend == "torch":
        return _run_torch(x, regions, kernel_np, nan_aware, n_threads)
    return _run_cpu(x, regions, kernel_np, nan_aware, n_threads, compiled=backend == "numba")


def smooth_units(
    x: np.ndarray | torch.Tensor,
    sheet: Sheet,
    fwhm_mm: float,
    across_areas: bool = False,
    backend: str = "auto",
    threads: int | None = None,
) -> np.ndarray | torch.Tensor:
    """Gaussian-smooth unit values ``x[..., U]`` (sheet unit order) on the sheet.

    Parameters
    ----------
    x : ndarray or Tensor, shape (..., n_units)
        E.g. per-stimulus activations ``[B, U]`` or one map ``[U]``; values must be finite
        (use :func:`smooth_map` for maps with NaNs).
    sheet : Sheet
    fwhm_mm : float
        FWHM of the Gaussian in mm; 0 returns ``x`` itself, unchanged.
    across_areas : bool
        False (default): smooth inside each area separately, nothing crosses an area border.
        True: smooth over every unit of a ``stacked`` sheet (TopoInputError on ``tiled``).
    backend : {"auto", "numba", "numpy", "torch"}
        "auto" (default): for numpy arrays and CPU tensors numba (float64, compiled direct
        filter) when it is installed, else numpy (float64, BLAS), the same numbers to about
        1e-16 (:func:`cpu_backend`); torch ``conv2d`` for tensors on an accelerator. Forcing
        one is for tests and benchmarks ("numba" without numba: TopoInputError).
    threads : int, optional
        Threads of the CPU backends, each smoothing its own maps (the result does not depend
        on it). Default: :data:`THREADS`, or when that is None every core this process may use.

    Returns
    -------
    ndarray or Tensor
        Same type, shape and device as ``x``; floating dtypes are kept (integers come back as
        float32). The CPU backends compute in float64; torch in float64 for float64 input,
        float32 otherwise.
    """
    return _smooth(x, sheet, fwhm_mm, across_areas, False, backend, threads)


def smooth_map(
    values: np.ndarray | torch.Tensor,
    sheet: Sheet,
    fwhm_mm: float,
    across_areas: bool = False,
    backend: str = "auto",
    threads: int | None = None,
) -> np.ndarray | torch.Tensor:
    """Smooth one or more maps ``values[..., U]`` that may contain NaNs.

    Non-finite units are left out of the mask (they neither contribute nor count in the
    normalisation) and stay NaN in the output. Otherwise identical to :func:`smooth_units`.
    """
    return _smooth(values, sheet, fwhm_mm, across_areas, True, backend, threads)


def smoothing_transform(sheet: Sheet, fwhm_mm: float, across_areas: bool = False):
    """The per-batch smoothing of activations for the pipeline (None for FWHM 0).

    Checks the options at once (e.g. ``across_areas`` on a tiled sheet) so a bad option fails
    before the model runs.
    """
    if not fwhm_mm:
        if across_areas and sheet.layout != "stacked":
            smooth_units(np.zeros((1, sheet.n_units), np.float32), sheet, 1.0, True)
        return None
    smooth_units(np.zeros((1, sheet.n_units), np.float32), sheet, fwhm_mm, across_areas)
    return lambda acts: smooth_units(acts, sheet, fwhm_mm, across_areas)
