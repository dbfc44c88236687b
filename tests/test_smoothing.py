"""Smoothing on the sheet against scipy.ndimage.gaussian_filter as normalised convolution."""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from topocli.errors import TopoInputError
from topocli.sheet import AreaSpec, Sheet
from topocli.stats.smoothing import fwhm_to_sigma, gaussian_kernel1d, smooth_map, smooth_units

SPECS = [AreaSpec("a", 300), AreaSpec("b", 210), AreaSpec("c", 77)]
# the compiled CPU backend; without numba these cases skip and the numpy backend runs instead
NUMBA = pytest.param(
    "numba",
    marks=pytest.mark.skipif(
        importlib.util.find_spec("numba") is None, reason="needs numba: pip install numba"
    ),
)
CPU_BACKENDS = [NUMBA, "numpy"]


def _stacked(mm_per_unit: float = 1.0, permutation_seed: int | None = None) -> Sheet:
    return Sheet.build(
        SPECS, "stacked", mm_per_unit=mm_per_unit, width=20, permutation_seed=permutation_seed
    )


def _tiled(mm_per_unit: float = 1.0) -> Sheet:
    return Sheet.build(SPECS, "tiled", mm_per_unit=mm_per_unit)


def _oracle(x: np.ndarray, sheet: Sheet, fwhm: float, masks: list[np.ndarray]) -> np.ndarray:
    """scipy: gaussian_filter(x*m) / gaussian_filter(m), read at the mask's units, per mask."""
    sigma = fwhm_to_sigma(fwhm, sheet.mm_per_unit)
    out = np.full(x.shape, np.nan)
    for mask_units in masks:
        for b in range(x.shape[0]):
            grid = np.nan_to_num(sheet.to_grid(np.where(mask_units, x[b], 0.0)), nan=0.0)
            m = sheet.to_grid(mask_units.astype(float), fill=0.0)
            num = ndimage.gaussian_filter(grid * m, sigma, mode="constant", truncate=3.0)
            den = ndimage.gaussian_filter(m, sigma, mode="constant", truncate=3.0)
            with np.errstate(invalid="ignore", divide="ignore"):  # den = 0 far from the mask
                vals = sheet.from_grid(num) / sheet.from_grid(den)
            out[b, mask_units] = vals[mask_units]
    return out


def _area_masks(sheet: Sheet) -> list[np.ndarray]:
    return [sheet.area == k for k in range(len(sheet.areas))]


def test_fwhm_to_sigma_formula():
    assert fwhm_to_sigma(math.sqrt(8 * math.log(2)), 1.0) == pytest.approx(1.0)
    assert fwhm_to_sigma(4.0, 0.5) == pytest.approx(4.0 / 2.3548200450309493 / 0.5)
    assert fwhm_to_sigma(0.0, 2.0) == 0.0
    with pytest.raises(TopoInputError):
        fwhm_to_sigma(-1.0, 1.0)
    with pytest.raises(TopoInputError):
        fwhm_to_sigma(2.0, 0.0)


@pytest.mark.parametrize("sigma", [0.4, 1.0, 1.7, 3.4])
def test_kernel_matches_scipy(sigma):
    k = gaussian_kernel1d(sigma)
    radius = int(3 * sigma + 0.5)
    assert k.size == 2 * radius + 1
    delta = np.zeros(4 * radius + 3)
    delta[delta.size // 2] = 1.0
    ref = ndimage.gaussian_filter1d(delta, sigma, mode="constant", truncate=3.0)
    mid = delta.size // 2
    np.testing.assert_allclose(k, ref[mid - radius : mid + radius + 1], rtol=1e-12)


@pytest.mark.parametrize("fwhm", [1.0, 2.5, 4.0, 8.0])
@pytest.mark.parametrize("mm_per_unit", [0.5, 1.0, 2.0])
def test_within_areas_equals_scipy_normalised(fwhm, mm_per_unit):
    sheet = _stacked(mm_per_unit)
    rng = np.random.default_rng(int(fwhm * 10 + mm_per_unit * 100))
    x = rng.normal(size=(3, sheet.n_units))
    got = smooth_units(x, sheet, fwhm)
    want = _oracle(x, sheet, fwhm, _area_masks(sheet))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert not np.allclose(got, x)  # it did smooth


@pytest.mark.parametrize("layout", ["stacked", "tiled"])
def test_permuted_and_tiled_sheets(layout):
    sheet = Sheet.build(SPECS, layout, mm_per_unit=1.0, width=20, permutation_seed=3)
    x = np.random.default_rng(1).normal(size=(2, sheet.n_units))
    got = smooth_units(x, sheet, 3.0)
    np.testing.assert_allclose(got, _oracle(x, sheet, 3.0, _area_masks(sheet)), rtol=1e-10)


@pytest.mark.parametrize("fwhm", [2.0, 6.0])
def test_across_areas_equals_scipy_on_whole_mask(fwhm):
    sheet = _stacked()
    x = np.random.default_rng(2).normal(size=(2, sheet.n_units))
    got = smooth_units(x, sheet, fwhm, across_areas=True)
    want = _oracle(x, sheet, fwhm, [np.ones(sheet.n_units, dtype=bool)])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # ...and it differs from the area-wise result near borders
    assert not np.allclose(got, smooth_units(x, sheet, fwhm))


@pytest.mark.parametrize(
    "specs",
    [
        SPECS,
        [AreaSpec("a", 100), AreaSpec("b", 100), AreaSpec("c", 100)],
    ],  # equal boxes share a conv
    ids=["unequal", "equal"],
)
def test_area_wise_never_leaks_but_across_does(specs):
    sheet = Sheet.build(specs, "stacked", width=10)
    x = np.random.default_rng(4).normal(size=sheet.n_units)
    spiked = x.copy()
    a = sheet.area_slice("a")
    last_row_of_a = np.flatnonzero((sheet.area == 0) & (sheet.row == sheet.row[a].max()))
    spiked[last_row_of_a[3]] += 1000.0  # on the border with area b
    base = smooth_units(x, sheet, 8.0)
    hit = smooth_units(spiked, sheet, 8.0)
    others = sheet.area != 0
    assert np.array_equal(base[others], hit[others])  # exactly unchanged
    assert not np.allclose(base[a], hit[a])
    np.testing.assert_allclose(base, _oracle(x[None], sheet, 8.0, _area_masks(sheet))[0])
    b = sheet.area_slice("b")
    across = smooth_units(spiked, sheet, 8.0, across_areas=True)
    assert not np.allclose(across[b], smooth_units(x, sheet, 8.0, across_areas=True)[b])


def test_equal_tiles_grouped_equal_scipy():
    sheet = Sheet.build([AreaSpec(f"l{i}", 784) for i in range(5)], "tiled", permutation_seed=0)
    x = np.random.default_rng(8).normal(size=(2, sheet.n_units))
    got = smooth_units(x, sheet, 2.0)
    np.testing.assert_allclose(got, _oracle(x, sheet, 2.0, _area_masks(sheet)), rtol=1e-10)


def test_constant_field_stays_constant_at_edges_and_holes():
    sheet = _stacked()
    x = np.where(sheet.area == 1, 5.0, 2.0)
    np.testing.assert_allclose(smooth_units(x, sheet, 6.0), x, rtol=1e-12)


def test_fwhm_zero_and_tiny_sigma_return_input():
    sheet = _stacked()
    x = np.random.default_rng(5).normal(size=(2, sheet.n_units))
    assert smooth_units(x, sheet, 0.0) is x
    assert np.array_equal(smooth_units(x, sheet, 0.1), x)  # radius int(3 sigma + .5) == 0


def test_types_shapes_and_dtypes_are_kept():
    sheet = _stacked()
    x64 = np.random.default_rng(6).normal(size=(4, sheet.n_units))
    x32 = x64.astype(np.float32)
    ref = smooth_units(x64, sheet, 3.0)
    out32 = smooth_units(x32, sheet, 3.0)
    assert out32.dtype == np.float32 and out32.shape == x32.shape
    np.testing.assert_allclose(out32, ref, rtol=1e-4, atol=1e-5)
    t = torch.from_numpy(x32)
    out_t = smooth_units(t, sheet, 3.0)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), ref, rtol=1e-4, atol=1e-5)
    one = smooth_units(x64[1], sheet, 3.0)
    assert one.shape == (sheet.n_units,)
    np.testing.assert_allclose(one, ref[1], rtol=1e-12)
    lead = smooth_units(x64.reshape(2, 2, -1), sheet, 3.0)
    np.testing.assert_allclose(lead.reshape(4, -1), ref, rtol=1e-12)
    bf = smooth_units(t.to(torch.bfloat16), sheet, 3.0)
    assert bf.dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    sheet = _stacked()
    x = torch.randn(8, sheet.n_units, dtype=torch.float32)
    got = smooth_units(x.cuda(), sheet, 4.0, across_areas=True)
    assert got.device.type == "cuda"
    np.testing.assert_allclose(
        got.cpu().numpy(), smooth_units(x, sheet, 4.0, across_areas=True).numpy(), atol=1e-5
    )


def test_across_areas_on_tiled_is_refused():
    sheet = _tiled()
    with pytest.raises(TopoInputError, match="stacked"):
        smooth_units(np.zeros(sheet.n_units), sheet, 2.0, across_areas=True)


def test_wrong_unit_count_is_refused():
    sheet = _stacked()
    with pytest.raises(TopoInputError, match="units"):
        smooth_units(np.zeros((2, sheet.n_units + 1)), sheet, 2.0)


@pytest.mark.parametrize("across", [False, True])
def test_smooth_map_leaves_nans_out(across):
    sheet = _stacked(0.5)
    rng = np.random.default_rng(7)
    v = rng.normal(size=sheet.n_units)
    nan = rng.random(sheet.n_units) < 0.1
    v[nan] = np.nan
    got = smooth_map(v, sheet, 3.0, across_areas=across)
    finite = ~nan
    masks = [finite] if across else [(sheet.area == k) & finite for k in range(len(sheet.areas))]
    want = _oracle(np.nan_to_num(v)[None], sheet, 3.0, masks)[0]
    assert np.isnan(got[nan]).all()
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-10)


def test_a_huge_fwhm_averages_each_area_instead_of_allocating_a_huge_kernel():
    import numpy as np

    from topocli.sheet import AreaSpec, Sheet
    from topocli.stats.smoothing import gaussian_kernel1d, smooth_units

    assert gaussian_kernel1d(1e300, max_radius=5).size == 11
    sheet = Sheet.build([AreaSpec("a", 50), AreaSpec("b", 30)], "stacked", width=10)
    x = np.random.default_rng(0).normal(size=(3, sheet.n_units))
    for fwhm in (1e6, 1e308):
        y = smooth_units(x, sheet, fwhm)
        for k in range(len(sheet.areas)):
            sl = sheet.area_slice(k)
            want = np.broadcast_to(x[:, sl].mean(axis=1, keepdims=True), y[:, sl].shape)
            np.testing.assert_allclose(y[:, sl], want)


def test_planted_disc_smoothing_finds_it_and_spills_over():
    """At 8 mm most significant units are spill-over: FDR's 5% does not hold for units."""
    import numpy as np

    from topocli.sheet import AreaSpec, Sheet
    from topocli.stats.contrasts import bh_fdr, welch_t
    from topocli.stats.smoothing import smooth_units

    sheet = Sheet.build([AreaSpec("area", 48 * 48)], "tiled")
    disc = (sheet.row - 24) ** 2 + (sheet.col - 24) ** 2 <= 36
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 40, sheet.n_units))
    a[:, disc] += 1.0  # d = 1

    def detect(fwhm):
        x, y = (smooth_units(v, sheet, fwhm) if fwhm else v for v in (a, b))
        res = welch_t(40, x.mean(0), x.var(0, ddof=1), 40, y.mean(0), y.var(0, ddof=1))
        sig = (bh_fdr(res.p) < 0.05) & (res.t > 0)
        hits = (sig & disc).sum()
        return 2 * hits / (sig.sum() + disc.sum()), 1 - hits / sig.sum()

    (dice0, fdp0), (dice8, fdp8) = detect(0), detect(8)
    assert dice0 > 0.85 and fdp0 < 0.15
    assert dice8 < 0.6 and fdp8 > 0.5


# ---------------------------------------------------------------- the float64 CPU path (issue 16)
def _dense_oracle(x: np.ndarray, sheet: Sheet, fwhm: float, across: bool) -> np.ndarray:
    """Plain dense normalised convolution: every pair of units, weight k[dr] k[dc] if same region.

    Independent of the grids, blocks and BLAS of the implementation: units, their cells and the
    1-D weights only. NaNs are left out of numerator and denominator and stay NaN.
    """
    k = gaussian_kernel1d(fwhm_to_sigma(fwhm, sheet.mm_per_unit), max_radius=max(sheet.grid_shape))
    r = (k.size - 1) // 2
    dr = sheet.row[:, None].astype(int) - sheet.row[None, :].astype(int)
    dc = sheet.col[:, None].astype(int) - sheet.col[None, :].astype(int)
    near = (np.abs(dr) <= r) & (np.abs(dc) <= r)
    weights = np.where(near, k[np.clip(dr + r, 0, 2 * r)] * k[np.clip(dc + r, 0, 2 * r)], 0.0)
    if not across:
        weights = weights * (sheet.area[:, None] == sheet.area[None, :])
    x = np.atleast_2d(x).astype(np.float64)
    valid = np.isfinite(x)
    num = np.nan_to_num(x) @ weights.T
    den = valid.astype(float) @ weights.T
    return np.where(valid, num / den, np.nan)


DENSE_SHEETS = {
    "stacked": lambda: Sheet.build(SPECS, "stacked", width=20),
    "stacked-permuted": lambda: Sheet.build(SPECS, "stacked", width=20, permutation_seed=5),
    "tiled": lambda: Sheet.build(SPECS, "tiled", mm_per_unit=0.5),
    "equal-tiles": lambda: Sheet.build([AreaSpec(f"t{i}", 96) for i in range(4)], "tiled"),
}


@pytest.mark.parametrize("backend", [NUMBA, "numpy", "torch"])
@pytest.mark.parametrize("fwhm", [1.5, 4.0, 9.0, 1e6])
@pytest.mark.parametrize("name", sorted(DENSE_SHEETS))
def test_both_backends_equal_a_dense_float64_oracle(name, fwhm, backend):
    sheet = DENSE_SHEETS[name]()
    x = np.random.default_rng(11).normal(size=(3, sheet.n_units))
    got = smooth_units(x, sheet, fwhm, backend=backend)
    np.testing.assert_allclose(got, _dense_oracle(x, sheet, fwhm, False), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", [NUMBA, "numpy", "torch"])
@pytest.mark.parametrize("across", [False, True])
def test_nan_aware_and_across_areas_equal_the_dense_oracle(across, backend):
    sheet = DENSE_SHEETS["stacked-permuted"]()
    rng = np.random.default_rng(12)
    v = rng.normal(size=(4, sheet.n_units))
    v[rng.random(v.shape) < 0.15] = np.nan
    got = smooth_map(v, sheet, 5.0, across_areas=across, backend=backend)
    want = _dense_oracle(v, sheet, 5.0, across)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(v))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cpu_paths_are_float64_even_for_float32_input(backend):
    """float32 in -> float32 out, rounded once from the float64 result (torch used float32)."""
    sheet = DENSE_SHEETS["stacked"]()
    x = np.random.default_rng(13).normal(size=(5, sheet.n_units)).astype(np.float32)
    got = smooth_units(x, sheet, 4.0, backend=backend)
    assert got.dtype == np.float32
    want64 = _dense_oracle(x.astype(np.float64), sheet, 4.0, False)
    want = want64.astype(np.float32)
    np.testing.assert_array_equal(got, want)
    as_tensor = smooth_units(torch.from_numpy(x), sheet, 4.0, backend=backend)
    assert as_tensor.dtype == torch.float32
    np.testing.assert_array_equal(as_tensor.numpy(), want)
    ints = smooth_units(np.arange(sheet.n_units) % 7, sheet, 4.0, backend=backend)
    assert ints.dtype == np.float32
    np.testing.assert_array_equal(
        ints, _dense_oracle(np.arange(sheet.n_units) % 7, sheet, 4.0, False)[0].astype(np.float32)
    )
    half = smooth_units(x.astype(np.float16), sheet, 4.0, backend=backend)
    assert half.dtype == np.float16
    want_half = _dense_oracle(x.astype(np.float16).astype(np.float64), sheet, 4.0, False)
    np.testing.assert_array_equal(half, want_half.astype(np.float16))
    strided = np.asfortranarray(x.astype(np.float64))[:, ::-1][:, ::-1]  # not C-contiguous
    np.testing.assert_allclose(
        smooth_units(strided, sheet, 4.0, backend=backend), want64, rtol=0, atol=1e-12
    )


def test_blocks_and_split_products_change_nothing(monkeypatch):
    """Tiny blocks and products: every block edge, halo and split is crossed many times."""
    from topocli.stats import smoothing

    sheet = DENSE_SHEETS["stacked-permuted"]()
    x = np.random.default_rng(14).normal(size=(7, sheet.n_units))
    want = _dense_oracle(x, sheet, 6.0, False)
    for block, mnk, cache in [(1, 1, 1), (3, 50, 700), (5, 1000, 10**9)]:
        monkeypatch.setattr(smoothing, "_BLOCK_COLS", block)
        monkeypatch.setattr(smoothing, "_BLOCK_ROWS", block + 1)
        monkeypatch.setattr(smoothing, "_SERIAL_MNK", mnk)
        monkeypatch.setattr(smoothing, "_CACHE_CELLS", cache)
        got = smooth_units(x, sheet, 6.0, backend="numpy")
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_auto_backend_on_cpu_is_a_cpu_one_and_unknown_backend_is_refused(monkeypatch):
    from topocli.stats import smoothing

    sheet = _stacked()
    calls = []
    monkeypatch.setattr(smoothing, "_run_torch", lambda *a: calls.append("torch"))
    smooth_units(np.zeros((1, sheet.n_units)), sheet, 3.0)
    smooth_units(torch.zeros(1, sheet.n_units), sheet, 3.0)
    assert calls == []
    smooth_units(np.zeros((1, sheet.n_units)), sheet, 3.0, backend="torch")
    assert calls == ["torch"]
    with pytest.raises(TopoInputError, match="backend"):
        smooth_units(np.zeros(sheet.n_units), sheet, 3.0, backend="cuda")


@pytest.mark.parametrize("numba", [NUMBA, "missing"])
def test_auto_takes_numba_when_installed_else_numpy_with_the_same_numbers(numba, monkeypatch):
    from topocli.stats import smoothing

    if numba == "missing":
        why = "numba is not installed (pip install numba)"
        monkeypatch.setattr(smoothing, "_NUMBA", {"module": None, "why": why})
    sheet = DENSE_SHEETS["stacked-permuted"]()
    x = np.random.default_rng(18).normal(size=(3, sheet.n_units))
    ran = []
    for name in ("_smooth_numba", "_smooth_numpy"):
        real = getattr(smoothing, name)
        monkeypatch.setattr(
            smoothing, name, lambda *a, _real=real, _name=name: ran.append(_name) or _real(*a)
        )
    got = smooth_units(x, sheet, 4.0)
    want = "_smooth_numba" if numba == "numba" else "_smooth_numpy"
    assert ran == [want] and smoothing.cpu_backend() == want.removeprefix("_smooth_")
    np.testing.assert_allclose(got, _dense_oracle(x, sheet, 4.0, False), rtol=0, atol=1e-12)
    if numba == "missing":
        with pytest.raises(TopoInputError, match="pip install numba"):
            smooth_units(x, sheet, 4.0, backend="numba")


def test_a_broken_numba_is_said_and_the_numpy_backend_runs(monkeypatch):
    from topocli.errors import TopoWarning
    from topocli.stats import smoothing

    def broken():
        raise RuntimeError("cannot cache function 'separable': no locator available for file")

    monkeypatch.setattr(smoothing, "_NUMBA", {})
    monkeypatch.setattr(smoothing, "_import_kernels", broken)
    sheet = _stacked()
    x = np.random.default_rng(19).normal(size=(2, sheet.n_units))
    with pytest.warns(TopoWarning, match="NUMBA_CACHE_DIR"):
        got = smooth_units(x, sheet, 4.0)
    assert smoothing.cpu_backend() == "numpy"
    np.testing.assert_array_equal(got, smooth_units(x, sheet, 4.0, backend="numpy"))
    with pytest.raises(TopoInputError, match="cannot be used"):
        smooth_units(x, sheet, 4.0, backend="numba")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_map_gives_the_same_bits_whatever_batch_it_is_smoothed_in(backend):
    """The pipeline smooths batch by batch; one call on every map must give the same bits."""
    sheet = DENSE_SHEETS["stacked-permuted"]()
    x = np.random.default_rng(15).normal(size=(23, sheet.n_units)).astype(np.float32)
    whole = smooth_units(x, sheet, 4.0, backend=backend)
    parts = [smooth_units(x[i : i + 4], sheet, 4.0, backend=backend) for i in range(0, 23, 4)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    v = x.astype(np.float64)
    v[:, ::7] = np.nan
    v[3] = np.nan  # a map with nothing finite stays all NaN, without a warning
    v[[6, 9], 11] = np.nan  # two maps with a pattern of their own
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = smooth_map(v, sheet, 4.0, backend=backend)
    assert np.isnan(got[3]).all()
    first = smooth_map(v[:5], sheet, 4.0, backend=backend)
    np.testing.assert_array_equal(np.concatenate([first, got[5:]]), got)
    alone = [smooth_map(v[i], sheet, 4.0, backend=backend) for i in (6, 9, 12)]
    np.testing.assert_array_equal(np.stack(alone), got[[6, 9, 12]])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_threads_split_the_maps_and_change_no_bit(backend, monkeypatch):
    """Each thread smooths its own maps: any thread count gives the one-thread bits."""
    from topocli.stats import smoothing

    started = []

    class Pool(smoothing.ThreadPoolExecutor):
        def __init__(self, workers):
            started.append(workers)
            super().__init__(workers)

    monkeypatch.setattr(smoothing, "ThreadPoolExecutor", Pool)
    monkeypatch.setattr(smoothing, "_THREAD_CELLS", 0)  # thread even these small stacks
    monkeypatch.setattr(smoothing, "_CACHE_CELLS", 1)  # one map per chunk
    sheet = DENSE_SHEETS["stacked-permuted"]()
    rng = np.random.default_rng(16)
    x = rng.normal(size=(9, sheet.n_units)).astype(np.float32)
    v = x.astype(np.float64)
    v[rng.random(v.shape) < 0.1] = np.nan
    one = smooth_units(x, sheet, 4.0, threads=1, backend=backend)
    one_nan = smooth_map(v, sheet, 4.0, threads=1, backend=backend)
    assert started == []
    for threads in (2, 3, 16):
        got = smooth_units(x, sheet, 4.0, threads=threads, backend=backend)
        np.testing.assert_array_equal(got, one)
        got = smooth_map(v, sheet, 4.0, threads=threads, backend=backend)
        np.testing.assert_array_equal(got, one_nan)
    assert started and max(started) == 9  # never more threads than chunks (maps, here)
    want = _dense_oracle(x.astype(np.float64), sheet, 4.0, False).astype(np.float32)
    np.testing.assert_array_equal(one, want)
    want_nan = _dense_oracle(v, sheet, 4.0, False)
    np.testing.assert_allclose(one_nan, want_nan, rtol=0, atol=1e-12, equal_nan=True)
    with pytest.raises(TopoInputError, match="threads"):
        smooth_units(x, sheet, 4.0, threads=0, backend=backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("nan", [False, True])
def test_rectangular_areas_are_their_own_grid_and_equal_the_oracle(nan, backend):
    """Areas that fill their boxes skip the zero-filled grid and divide straight into out."""
    sheet = Sheet.build([AreaSpec("a", 12 * 16), AreaSpec("b", 12 * 16)], "stacked", width=16)
    x = np.random.default_rng(17).normal(size=(3, sheet.n_units))
    if nan:
        x[0, [5, 40, 300]] = np.nan
    smooth = smooth_map if nan else smooth_units
    got = smooth(x, sheet, 5.0, backend=backend)
    np.testing.assert_allclose(got, _dense_oracle(x, sheet, 5.0, False), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(x))


# ---------------------------------------------------------------- the numba CPU path (issue 16)
def test_nan_patterns_group_the_maps_that_share_one():
    from topocli.stats.smoothing import _nan_patterns

    v = np.ones((6, 10))
    v[[0, 2, 5], 3] = np.nan
    v[[1, 3], 7] = np.inf
    assert _nan_patterns(v).tolist() == [0, 1, 0, 1, 2, 0]
    assert _nan_patterns(np.ones((3, 4))).tolist() == [0, 0, 0]


@pytest.mark.parametrize("fwhm", [4.0, 8.0])
def test_numba_equals_the_blas_path_on_a_large_rectangular_sheet(fwhm):
    """The benchmark's geometry (one rectangular area, read in place), scaled down: 1e-12."""
    pytest.importorskip("numba", reason="needs numba: pip install numba")
    sheet = Sheet.build([AreaSpec("sheet", 76 * 128)], "stacked", width=128)
    rng = np.random.default_rng(20)
    x = rng.standard_normal((4, sheet.n_units)).astype(np.float32)
    got = smooth_units(x.astype(np.float64), sheet, fwhm, backend="numba")
    blas = smooth_units(x.astype(np.float64), sheet, fwhm, backend="numpy")
    assert np.abs(got - blas).max() <= 1e-12 * np.abs(blas).max()
    # against scipy's own filter as normalised convolution (mask = the whole grid)
    sigma = fwhm_to_sigma(fwhm, sheet.mm_per_unit)
    grids = x.astype(np.float64).reshape(4, 76, 128)

    def filt(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, (0, sigma, sigma), mode="constant", truncate=3.0)

    want = (filt(grids) / filt(np.ones((1, 76, 128)))).reshape(x.shape)
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    got32 = smooth_units(x, sheet, fwhm, backend="numba")
    assert got32.dtype == np.float32
    np.testing.assert_array_equal(got32, got.astype(np.float32))


def test_numba_shares_the_mask_pass_between_maps_with_one_nan_pattern():
    """Maps interleaved over three NaN patterns (and none): each equals the dense oracle."""
    pytest.importorskip("numba", reason="needs numba: pip install numba")
    sheet = DENSE_SHEETS["stacked-permuted"]()
    rng = np.random.default_rng(21)
    v = rng.normal(size=(9, sheet.n_units))
    holes = [rng.random(sheet.n_units) < 0.2 for _ in range(3)]
    for i in range(8):  # map 8 keeps every unit
        v[i, holes[i % 3]] = np.nan
    for across in (False, True):
        got = smooth_map(v, sheet, 5.0, across_areas=across, backend="numba")
        want = _dense_oracle(v, sheet, 5.0, across)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(v))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)
