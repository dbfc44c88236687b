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

The work is done with ``torch.nn.functional.conv2d`` on the input's device (CPU or GPU), batched
over the leading axes; numpy in gives numpy out.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from topocli.errors import TopoInputError
from topocli.sheet import Sheet

TRUNCATE = 3.0
FWHM_PER_SIGMA = math.sqrt(8.0 * math.log(2.0))


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


def _smooth(x, sheet: Sheet, fwhm_mm: float, across_areas: bool, nan_aware: bool):
    sigma = fwhm_to_sigma(fwhm_mm, sheet.mm_per_unit)
    regions = _regions(sheet, across_areas)
    _check_units(tuple(x.shape), sheet)
    kernel_np = gaussian_kernel1d(sigma, max_radius=max(sheet.grid_shape))
    if kernel_np.size == 1:
        return x
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


def smooth_units(
    x: np.ndarray | torch.Tensor,
    sheet: Sheet,
    fwhm_mm: float,
    across_areas: bool = False,
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

    Returns
    -------
    ndarray or Tensor
        Same type, shape and device as ``x``; floating dtypes are kept (integers come back as
        float). Computation is in float64 for float64 input, float32 otherwise.
    """
    return _smooth(x, sheet, fwhm_mm, across_areas, nan_aware=False)


def smooth_map(
    values: np.ndarray | torch.Tensor,
    sheet: Sheet,
    fwhm_mm: float,
    across_areas: bool = False,
) -> np.ndarray | torch.Tensor:
    """Smooth one or more maps ``values[..., U]`` that may contain NaNs.

    Non-finite units are left out of the mask (they neither contribute nor count in the
    normalisation) and stay NaN in the output. Otherwise identical to :func:`smooth_units`.
    """
    return _smooth(values, sheet, fwhm_mm, across_areas, nan_aware=True)


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
