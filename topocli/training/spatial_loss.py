"""The spatial smoothness loss of topographic training, and the correlation-vs-distance curve.

Per neighbourhood (TDANN, TopoLM, Topo-Omni)::

    SL = 0.5 * (1 - corr(r, D))

with ``r`` the Pearson correlations between the units' responses across the samples of a batch,
``D = 1 / (1 + distance_mm)``, both taken over the lower triangle (``i > j``) of the neighbourhood's
units; the loss averages ``SL`` over neighbourhoods whose centres are drawn at random each call.

Neighbourhoods: a disc stencil
------------------------------
A neighbourhood is every unit within ``radius_mm`` (Euclidean, on ``sheet.positions_mm``) of a
centre unit; on a tiled sheet (or ``within_area=True``) only the units of the centre's area, on a
stacked sheet across area borders. Units sit on grid cells, so the neighbourhood of *any* centre is
the same set of grid offsets (a disc stencil of ``k`` cells) moved onto the centre, minus the cells
that fall off the sheet, hold no unit or belong to another area. :class:`NeighbourhoodPool` keeps
only that stencil, the ``k x k`` inverse-distance matrix of its cells (the same for every
neighbourhood) and the sheet's unit grid; :meth:`NeighbourhoodPool.neighbourhoods` builds the padded
``[n_centres, k]`` index tensor and validity mask for the sampled centres of a step. A full table
for every centre would be ``n_units x k`` (155,648 x 1,257 int64 = 1.6 GB for the Topo-Omni sheet
with radius 20); the stencil route keeps ``O(n_units + k^2)`` (about 17 MB there).

Correlations without the ``k x k`` matrix
-----------------------------------------
``corr(r, D)`` needs only six sums over the valid pairs: ``sum r``, ``sum r^2``, ``sum D``,
``sum D^2``, ``sum r D`` and the pair count. With ``Z`` the ``[B, k]`` z-scored responses of a
neighbourhood (padding zeroed) and ``r = Z^T Z / B``: ``sum_ij r_ij = |Z 1|^2 / B``,
``sum_ij r_ij^2 = |Z Z^T|_F^2 / B^2`` (a ``B x B`` Gram matrix), ``sum_ij r_ij D_ij =
sum_b z_b^T D z_b / B``; the diagonal is subtracted and the symmetric sum halved for ``i > j``.
This is exactly the formula (tested against :func:`spatial_loss_reference`), costs one
``[N*B, k] @ [k, k]`` product and never stores the ``N x k x k`` correlation tensor (632 MB in
float32 for 100 neighbourhoods of 1,257 units). ``D`` is shifted by a constant (its stencil mean)
before the sums, which leaves ``corr`` unchanged and avoids cancellation in float32.

Numerics
--------
Everything runs in float32 with autocast switched off, so the loss is the same under bf16 / fp16
autocast and for half-precision activations. A unit's z-score divides by ``sqrt(var + eps)`` with
``eps = VARIANCE_EPS * mean variance of all units in the batch`` (detached; plus 1e-12 so an
all-constant batch stays finite): a unit that is constant across the batch gets ``z = 0``, hence
``r = 0`` with every other unit and a finite gradient, instead of NaN. For units of ordinary
variance the eps changes ``r`` by a relative ~1e-6. The Pearson correlation of ``r`` with ``D``
divides by ``sqrt(max(var_r, 1e-12) * var_D)``, so a neighbourhood of constant units gives
``corr = 0`` (loss 0.5) with finite gradients. Only centres whose neighbourhood has at least three
units (so ``D`` varies) are drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy.signal import fftconvolve

from topocli.errors import TopoInputError
from topocli.sheet import Sheet

VARIANCE_EPS = 1e-6
"""Relative variance floor of the z-scores (times the batch's mean unit variance)."""

MAX_STENCIL = 8192
"""Most cells a neighbourhood stencil may have (its k x k distance matrices take 2 x 256 MB)."""

MIN_BATCH = 3
"""Fewest samples a batch needs to estimate correlations."""

_RADIUS_RTOL = 1e-9
_VAR_R_FLOOR = 1e-12


@dataclass(eq=False)
class NeighbourhoodPool:
    """What the spatial loss needs about a sheet: the disc stencil and the unit grid.

    Build it with :func:`build_neighbourhood_pool`. Tensors live on the CPU; copies on other
    devices are made once and cached.

    Attributes
    ----------
    sheet : Sheet
        The sheet the pool was built for.
    radius_mm : float
        Neighbourhood radius (Euclidean, in mm).
    within_area : bool
        Whether neighbourhoods keep to their centre's area.
    offsets : torch.Tensor
        ``[k, 2]`` int64 (row, col) offsets of the stencil cells, nearest first.
    sizes : torch.Tensor
        ``[n_units]`` int64 number of units in the neighbourhood centred on each unit.
    centres : torch.Tensor
        Units that may be drawn as centres (neighbourhood of >= 3 units), int64.
    d_shift : float
        Constant subtracted from ``D`` off the diagonal in ``d_centred``.
    d_centred, d_centred_sq : torch.Tensor
        ``[k, k]`` float32 ``D - d_shift`` with a zero diagonal, and its square.
    """

    sheet: Sheet
    radius_mm: float
    within_area: bool
    offsets: torch.Tensor
    d_shift: float
    d_centred: torch.Tensor
    d_centred_sq: torch.Tensor
    unit_grid: torch.Tensor
    unit_row: torch.Tensor
    unit_col: torch.Tensor
    unit_area: torch.Tensor
    sizes: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    centres: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_units(self) -> int:
        return self.sheet.n_units

    @property
    def stencil_size(self) -> int:
        """``k``: cells of the disc stencil, the padded width of a neighbourhood."""
        return int(self.offsets.shape[0])

    @property
    def inv_distance(self) -> torch.Tensor:
        """``[k, k]`` float32 ``D = 1 / (1 + distance_mm)`` between the stencil cells."""
        d = self.d_centred + self.d_shift
        d.fill_diagonal_(1.0)
        return d

    def tensors(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The pool's tensors on ``device`` (copied once, then cached)."""
        device = torch.device(device)
        key = str(device)
        if key not in self._cache:
            names = ("offsets", "d_centred", "d_centred_sq", "unit_grid", "unit_row", "unit_col")
            self._cache[key] = {n: getattr(self, n).to(device) for n in names + ("unit_area",)}
        return self._cache[key]

    def neighbourhoods(self, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded unit indices and validity mask of the neighbourhoods around ``centres``.

        Parameters
        ----------
        centres : torch.Tensor
            ``[N]`` int64 unit indices; the result lives on their device.

        Returns
        -------
        idx : torch.Tensor
            ``[N, k]`` int64 unit index per stencil cell (0 where the cell is padding).
        valid : torch.Tensor
            ``[N, k]`` bool, True where the cell holds a unit of the neighbourhood.
        """
        t = self.tensors(centres.device)
        n_rows, n_cols = self.sheet.grid_shape
        rows = t["unit_row"][centres][:, None] + t["offsets"][None, :, 0]
        cols = t["unit_col"][centres][:, None] + t["offsets"][None, :, 1]
        inside = (rows >= 0) & (rows < n_rows) & (cols >= 0) & (cols < n_cols)
        flat = rows.clamp(0, n_rows - 1) * n_cols + cols.clamp(0, n_cols - 1)
        idx = t["unit_grid"][flat]
        valid = inside & (idx >= 0)
        if self.within_area:
            same = t["unit_area"][idx.clamp_min(0)] == t["unit_area"][centres][:, None]
            valid &= same
        return torch.where(valid, idx, torch.zeros_like(idx)), valid


# ---------------------------------------------------------------------- building the pool
def build_neighbourhood_pool(
    sheet: Sheet, radius_mm: float, within_area: bool | None = None
) -> NeighbourhoodPool:
    """Precompute the disc stencil and distance matrices of the spatial loss on ``sheet``.

    Parameters
    ----------
    sheet : Sheet
    radius_mm : float
        Units within this Euclidean distance of a centre form its neighbourhood. Must be at least
        one unit spacing and at most the sheet diagonal.
    within_area : bool, optional
        Keep neighbourhoods inside their centre's area. Default: True on a ``tiled`` sheet,
        False on a ``stacked`` one (neighbourhoods cross area borders).

    Returns
    -------
    NeighbourhoodPool

    Raises
    ------
    TopoInputError
        When the radius is out of range, the stencil would exceed :data:`MAX_STENCIL` cells, or no
        unit has a neighbourhood of three units.
    """
    if within_area is None:
        within_area = sheet.layout == "tiled"
    mm = sheet.mm_per_unit
    n_rows, n_cols = sheet.grid_shape
    diagonal = math.hypot(n_rows - 1, n_cols - 1) * mm
    radius_mm = float(radius_mm)
    if not math.isfinite(radius_mm) or radius_mm < mm * (1 - _RADIUS_RTOL):
        raise TopoInputError(
            f"radius {radius_mm:g} mm is smaller than one unit spacing ({mm:g} mm per unit); "
            "a neighbourhood would hold only its centre"
        )
    if radius_mm > diagonal * (1 + _RADIUS_RTOL):
        raise TopoInputError(
            f"radius {radius_mm:g} mm is larger than the sheet diagonal ({diagonal:.4g} mm, "
            f"{n_rows} x {n_cols} units at {mm:g} mm per unit)"
        )
    offsets = _disc_stencil(sheet, radius_mm, within_area)
    if offsets.shape[0] > MAX_STENCIL:
        raise TopoInputError(
            f"radius {radius_mm:g} mm gives neighbourhoods of up to {offsets.shape[0]} units; the "
            f"spatial loss supports at most {MAX_STENCIL}, use a smaller radius"
        )
    d_shift, d_centred = _centred_inv_distance(offsets, mm)
    pool = NeighbourhoodPool(
        sheet=sheet,
        radius_mm=radius_mm,
        within_area=bool(within_area),
        offsets=torch.from_numpy(offsets),
        d_shift=d_shift,
        d_centred=d_centred,
        d_centred_sq=d_centred * d_centred,
        unit_grid=torch.from_numpy(sheet.unit_grid.reshape(-1)),
        unit_row=torch.from_numpy(sheet.row.astype(np.int64)),
        unit_col=torch.from_numpy(sheet.col.astype(np.int64)),
        unit_area=torch.from_numpy(sheet.area.astype(np.int64)),
    )
    pool.sizes = _neighbourhood_sizes(pool)
    pool.centres = torch.nonzero(pool.sizes >= 3).reshape(-1)
    if pool.centres.numel() == 0:
        raise TopoInputError(
            f"no unit has at least 3 units within {radius_mm:g} mm"
            + (" in its area" if within_area else "")
            + "; use a larger radius"
        )
    return pool


def _disc_stencil(sheet: Sheet, radius_mm: float, within_area: bool) -> np.ndarray:
    """``[k, 2]`` (row, col) offsets within ``radius_mm``, nearest first, clipped to the sheet."""
    reach = int(math.floor(radius_mm / sheet.mm_per_unit * (1 + _RADIUS_RTOL)))
    n_rows, n_cols = sheet.grid_shape
    if within_area:  # an area's units stay inside its box, so longer offsets never hit one
        n_rows = max(a.rows for a in sheet.areas)
        n_cols = max(a.cols for a in sheet.areas)
    dr = np.arange(-min(reach, n_rows - 1), min(reach, n_rows - 1) + 1)
    dc = np.arange(-min(reach, n_cols - 1), min(reach, n_cols - 1) + 1)
    grid_r, grid_c = np.meshgrid(dr, dc, indexing="ij")
    dist = np.hypot(grid_r, grid_c).ravel() * sheet.mm_per_unit
    keep = dist <= radius_mm * (1 + _RADIUS_RTOL)
    offsets = np.stack([grid_r.ravel()[keep], grid_c.ravel()[keep]], axis=1).astype(np.int64)
    order = np.lexsort((offsets[:, 1], offsets[:, 0], dist[keep]))
    return offsets[order]


def _centred_inv_distance(offsets: np.ndarray, mm: float) -> tuple[float, torch.Tensor]:
    """Stencil-mean shift and ``D - shift`` (zero diagonal) between stencil cells, float32."""
    k = offsets.shape[0]
    d = np.empty((k, k), dtype=np.float64)
    for start in range(0, k, 1024):  # rows in chunks: no [k, k, 2] temporary
        sl = slice(start, start + 1024)
        dist = np.hypot(
            offsets[sl, None, 0] - offsets[None, :, 0], offsets[sl, None, 1] - offsets[None, :, 1]
        )
        d[sl] = 1.0 / (1.0 + dist * mm)
    np.fill_diagonal(d, 0.0)
    shift = float(d.sum() / (k * (k - 1))) if k > 1 else 0.0
    d -= shift
    np.fill_diagonal(d, 0.0)
    return shift, torch.from_numpy(d.astype(np.float32))


def _neighbourhood_sizes(pool: NeighbourhoodPool) -> torch.Tensor:
    """Units in the neighbourhood of every possible centre: the unit mask convolved with the disc.

    One FFT convolution of the whole sheet, or one per area (cropped to its box) within areas.
    The disc is symmetric, so convolution equals correlation.
    """
    sheet = pool.sheet
    offsets = pool.offsets.numpy()
    reach_r, reach_c = np.abs(offsets).max(axis=0)
    kernel = np.zeros((2 * reach_r + 1, 2 * reach_c + 1))
    kernel[offsets[:, 0] + reach_r, offsets[:, 1] + reach_c] = 1.0
    sizes = np.zeros(sheet.n_units, dtype=np.int64)
    if pool.within_area:
        groups = [
            (np.flatnonzero(sheet.area == k), (a.row0, a.col0, a.rows, a.cols))
            for k, a in enumerate(sheet.areas)
        ]
    else:
        groups = [(np.arange(sheet.n_units), (0, 0) + tuple(sheet.grid_shape))]
    for units, (row0, col0, rows, cols) in groups:
        mask = np.zeros((rows, cols))
        mask[sheet.row[units] - row0, sheet.col[units] - col0] = 1.0
        counts = fftconvolve(mask, kernel, mode="full")[reach_r:, reach_c:]
        sizes[units] = np.rint(counts[sheet.row[units] - row0, sheet.col[units] - col0])
    return torch.from_numpy(sizes)


# ---------------------------------------------------------------------- the loss
def sample_centres(
    pool: NeighbourhoodPool, n_neighbourhoods: int, generator: torch.Generator
) -> torch.Tensor:
    """Draw ``n_neighbourhoods`` distinct centres at random (seeded), as a CPU int64 tensor."""
    if n_neighbourhoods is None or generator is None:
        raise ValueError("pass n_neighbourhoods and a seeded torch.Generator (or explicit centres)")
    n_eligible = int(pool.centres.numel())
    if not 1 <= int(n_neighbourhoods) <= n_eligible:
        raise TopoInputError(
            f"number of neighbourhoods must be between 1 and {n_eligible} (the units with at "
            f"least 3 units within {pool.radius_mm:g} mm), got {n_neighbourhoods}"
        )
    perm = torch.randperm(n_eligible, generator=generator, device=generator.device)
    return pool.centres[perm[: int(n_neighbourhoods)].cpu()]


def spatial_loss(
    activations: torch.Tensor,
    pool: NeighbourhoodPool,
    n_neighbourhoods: int | None = None,
    generator: torch.Generator | None = None,
    *,
    centres: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Spatial smoothness loss of a batch of sheet activations (vectorised, differentiable).

    Parameters
    ----------
    activations : torch.Tensor
        ``[B, n_units]`` responses of the sheet's units to ``B >= 3`` samples (any float dtype and
        device; computed in float32).
    pool : NeighbourhoodPool
    n_neighbourhoods : int, optional
        Neighbourhoods to draw (required unless ``centres`` is given).
    generator : torch.Generator, optional
        Seeded generator the centres are drawn with (required unless ``centres`` is given).
    centres : torch.Tensor, optional
        Explicit centre units ``[N]`` instead of drawing them.
    reduction : {"mean", "none"}
        Average over neighbourhoods (a scalar) or return the ``[N]`` per-neighbourhood losses.

    Returns
    -------
    torch.Tensor
        float32 loss on the activations' device.
    """
    x = _check_batch(activations, pool)
    if centres is None:
        centres = sample_centres(pool, n_neighbourhoods, generator)
    centres = torch.as_tensor(centres, dtype=torch.long).to(x.device)
    t = pool.tensors(x.device)
    with torch.autocast(device_type=x.device.type, enabled=False):
        z = _zscore(x.float())  # [B, U]
        z = torch.cat([z, z.new_zeros(z.shape[0], 1)], dim=1)  # column U: zeros for padding
        idx, valid = pool.neighbourhoods(centres)  # [N, k]
        zb = z[:, torch.where(valid, idx, pool.n_units)]  # [B, N, k], padding gathered as 0
        per_hood = _loss_from_zscores(zb, valid.to(torch.float32), t)
    return _reduce(per_hood, reduction)


def _loss_from_zscores(
    zb: torch.Tensor, mask: torch.Tensor, t: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Per-neighbourhood ``0.5 * (1 - corr(r, D))`` from padded z-scores ``[B, N, k]``.

    Sums run over ordered pairs ``i != j`` of valid units and are halved to ``i > j``.
    """
    n_samples = float(zb.shape[0])
    r_diag = (zb * zb).sum(dim=0) / n_samples  # [N, k]: r_ii
    s = zb.sum(dim=2)  # [B, N]
    sum_r = ((s * s).sum(dim=0) / n_samples - r_diag.sum(dim=1)) / 2
    zn = zb.transpose(0, 1)  # [N, B, k]
    gram = torch.bmm(zn, zn.transpose(1, 2))  # [N, B, B]
    sum_rr = ((gram * gram).sum(dim=(1, 2)) / n_samples**2 - (r_diag * r_diag).sum(dim=1)) / 2
    sum_rd = _QuadraticForm.apply(zb, t["d_centred"]).sum(dim=0) / n_samples / 2
    sum_d = (torch.matmul(mask, t["d_centred"]) * mask).sum(dim=1) / 2
    sum_dd = (torch.matmul(mask, t["d_centred_sq"]) * mask).sum(dim=1) / 2
    n_valid = mask.sum(dim=1)
    n_pairs = n_valid * (n_valid - 1) / 2
    mean_r, mean_d = sum_r / n_pairs, sum_d / n_pairs
    cov = sum_rd / n_pairs - mean_r * mean_d
    var_r = (sum_rr / n_pairs - mean_r * mean_r).clamp_min(_VAR_R_FLOOR)
    var_d = sum_dd / n_pairs - mean_d * mean_d
    return 0.5 * (1.0 - cov / torch.sqrt(var_r * var_d))


class _QuadraticForm(torch.autograd.Function):
    """``q[b, n] = z[b, n] @ D @ z[b, n]`` for a constant symmetric ``D``.

    The backward reuses the forward product (``dq/dz = 2 D z``), so a step costs one
    ``[B*N, k] @ [k, k]`` product instead of two.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        zd = torch.matmul(z, d)
        ctx.save_for_backward(zd)
        return (zd * z).sum(dim=-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (zd,) = ctx.saved_tensors
        return 2.0 * zd * grad.unsqueeze(-1), None


def _check_batch(activations: torch.Tensor, pool: NeighbourhoodPool) -> torch.Tensor:
    x = torch.as_tensor(activations)
    if x.ndim != 2 or x.shape[1] != pool.n_units:
        raise ValueError(
            f"activations must be [batch, {pool.n_units}] for this sheet, got {tuple(x.shape)}"
        )
    if x.shape[0] < MIN_BATCH:
        raise TopoInputError(
            f"the spatial loss needs at least {MIN_BATCH} samples per batch to estimate "
            f"correlations, got {x.shape[0]}"
        )
    return x


def _zscore(x: torch.Tensor) -> torch.Tensor:
    """Per-unit z-scores across the batch with the variance floor of the module docstring."""
    xc = x - x.mean(dim=0, keepdim=True)
    var = (xc * xc).mean(dim=0, keepdim=True)
    eps = VARIANCE_EPS * var.detach().mean() + 1e-12
    return xc * torch.rsqrt(var + eps)


def _reduce(per_hood: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_hood.mean()
    if reduction == "none":
        return per_hood
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def spatial_loss_reference(
    activations,
    pool: NeighbourhoodPool,
    n_neighbourhoods: int | None = None,
    generator: torch.Generator | None = None,
    *,
    centres=None,
    reduction: str = "mean",
) -> float | np.ndarray:
    """The spatial loss written directly from the formula: a Python loop over neighbourhoods.

    Slow on purpose, float64 numpy, independent of the stencil: each neighbourhood is found by
    brute-force distances on ``sheet.positions_mm``, ``r`` is ``np.corrcoef`` of its units, ``D``
    the inverse distances, and the lower triangle is taken with ``np.tril_indices``. Draws the
    same centres as :func:`spatial_loss` for the same generator state. Units that are constant
    across the batch give NaN here (no variance floor).

    Returns
    -------
    float or ndarray
        The mean over neighbourhoods, or the per-neighbourhood losses for ``reduction="none"``.
    """
    if isinstance(activations, torch.Tensor):
        activations = activations.detach().cpu().double().numpy()
    x = np.asarray(activations, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != pool.n_units:
        raise ValueError(
            f"activations must be [batch, {pool.n_units}] for this sheet, got {x.shape}"
        )
    if x.shape[0] < MIN_BATCH:
        raise TopoInputError(
            f"the spatial loss needs at least {MIN_BATCH} samples per batch, got {x.shape[0]}"
        )
    if centres is None:
        centres = sample_centres(pool, n_neighbourhoods, generator)
    centres = np.asarray(torch.as_tensor(centres).cpu(), dtype=np.int64).reshape(-1)
    pos = pool.sheet.positions_mm
    area = pool.sheet.area
    losses = []
    for c in centres:
        near = np.hypot(*(pos - pos[c]).T) <= pool.radius_mm * (1 + _RADIUS_RTOL)
        if pool.within_area:
            near &= area == area[c]
        units = np.flatnonzero(near)
        r = np.corrcoef(x[:, units], rowvar=False)
        p = pos[units]
        dist = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=-1))
        d = 1.0 / (1.0 + dist)
        i, j = np.tril_indices(units.size, k=-1)
        losses.append(0.5 * (1.0 - np.corrcoef(r[i, j], d[i, j])[0, 1]))
    losses = np.asarray(losses)
    if reduction == "none":
        return losses
    if reduction == "mean":
        return float(losses.mean())
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


# ---------------------------------------------------------------------- correlation vs distance
def correlation_vs_distance(
    activations: np.ndarray,
    sheet: Sheet,
    bins_mm=None,
    max_pairs: int = 100_000,
    seed: int = 0,
    within_area: bool | None = None,
) -> pd.DataFrame:
    """Mean pairwise response correlation of units as a function of their distance on the sheet.

    Pairs are drawn at random and stratified by distance bin: for each bin, ``max_pairs // n_bins``
    candidates pair a uniformly drawn unit with a uniformly drawn grid offset whose length falls
    in the bin; candidates that land off the sheet, on no unit or (``within_area``) in another
    area are dropped, so each bin's mean is over pairs drawn uniformly among the sheet's pairs at
    that distance. On a stacked sheet pairs cross area borders (default), on a tiled one they stay
    inside an area. Pairs with a unit constant across the samples are left out.

    Parameters
    ----------
    activations : ndarray
        ``[n_samples, n_units]`` responses (n_samples >= 3).
    sheet : Sheet
    bins_mm : sequence of float, optional
        Increasing bin edges in mm (last bin closed). Default: one bin per unit spacing, centred
        on 1..20 units (clipped to the sheet diagonal).
    max_pairs : int
        Candidate pairs drawn in all (at most this many pairs are used).
    seed : int
    within_area : bool, optional
        Default: True on a tiled sheet, False on a stacked one.

    Returns
    -------
    pandas.DataFrame
        One row per bin: ``distance_mm`` (bin centre), ``bin_lo_mm``, ``bin_hi_mm``, ``mean_r``
        (NaN for an empty bin) and ``n_pairs``.
    """
    x = np.asarray(activations, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != sheet.n_units:
        raise TopoInputError(
            f"activations must be [samples, {sheet.n_units}] for this sheet, got {x.shape}"
        )
    if x.shape[0] < MIN_BATCH:
        raise TopoInputError(f"need at least {MIN_BATCH} samples to correlate, got {x.shape[0]}")
    if within_area is None:
        within_area = sheet.layout == "tiled"
    edges = _distance_edges(sheet, bins_mm)
    if int(max_pairs) < 1:
        raise TopoInputError(f"max_pairs must be >= 1, got {max_pairs}")
    n_bins = edges.size - 1
    offsets, off_bin = _binned_offsets(sheet, edges)
    counts = np.bincount(off_bin, minlength=n_bins)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    per_bin = int(max_pairs) // n_bins
    cand_bin = np.repeat(np.flatnonzero(counts), per_bin)
    pick = starts[cand_bin] + np.floor(rng.random(cand_bin.size) * counts[cand_bin]).astype(int)
    first = rng.integers(0, sheet.n_units, size=cand_bin.size)
    rows = sheet.row[first].astype(np.int64) + offsets[pick, 0]
    cols = sheet.col[first].astype(np.int64) + offsets[pick, 1]
    n_rows, n_cols = sheet.grid_shape
    inside = (rows >= 0) & (rows < n_rows) & (cols >= 0) & (cols < n_cols)
    second = np.full(cand_bin.size, -1, dtype=np.int64)
    second[inside] = sheet.unit_grid[rows[inside], cols[inside]]
    keep = second >= 0
    if within_area:
        keep &= sheet.area[np.maximum(second, 0)] == sheet.area[first]
    r = _pair_correlations(x, first[keep], second[keep])
    bins = cand_bin[keep]
    finite = np.isfinite(r)
    n_pairs = np.bincount(bins[finite], minlength=n_bins)
    sums = np.bincount(bins[finite], weights=r[finite], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_r = np.where(n_pairs > 0, sums / np.maximum(n_pairs, 1), np.nan)
    return pd.DataFrame(
        {
            "distance_mm": (edges[:-1] + edges[1:]) / 2,
            "bin_lo_mm": edges[:-1],
            "bin_hi_mm": edges[1:],
            "mean_r": mean_r,
            "n_pairs": n_pairs.astype(np.int64),
        }
    )


def _distance_edges(sheet: Sheet, bins_mm) -> np.ndarray:
    mm = sheet.mm_per_unit
    if bins_mm is None:
        diagonal_units = math.hypot(sheet.grid_shape[0] - 1, sheet.grid_shape[1] - 1)
        top = max(1, min(20, int(math.floor(diagonal_units))))
        return (np.arange(top + 1) + 0.5) * mm
    edges = np.asarray(bins_mm, dtype=np.float64).reshape(-1)
    if edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise TopoInputError(f"distance bins must be >= 2 increasing edges in mm, got {bins_mm}")
    if edges[0] < 0:
        raise TopoInputError(f"distance bins must start at >= 0 mm, got {edges[0]:g}")
    return edges


def _binned_offsets(sheet: Sheet, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero grid offsets whose length falls in a bin, sorted by bin, with their bin."""
    n_rows, n_cols = sheet.grid_shape
    reach = int(math.floor(edges[-1] / sheet.mm_per_unit * (1 + _RADIUS_RTOL)))
    dr = np.arange(-min(reach, n_rows - 1), min(reach, n_rows - 1) + 1)
    dc = np.arange(-min(reach, n_cols - 1), min(reach, n_cols - 1) + 1)
    grid_r, grid_c = (g.ravel() for g in np.meshgrid(dr, dc, indexing="ij"))
    dist = np.hypot(grid_r, grid_c) * sheet.mm_per_unit
    b = np.searchsorted(edges, dist, side="right") - 1
    b[np.isclose(dist, edges[-1], rtol=_RADIUS_RTOL, atol=0)] = edges.size - 2  # closed last bin
    keep = (dist > 0) & (b >= 0) & (b < edges.size - 1)
    order = np.argsort(b[keep], kind="stable")
    offsets = np.stack([grid_r[keep], grid_c[keep]], axis=1)[order].astype(np.int64)
    return offsets, b[keep][order]


def _pair_correlations(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between columns ``a[i]`` and ``b[i]`` of ``x`` (NaN for a constant column)."""
    xc = x - x.mean(axis=0)
    norm = np.sqrt((xc * xc).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(norm > 0, xc / np.where(norm > 0, norm, 1.0), np.nan)
    out = np.empty(a.size)
    chunk = max(1, 4_000_000 // x.shape[0])
    for start in range(0, a.size, chunk):
        sl = slice(start, start + chunk)
        out[sl] = np.einsum("ij,ij->j", z[:, a[sl]], z[:, b[sl]])
    return out
