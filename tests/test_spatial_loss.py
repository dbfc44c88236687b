"""Spatial loss: vectorised loss vs a numpy loop from the formula, planted answers, numerics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import pdist, squareform

from topocli.errors import TopoInputError
from topocli.sheet import AreaSpec, Sheet
from topocli.training.spatial_loss import (
    MAX_STENCIL,
    build_neighbourhood_pool,
    correlation_vs_distance,
    sample_centres,
    spatial_loss,
    spatial_loss_reference,
)

SPECS = [AreaSpec("a", 100, "text"), AreaSpec("b", 77, "text"), AreaSpec("c", 96, "text")]


def _sheet(kind: str, mm: float = 1.0) -> tuple[Sheet, bool | None]:
    """A small sheet (partial rows, uneven areas) and the within_area flag to use with it."""
    layout, _, extra = kind.partition("-")
    seed = 7 if extra == "perm" else None
    sheet = Sheet.build(SPECS, layout=layout, mm_per_unit=mm, permutation_seed=seed)
    return sheet, (False if extra == "cross" else None)


def _random_batch(sheet: Sheet, n_samples: int = 12, seed: int = 0) -> torch.Tensor:
    """Noise plus a shared component, so correlations are not all near zero."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(n_samples, 1, generator=g, dtype=torch.float64)
    loading = torch.rand(1, sheet.n_units, generator=g, dtype=torch.float64)
    noise = torch.randn(n_samples, sheet.n_units, generator=g, dtype=torch.float64)
    return noise + 2 * loading * shared


def _smooth_batch(sheet: Sheet, n_samples: int, scale_mm: float, seed: int = 0) -> np.ndarray:
    """Gaussian random fields on the sheet (random Fourier features): corr = exp(-d^2 / 2s^2)."""
    rng = np.random.default_rng(seed)
    n_features = 512
    omega = rng.normal(0.0, 1.0 / scale_mm, size=(n_features, 2))
    phase = rng.uniform(0, 2 * np.pi, size=n_features)
    basis = np.cos(sheet.positions_mm @ omega.T + phase) * np.sqrt(2.0 / n_features)
    return rng.normal(size=(n_samples, n_features)) @ basis.T


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- equals the reference
@pytest.mark.parametrize("kind", ["stacked", "tiled", "stacked-perm", "tiled-cross"])
@pytest.mark.parametrize("radius_units", [1.0, 1.5, 3.0, 5.0])
def test_matches_numpy_reference(kind: str, radius_units: float) -> None:
    sheet, within = _sheet(kind)
    pool = build_neighbourhood_pool(sheet, radius_units, within_area=within)
    x = _random_batch(sheet)
    drawn = sample_centres(pool, 15, _gen(1))
    corners = torch.tensor([0, sheet.n_units - 1, int(sheet.area_slice("b").start)])
    centres = torch.cat([drawn, corners[torch.isin(corners, pool.centres)]])
    got = spatial_loss(x, pool, centres=centres, reduction="none").numpy()
    want = spatial_loss_reference(x.numpy(), pool, centres=centres, reduction="none")
    assert got.shape == want.shape == (centres.numel(),)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    mean = spatial_loss(x, pool, centres=centres)
    assert mean.ndim == 0 and mean.dtype == torch.float32
    assert float(mean) == pytest.approx(want.mean(), abs=1e-5)


@pytest.mark.parametrize("mm", [0.5, 2.0])
def test_matches_reference_in_mm(mm: float) -> None:
    sheet, _ = _sheet("stacked", mm=mm)
    pool = build_neighbourhood_pool(sheet, 2.5 * mm)
    assert pool.stencil_size == 21  # offsets with dr^2 + dc^2 <= 6.25
    x = _random_batch(sheet, n_samples=9, seed=3)
    got = spatial_loss(x, pool, 20, _gen(5))
    want = spatial_loss_reference(x, pool, 20, _gen(5))
    assert float(got) == pytest.approx(want, abs=1e-5)


def test_seeded_centres_are_reproducible() -> None:
    sheet, _ = _sheet("stacked")
    pool = build_neighbourhood_pool(sheet, 3.0)
    x = _random_batch(sheet)
    a = spatial_loss(x, pool, 10, _gen(42))
    b = spatial_loss(x, pool, 10, _gen(42))
    c = spatial_loss(x, pool, 10, _gen(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    centres = sample_centres(pool, 10, _gen(42))
    assert centres.unique().numel() == 10
    assert torch.equal(spatial_loss(x, pool, centres=centres), a)


@pytest.mark.parametrize("kind", ["stacked", "tiled", "stacked-perm", "tiled-cross"])
def test_neighbourhoods_are_the_units_within_the_radius(kind: str) -> None:
    sheet, within = _sheet(kind, mm=0.5)
    pool = build_neighbourhood_pool(sheet, 1.6, within_area=within)
    idx, valid = pool.neighbourhoods(torch.arange(sheet.n_units))
    dist = squareform(pdist(sheet.positions_mm))
    near = dist <= 1.6
    if pool.within_area:
        near &= sheet.area[:, None] == sheet.area[None, :]
    assert pool.within_area == (kind.startswith("tiled") and within is None)
    for c in range(sheet.n_units):
        assert sorted(idx[c][valid[c]].tolist()) == np.flatnonzero(near[c]).tolist()
    np.testing.assert_array_equal(pool.sizes.numpy(), near.sum(axis=1))
    np.testing.assert_array_equal(pool.centres.numpy(), np.flatnonzero(near.sum(axis=1) >= 3))
    # the inverse-distance matrix of the stencil is D = 1 / (1 + distance in mm)
    off = pool.offsets.numpy() * 0.5
    want = 1.0 / (1.0 + squareform(pdist(off)))
    np.testing.assert_allclose(pool.inv_distance.numpy(), want, rtol=1e-6)


# ---------------------------------------------------------------------- planted answers
def test_smooth_sheet_has_lower_loss_than_shuffled() -> None:
    sheet = Sheet.build([AreaSpec(f"l{i}", 384, "text") for i in range(6)])
    pool = build_neighbourhood_pool(sheet, 5.0)
    smooth = torch.from_numpy(_smooth_batch(sheet, 32, scale_mm=4.0))
    perm = torch.from_numpy(np.random.default_rng(0).permutation(sheet.n_units))
    shuffled = smooth[:, perm]
    loss_smooth = float(spatial_loss(smooth, pool, 100, _gen(0)))
    loss_shuffled = float(spatial_loss(shuffled, pool, 100, _gen(0)))
    assert loss_smooth < 0.1  # r falls with distance as D does: corr(r, D) near 1
    assert 0.4 < loss_shuffled < 0.6  # no relation between r and D
    # the planted answer: a field is smoother than its shuffle at every length scale tried
    for scale in (2.0, 8.0):
        field = torch.from_numpy(_smooth_batch(sheet, 32, scale_mm=scale, seed=1))
        assert spatial_loss(field, pool, 50, _gen(1)) < spatial_loss(
            field[:, perm], pool, 50, _gen(1)
        )


def test_gradients_flow_to_activations() -> None:
    sheet, _ = _sheet("stacked")
    pool = build_neighbourhood_pool(sheet, 2.0)
    x = _random_batch(sheet).float().requires_grad_(True)
    centres = sample_centres(pool, 5, _gen(0))
    spatial_loss(x, pool, centres=centres).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    idx, valid = pool.neighbourhoods(centres)
    touched = torch.zeros(sheet.n_units, dtype=torch.bool)
    touched[idx[valid]] = True
    assert (x.grad[:, touched].abs().sum(0) > 0).all()
    assert (x.grad[:, ~touched] == 0).all()
    # the analytic gradient agrees with central differences along random directions
    xd = _random_batch(sheet, n_samples=6, seed=2).requires_grad_(True)
    loss = spatial_loss(xd, pool, centres=centres)
    (grad,) = torch.autograd.grad(loss, xd)
    g = _gen(9)
    for _ in range(3):
        v = torch.randn(xd.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            up = spatial_loss(xd + 1e-3 * v, pool, centres=centres)
            down = spatial_loss(xd - 1e-3 * v, pool, centres=centres)
        numeric = float(up - down) / 2e-3
        assert numeric == pytest.approx(float((grad * v).sum()), rel=1e-2, abs=1e-3)


def test_constant_units_give_finite_gradients() -> None:
    sheet, _ = _sheet("stacked")
    pool = build_neighbourhood_pool(sheet, 3.0)
    x = _random_batch(sheet).float()
    x[:, sheet.area_slice("b")] = 1.5  # a whole dead area
    x[:, [3, 10, 40]] = 0.0  # and a few dead units elsewhere
    x.requires_grad_(True)
    loss = spatial_loss(x, pool, 40, _gen(0))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # every unit constant: no correlation to speak of, loss 0.5, still finite
    flat = torch.ones(8, sheet.n_units, requires_grad=True)
    loss = spatial_loss(flat, pool, 10, _gen(0))
    loss.backward()
    assert loss.item() == pytest.approx(0.5, abs=1e-3)
    assert torch.isfinite(flat.grad).all()


def test_half_precision_and_autocast_compute_in_float32() -> None:
    sheet, _ = _sheet("tiled")
    pool = build_neighbourhood_pool(sheet, 3.0)
    x = _random_batch(sheet).float()
    plain = spatial_loss(x, pool, 20, _gen(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = spatial_loss(x, pool, 20, _gen(0))
        auto = spatial_loss(x @ torch.eye(sheet.n_units), pool, 20, _gen(0))
    assert torch.equal(same, plain)  # autocast does not reach the loss's own products
    assert auto.dtype == torch.float32
    assert float(auto) == pytest.approx(float(plain), abs=2e-2)  # the bf16 matmul before it
    for dtype in (torch.bfloat16, torch.float16):
        xh = x.to(dtype).requires_grad_(True)
        loss = spatial_loss(xh, pool, 20, _gen(0))
        loss.backward()
        assert loss.dtype == torch.float32 and xh.grad.dtype == dtype
        assert loss.item() == pytest.approx(
            spatial_loss(xh.detach().float(), pool, 20, _gen(0)).item()
        )
        assert torch.isfinite(xh.grad.float()).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    sheet, _ = _sheet("stacked-perm")
    pool = build_neighbourhood_pool(sheet, 3.0)
    x = _random_batch(sheet).float()
    cpu = spatial_loss(x, pool, 20, _gen(0))
    xc = x.cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gpu = spatial_loss(xc, pool, 20, _gen(0))
    gpu.backward()
    assert gpu.device.type == "cuda" and torch.isfinite(xc.grad).all()
    assert gpu.item() == pytest.approx(cpu.item(), abs=1e-4)


# ---------------------------------------------------------------------- bad input
def test_radius_out_of_range() -> None:
    sheet, _ = _sheet("stacked", mm=0.5)  # 18 x 16 units: diagonal hypot(17, 15) * 0.5 mm
    with pytest.raises(TopoInputError, match="smaller than one unit spacing"):
        build_neighbourhood_pool(sheet, 0.4)
    with pytest.raises(TopoInputError, match="larger than the sheet diagonal"):
        build_neighbourhood_pool(sheet, 11.4)
    with pytest.raises(TopoInputError, match="smaller than one unit"):
        build_neighbourhood_pool(sheet, float("nan"))
    assert build_neighbourhood_pool(sheet, 0.5).stencil_size == 5  # one spacing: 4 neighbours
    assert build_neighbourhood_pool(sheet, np.hypot(17, 15) * 0.5).within_area is False
    big = Sheet.build([AreaSpec(f"l{i}", 384, "text") for i in range(6)])  # 72 x 32
    with pytest.raises(TopoInputError, match=f"at most {MAX_STENCIL}"):
        build_neighbourhood_pool(big, 75.0)
    tiny = Sheet.build([AreaSpec("two", 2)], layout="tiled")
    with pytest.raises(TopoInputError, match="no unit has at least 3 units"):
        build_neighbourhood_pool(tiny, 1.0)


def test_batch_and_count_validation() -> None:
    sheet, _ = _sheet("stacked")
    pool = build_neighbourhood_pool(sheet, 2.0)
    x = _random_batch(sheet, n_samples=2)
    with pytest.raises(TopoInputError, match="at least 3 samples"):
        spatial_loss(x, pool, 5, _gen())
    with pytest.raises(TopoInputError, match="at least 3 samples"):
        spatial_loss_reference(x, pool, 5, _gen())
    x = _random_batch(sheet)
    with pytest.raises(TopoInputError, match="number of neighbourhoods"):
        spatial_loss(x, pool, pool.centres.numel() + 1, _gen())
    with pytest.raises(TopoInputError, match="number of neighbourhoods"):
        spatial_loss(x, pool, 0, _gen())
    with pytest.raises(ValueError, match="activations must be"):
        spatial_loss(x[:, :-1], pool, 5, _gen())
    with pytest.raises(ValueError, match="reduction"):
        spatial_loss(x, pool, 5, _gen(), reduction="sum")


# ---------------------------------------------------------------------- correlation vs distance
def _exact_curve(x: np.ndarray, sheet: Sheet, edges: np.ndarray, within: bool) -> np.ndarray:
    """Mean correlation over *all* pairs per distance bin (the oracle)."""
    r = np.corrcoef(x, rowvar=False)
    dist = squareform(pdist(sheet.positions_mm))
    i, j = np.triu_indices(sheet.n_units, k=1)
    keep = sheet.area[i] == sheet.area[j] if within else np.ones(i.size, dtype=bool)
    b = np.digitize(dist[i, j], edges) - 1
    out = []
    for k in range(edges.size - 1):
        sel = keep & (b == k)
        out.append(r[i[sel], j[sel]].mean() if sel.any() else np.nan)
    return np.asarray(out)


@pytest.mark.parametrize("kind", ["stacked", "tiled"])
def test_correlation_vs_distance_matches_all_pairs(kind: str) -> None:
    sheet, _ = _sheet(kind)
    x = _smooth_batch(sheet, 40, scale_mm=3.0, seed=4)
    edges = np.arange(0.5, 9.0, 1.0)
    curve = correlation_vs_distance(x, sheet, edges, max_pairs=160_000, seed=0)
    assert list(curve.columns) == ["distance_mm", "bin_lo_mm", "bin_hi_mm", "mean_r", "n_pairs"]
    np.testing.assert_allclose(curve["distance_mm"], np.arange(1.0, 9.0))
    want = _exact_curve(x, sheet, edges, within=kind == "tiled")
    np.testing.assert_allclose(curve["mean_r"], want, atol=0.02)
    assert (curve["n_pairs"] > 2_000).all() and curve["n_pairs"].sum() <= 160_000
    again = correlation_vs_distance(x, sheet, edges, max_pairs=160_000, seed=0)
    assert again.equals(curve)


def test_correlation_falls_on_smooth_sheet_and_is_flat_on_noise() -> None:
    sheet = Sheet.build([AreaSpec(f"l{i}", 384, "text") for i in range(6)])
    smooth = correlation_vs_distance(_smooth_batch(sheet, 64, scale_mm=4.0), sheet, seed=1)
    assert smooth["distance_mm"].tolist() == list(range(1, 21))
    assert stats.spearmanr(smooth["distance_mm"], smooth["mean_r"]).statistic < -0.95
    assert smooth["mean_r"].iloc[0] > 0.8 and smooth["mean_r"].iloc[-1] < 0.1
    noise = np.random.default_rng(2).normal(size=(64, sheet.n_units))
    flat = correlation_vs_distance(noise, sheet, seed=1)
    assert flat["mean_r"].abs().max() < 0.02
    assert abs(stats.linregress(flat["distance_mm"], flat["mean_r"]).slope) < 1e-3


def test_correlation_pairs_stay_within_areas_when_asked() -> None:
    # planted: area a responds with s, area b with -s; pairs across areas would correlate -1
    sheet = Sheet.build([AreaSpec("a", 64), AreaSpec("b", 64)], layout="tiled")
    rng = np.random.default_rng(0)
    s = rng.normal(size=(20, 1))
    x = np.concatenate([s, -s], axis=1).repeat(64, axis=1) + 0.1 * rng.normal(size=(20, 128))
    edges = np.arange(0.5, 12.0, 1.0)
    inside = correlation_vs_distance(x, sheet, edges, max_pairs=20_000)
    assert inside["mean_r"].dropna().min() > 0.9
    across = correlation_vs_distance(x, sheet, edges, max_pairs=20_000, within_area=False)
    assert across["mean_r"].dropna().min() < 0.5


def test_correlation_vs_distance_bad_input() -> None:
    sheet, _ = _sheet("stacked")
    x = np.zeros((10, sheet.n_units))
    with pytest.raises(TopoInputError, match="increasing edges"):
        correlation_vs_distance(x, sheet, [3.0, 1.0])
    with pytest.raises(TopoInputError, match="at least 3 samples"):
        correlation_vs_distance(x[:2], sheet)
    with pytest.raises(TopoInputError, match="activations must be"):
        correlation_vs_distance(x[:, :5], sheet)
    flat = correlation_vs_distance(x, sheet, [0.5, 1.5, 2.5])  # constant units: no usable pair
    assert (flat["n_pairs"] == 0).all() and flat["mean_r"].isna().all()
