"""Split-half fROI profiles: selection, Dice, cross-validation and planted answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from topocli.errors import TopoInputError
from topocli.sheet import AreaSpec, Sheet
from topocli.stats.froi import (
    PROFILE_COLUMNS,
    dice,
    froi_masks,
    froi_profiles,
    search_regions,
    split_half_dice,
    top_percent_mask,
)


def _sheet() -> Sheet:
    return Sheet.build([AreaSpec("a", 390), AreaSpec("b", 200)], "stacked", width=20)


# ---------------------------------------------------------------------- selection
def test_top_percent_count_ties_and_nans():
    t = np.array([1.0, 5.0, 5.0, np.nan, 3.0, 5.0, 0.0, -1.0, 2.0, 4.0])
    m = top_percent_mask(t, None, 20)  # 9 finite -> ceil(1.8) = 2 units
    assert m.sum() == 2 and m[1] and m[2] and not m[5]  # ties to the lower index
    m = top_percent_mask(t, None, 100)
    assert m.sum() == 9 and not m[3]
    region = np.zeros(10, dtype=bool)
    region[5:] = True
    m = top_percent_mask(t, region, 40)  # 5 units -> 2
    assert np.flatnonzero(m).tolist() == [5, 9]
    assert top_percent_mask(np.full(4, np.nan), None, 50).sum() == 0


def test_top_percent_rounding_is_exact_ceil():
    sheet = _sheet()
    t = np.random.default_rng(0).normal(size=sheet.n_units)
    m = top_percent_mask(t, sheet.area_slice("a"), 10)  # 10 % of 390 = 39 exactly
    assert m.sum() == 39 and not m[390:].any()
    chosen = t[m]
    rest = t[sheet.area_slice("a")][~m[sheet.area_slice("a")]]
    assert chosen.min() > rest.max()
    assert top_percent_mask(t, sheet, 1).sum() == 6  # ceil(5.9)
    assert top_percent_mask(t[:100], None, 7).sum() == 7  # naive ceil(0.07 * 100) gives 8
    for bad in (0, -5, 101, np.nan):
        with pytest.raises(TopoInputError):
            top_percent_mask(t, sheet, bad)


def test_dice_equals_scipy():
    rng = np.random.default_rng(1)
    for _ in range(5):
        a, b = rng.random(50) < 0.3, rng.random(50) < 0.4
        assert dice(a, b) == pytest.approx(1 - distance.dice(a, b))
    assert dice(np.ones(3, bool), np.ones(3, bool)) == 1.0
    assert np.isnan(dice(np.zeros(3, bool), np.zeros(3, bool)))


def test_search_regions():
    sheet = _sheet()
    names = [n for n, _ in search_regions(sheet, "each")]
    assert names == ["a", "b"]
    ((name, mask),) = search_regions(sheet, "sheet")
    assert name == "sheet" and mask.all()
    ((name, mask),) = search_regions(sheet, ["b"])
    assert name == "b" and mask.sum() == 200 and mask[390:].all()
    with pytest.raises(TopoInputError, match="unknown area"):
        search_regions(sheet, ["nope"])


# ---------------------------------------------------------------------- planted profiles
def _simulate(sheet: Sheet, planted: np.ndarray, n_per: int, seed: int):
    """Per-stimulus responses for conditions A, B, C; planted units respond to A."""
    rng = np.random.default_rng(seed)
    conds = ["A", "B", "C"]
    acts = {}
    for c in conds:
        for s in (0, 1):
            x = rng.normal(size=(n_per, sheet.n_units))
            if c == "A":
                x[:, planted] += 1.5
            acts[c, s] = x
    means = np.stack([[acts[c, s].mean(0) for s in (0, 1)] for c in conds])
    var = np.stack([[acts[c, s].var(0, ddof=1) for s in (0, 1)] for c in conds])
    n = np.full((3, 2), n_per)
    t = np.stack(
        [
            stats.ttest_ind(
                acts["A", s], np.vstack([acts["B", s], acts["C", s]]), equal_var=False
            ).statistic
            for s in (0, 1)
        ]
    )
    return conds, acts, means, var, n, t


def test_planted_units_are_recovered_and_profile_prefers_a():
    sheet = _sheet()
    a = np.flatnonzero(sheet.area == 0)
    planted = np.zeros(sheet.n_units, dtype=bool)
    planted[np.random.default_rng(9).choice(a, 39, replace=False)] = True
    conds, _, means, var, n, t = _simulate(sheet, planted, 40, seed=2)
    ((_, m_even, m_odd),) = froi_masks(t, sheet, ["a"], 10)
    assert dice(m_even, planted) >= 0.9 and dice(m_odd, planted) >= 0.9
    prof = froi_profiles(t, means, sheet, conds, "A>BC", areas="each", top_percent=10, n=n, var=var)
    assert list(prof.columns) == PROFILE_COLUMNS
    assert len(prof) == 2 * 3 * 3
    assert set(prof["froi"]) == {"A>BC@a", "A>BC@b"}
    fa = prof[prof["froi"] == "A>BC@a"].set_index(["condition", "split_direction"])
    for d in ("even->odd", "odd->even", "mean"):
        assert fa.loc[("A", d), "response_mean"] > 1.0
        for other in ("B", "C"):
            assert abs(fa.loc[(other, d), "response_mean"]) < 0.3
            assert (
                fa.loc[("A", d), "response_mean"]
                > fa.loc[(other, d), "response_mean"] + 5 * (fa.loc[(other, d), "response_sem"])
            )
    assert fa.loc[("A", "even->odd"), "n_units"] == 39
    assert fa.loc[("A", "even->odd"), "n_stimuli"] == 40
    assert fa.loc[("A", "mean"), "n_stimuli"] == 80
    # the fROI inside area b found nothing planted: its A response is noise
    fb = prof[prof["froi"] == "A>BC@b"].set_index(["condition", "split_direction"])
    assert fb.loc[("A", "mean"), "response_mean"] < 0.5


def test_directions_are_really_cross_validated():
    """Even and odd halves disagree: each direction must read the *other* half."""
    sheet = _sheet()
    u = sheet.n_units
    s_even = np.zeros(u, dtype=bool)
    s_even[:39] = True  # where the even half's t peaks
    s_odd = np.zeros(u, dtype=bool)
    s_odd[100:139] = True  # where the odd half's t peaks
    t = np.zeros((2, u))
    t[0, s_even] = 10.0
    t[1, s_odd] = 10.0
    means = np.zeros((1, 2, u))
    means[0, 0, s_even] = 100.0  # double dipping would read these...
    means[0, 1, s_odd] = 100.0
    means[0, 1, s_even] = 3.0  # ...cross-validation reads these
    means[0, 0, s_odd] = 7.0
    prof = froi_profiles(t, means, sheet, ["A"], "c", areas=["a"], top_percent=10)
    got = prof.set_index("split_direction")["response_mean"]
    assert got["even->odd"] == pytest.approx(3.0)
    assert got["odd->even"] == pytest.approx(7.0)
    assert got["mean"] == pytest.approx(5.0)
    assert np.isnan(prof["response_sem"]).all()  # no n / var given
    dice_table = split_half_dice(t, sheet, "c", areas=["a"], top_percent=10)
    assert dice_table.loc[0, "dice"] == 0.0


def test_sem_is_exact_when_units_covary_and_a_bound_otherwise():
    sheet = _sheet()
    rng = np.random.default_rng(4)
    n_per = 30
    t = np.zeros((2, sheet.n_units))
    t[:, :39] = 5.0
    froi = slice(0, 39)
    shared = [rng.normal(size=n_per) for _ in range(2)]
    offsets = rng.normal(size=sheet.n_units)
    scales = rng.uniform(0.5, 2.0, size=sheet.n_units)
    perfect = [shared[s][:, None] * scales + offsets for s in (0, 1)]  # units co-vary perfectly
    noisy = [rng.normal(size=(n_per, sheet.n_units)) * scales for _ in (0, 1)]
    for acts, exact in ((perfect, True), (noisy, False)):
        means = np.stack([[a.mean(0) for a in acts]])
        var = np.stack([[a.var(0, ddof=1) for a in acts]])
        prof = froi_profiles(
            t, means, sheet, ["A"], areas=["a"], n=np.full((1, 2), n_per), var=var
        ).set_index("split_direction")
        for d, held in (("even->odd", 1), ("odd->even", 0)):
            r = acts[held][:, froi].mean(1)  # per-stimulus fROI response
            assert prof.loc[d, "response_mean"] == pytest.approx(r.mean())
            true_sem = stats.sem(r)
            if exact:
                assert prof.loc[d, "response_sem"] == pytest.approx(true_sem, rel=1e-10)
            else:
                assert prof.loc[d, "response_sem"] >= true_sem
        s1, s2 = prof.loc["even->odd", "response_sem"], prof.loc["odd->even", "response_sem"]
        assert prof.loc["mean", "response_sem"] == pytest.approx(np.hypot(s1, s2) / 2)


def test_whole_sheet_froi_and_bad_shapes():
    sheet = _sheet()
    t = np.random.default_rng(0).normal(size=(2, sheet.n_units))
    means = np.zeros((2, 2, sheet.n_units))
    prof = froi_profiles(t, means, sheet, ["x", "y"], "c", areas="sheet", top_percent=10)
    assert set(prof["froi"]) == {"c@sheet"} and (prof["n_units"] == 59).all()
    with pytest.raises(TopoInputError):
        froi_profiles(t[:1], means, sheet, ["x", "y"])
    with pytest.raises(TopoInputError):
        froi_profiles(t, means, sheet, ["x"])
    with pytest.raises(TopoInputError):
        froi_profiles(t, means, sheet, ["x", "y"], n=np.ones((2, 2)))
