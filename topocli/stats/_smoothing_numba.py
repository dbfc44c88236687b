"""Compiled direct separable filter for :mod:`topocli.stats.smoothing` (the ``"numba"`` backend).

Imported only when that backend runs (numba takes 0.6-0.9 s to import). Each 1-D pass is a direct
correlation with the symmetric kernel, ``r + 1`` multiplies and ``2 r + 1`` adds per output
(the taps paired: ``k[r - d] (x[j - d] + x[j + d])``), the inner loop over the contiguous axis so
that LLVM vectorises it. A map is read once (float32 or float64), both passes run on one float64
copy of it that stays in cache, and the quotient by the mask pass is written straight into the
result. Maps are independent: a map's bits depend on it and its mask only, never on the other
maps in the call or on how the caller splits them over threads (``nogil``).

``fastmath`` stays off: the sums are the float64 sums written here, in this order (no
reassociation, no fused multiply-add), so the result is the exact convolution up to float64
rounding, about 1e-16 relative, like the BLAS backend's.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True, "fastmath": False, "boundscheck": False}


@njit(**_JIT)
def _row_pass(src, start, w, kernel, pad, dst, clean):
    """``dst[j] = sum_d kernel[d + r] src[start + j + d]`` over ``|d| <= r``, zeros outside.

    ``pad`` (length ``w + 2 r``, zeros at both ends) takes the row as float64; with ``clean``
    non-finite values become 0 (they are left out of the mask too).
    """
    r = (kernel.size - 1) // 2
    # slices, so every inner loop indexes from 0 with its own counter: numba then drops the
    # negative-index wraparound test and LLVM vectorises the loop
    line, mid = src[start : start + w], pad[r : r + w]
    if clean:
        for j in range(w):
            v = np.float64(line[j])
            mid[j] = v if np.isfinite(v) else 0.0
    else:
        for j in range(w):
            mid[j] = line[j]
    centre = kernel[r]
    for j in range(w):
        dst[j] = centre * mid[j]
    for d in range(1, r + 1):
        k = kernel[r - d]
        left, right = pad[r - d : r - d + w], pad[r + d : r + d + w]
        for j in range(w):
            dst[j] += k * (left[j] + right[j])


@njit(**_JIT)
def _column_pass(across, base, i, h, w, kernel, acc):
    """Row ``i`` of the pass across rows of ``across[base : base + h w]`` into ``acc[:w]``."""
    r = (kernel.size - 1) // 2
    row = base + i * w
    centre = kernel[r]
    here = across[row : row + w]
    for j in range(w):
        acc[j] = centre * here[j]
    for d in range(1, min(r, max(i, h - 1 - i)) + 1):
        k = kernel[r - d]
        if i - d >= 0 and i + d < h:
            up = across[row - d * w : row - d * w + w]
            down = across[row + d * w : row + d * w + w]
            for j in range(w):
                acc[j] += k * (up[j] + down[j])
        elif i - d >= 0:
            up = across[row - d * w : row - d * w + w]
            for j in range(w):
                acc[j] += k * up[j]
        else:
            down = across[row + d * w : row + d * w + w]
            for j in range(w):
                acc[j] += k * down[j]


@njit(**_JIT)
def separable(grid, shape, kernel, out):
    """Zero-padded separable correlation of ``grid`` (``shape = (boxes, h, w)``, flat) into ``out``.

    Used for the mask pass (the denominator of the normalised convolution).
    """
    boxes, h, w = shape
    r = (kernel.size - 1) // 2
    pad = np.zeros(w + 2 * r)
    across = np.empty(boxes * h * w)
    acc = np.empty(w)
    for b in range(boxes):
        base = b * h * w
        for i in range(h):
            row = base + i * w
            _row_pass(grid, row, w, kernel, pad, across[row : row + w], False)
        for i in range(h):
            _column_pass(across, base, i, h, w, kernel, acc)
            out[base + i * w : base + i * w + w] = acc[:w]


@njit(**_JIT)
def _mask_of(x, m, u0, cell_unit, mask):
    """1.0 at the region's cells where map ``m`` is finite, 0.0 elsewhere."""
    for c in range(mask.size):
        u = u0 + c if u0 >= 0 else cell_unit[c]
        mask[c] = 1.0 if u >= 0 and np.isfinite(x[m, u]) else 0.0


@njit(**_JIT)
def smooth_maps(x, out, maps, pattern, u0, cell_unit, shape, kernel, den, nan_aware):
    """Normalised convolution of the maps ``x[maps]`` inside one region, into ``out[maps]``.

    Parameters
    ----------
    x, out : 2-D arrays ``(N, U)``
        Unit values (float32 or float64) and the result (float32 or float64).
    maps : int64 array
        Rows of ``x`` to smooth, in the order given.
    pattern : int64 array
        Per entry of ``maps``, the id of its NaN pattern (``nan_aware``): the mask pass is run
        again only when the id changes from the previous map's, so sort ``maps`` by it.
    u0 : int
        ``>= 0``: the region's cells are units ``u0, u0 + 1, ...`` in grid order (a rectangular
        area), read straight from ``x``. ``-1``: ``cell_unit[c]`` is the unit at cell ``c``
        (``-1`` for an empty cell).
    shape : (int, int, int)
        The region's grid ``(boxes, h, w)``: ``boxes`` crops of ``h x w`` cells.
    kernel : float64 array
        Symmetric 1-D weights, length ``2 r + 1``.
    den : float64 array
        The mask pass of the region (``nan_aware`` False); overwritten per pattern otherwise.
    nan_aware : bool
        Leave non-finite values out of numerator and mask and write NaN there.
    """
    boxes, h, w = shape
    size = boxes * h * w
    r = (kernel.size - 1) // 2
    pad = np.zeros(w + 2 * r)
    across = np.empty(size)
    acc = np.empty(w)
    direct = u0 >= 0
    grid = np.zeros(0 if direct else size)
    mask = np.zeros(size if nan_aware else 0)
    last = -1
    for n in range(maps.size):
        m = maps[n]
        if nan_aware and pattern[n] != last:
            last = pattern[n]
            _mask_of(x, m, u0, cell_unit, mask)
            separable(mask, shape, kernel, den)
        if not direct:
            for c in range(size):
                u = cell_unit[c]
                grid[c] = x[m, u] if u >= 0 else 0.0
        for b in range(boxes):
            base = b * h * w
            for i in range(h):
                row = base + i * w
                if direct:
                    _row_pass(x[m], u0 + row, w, kernel, pad, across[row : row + w], nan_aware)
                else:
                    _row_pass(grid, row, w, kernel, pad, across[row : row + w], nan_aware)
            for i in range(h):
                _column_pass(across, base, i, h, w, kernel, acc)
                row = base + i * w
                _finish_row(x[m], out[m], row, u0, cell_unit, acc, den[row : row + w], nan_aware)


@njit(**_JIT)
def _finish_row(x, out, row, u0, cell_unit, acc, den, nan_aware):
    """Write ``acc / den`` for the grid row starting at cell ``row`` into the map's units."""
    w = acc.size
    if u0 >= 0 and not nan_aware:
        dst = out[u0 + row : u0 + row + w]
        for j in range(w):  # the common case, kept branch-free so that it vectorises
            dst[j] = acc[j] / den[j]
        return
    for j in range(w):
        u = u0 + row + j if u0 >= 0 else cell_unit[row + j]
        if u < 0:
            continue
        if nan_aware and not np.isfinite(x[u]):
            out[u] = np.nan
        else:
            out[u] = acc[j] / den[j]
