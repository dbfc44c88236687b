"""Statistics from sufficient statistics against scipy / statsmodels, plus planted simulations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats
import statsmodels.api as sm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import DescrStatsW

from topocli.errors import TopoInputError
from topocli.stats.contrasts import (
    bh_fdr,
    category_vs_baseline,
    category_vs_rest,
    check_weights,
    cohens_d,
    contrast_d,
    contrast_name,
    contrast_t,
    match_contrast,
    normalized_weights,
    one_way_anova,
    parse_contrast,
    same_contrast,
    t_pvalue,
    weights_vector,
    welch_t,
)
from topocli.stats.suffstats import SufficientStats

ALTS = ["greater", "less", "two-sided"]


def _moments(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    return float(x.shape[0]), x.mean(axis=0), x.var(axis=0, ddof=1)


def _two_groups(seed: int = 0, units: int = 300):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.3, 1.0, (23, units)) * rng.uniform(0.5, 2, units)
    b = rng.normal(0.0, 2.5, (41, units))
    return a, b


def _grouped(seed: int, sizes: list[int], units: int):
    """Raw data [N, U] with group labels; group k has mean shift k * 0.2 and its own scale."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(groups)
    scale = rng.uniform(0.5, 3.0, (len(sizes), 1))
    x = rng.standard_normal((groups.size, units)) * scale[groups] + 0.2 * groups[:, None]
    return x, groups


def _stats(x, groups, n_groups):
    stats = SufficientStats(n_groups, x.shape[1])
    for i in range(0, x.shape[0], 37):
        stats.update(x[i : i + 37], groups[i : i + 37])
    return stats


# ------------------------------------------------------------------------------------ Welch t
@pytest.mark.parametrize("alternative", ALTS)
def test_welch_t_equals_scipy(alternative):
    a, b = _two_groups()
    ref = scipy.stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
    res = welch_t(*_moments(a), *_moments(b), alternative=alternative)
    np.testing.assert_allclose(res.t, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(res.df, ref.df, rtol=1e-10)
    np.testing.assert_allclose(res.p, ref.pvalue, rtol=1e-9, atol=1e-300)
    assert np.isfinite(res.p).all() and (res.p > 0).all() and (res.p <= 1).all()


def test_t_pvalue_equals_scipy_t_distribution_on_many_values():
    rng = np.random.default_rng(1)
    t = rng.normal(0, 4, 200_000)  # above the threading threshold
    df = rng.uniform(1.5, 300, t.size)
    np.testing.assert_allclose(t_pvalue(t, df, "greater"), scipy.stats.t.sf(t, df), rtol=1e-9)
    np.testing.assert_allclose(t_pvalue(t, df, "less"), scipy.stats.t.cdf(t, df), rtol=1e-9)
    two = 2 * scipy.stats.t.sf(np.abs(t), df)
    np.testing.assert_allclose(t_pvalue(t, df, "two-sided"), two, rtol=1e-9)
    tk = t.reshape(400, 500)  # 2-D input, df broadcast per row
    dk = df[:400, None]
    np.testing.assert_allclose(t_pvalue(tk, dk), scipy.stats.t.sf(tk, dk), rtol=1e-9)


def test_zero_variance_gives_nan_without_warnings():
    a, b = _two_groups(2, 5)
    a[:, 0] = 3.0
    b[:, 0] = 1.0  # both constant, different means: scipy says inf
    a[:, 1] = 2.0
    b[:, 1] = 2.0  # both constant, same mean: 0 / 0
    a[:, 2] = 2.0  # only one group constant: a finite t
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = welch_t(*_moments(a), *_moments(b), alternative="two-sided")
        q = bh_fdr(res.p)
    assert np.isnan(res.t[:2]).all() and np.isnan(res.df[:2]).all() and np.isnan(res.p[:2]).all()
    assert np.isnan(q[:2]).all()
    assert np.isfinite(res.t[2:]).all()
    with warnings.catch_warnings():  # scipy warns about the constant column of a
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = scipy.stats.ttest_ind(a[:, 2:], b[:, 2:], equal_var=False)
    np.testing.assert_allclose(res.t[2:], ref.statistic, rtol=1e-10)


def test_too_few_stimuli_give_nan():
    res = welch_t(1, np.ones(3), np.full(3, np.nan), 5, np.zeros(3), np.ones(3))
    assert np.isnan(res.t).all() and np.isnan(res.p).all()
    with pytest.raises(ValueError, match="alternative"):
        welch_t(3, 1.0, 1.0, 3, 0.0, 1.0, alternative="bigger")


# ------------------------------------------------------------------------------------ contrasts
def test_contrast_t_with_one_minus_one_equals_welch():
    a, b = _two_groups(3)
    n = [a.shape[0], b.shape[0]]
    mean = np.stack([a.mean(0), b.mean(0)])
    var = np.stack([a.var(0, ddof=1), b.var(0, ddof=1)])
    for alt in ALTS:
        c = contrast_t([1, -1], n, mean, var, alt)
        w = welch_t(*_moments(a), *_moments(b), alternative=alt)
        for x, y in zip(c, w, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-12)


def test_single_weight_is_the_one_sample_t_test():
    rng = np.random.default_rng(4)
    x = rng.normal(0.2, 1, (15, 50))
    res = contrast_t([1.0], [15], x.mean(0)[None], x.var(0, ddof=1)[None], "two-sided")
    ref = scipy.stats.ttest_1samp(x, 0.0)
    np.testing.assert_allclose(res.t, ref.statistic, rtol=1e-12)
    np.testing.assert_allclose(res.df, 14)
    np.testing.assert_allclose(res.p, ref.pvalue, rtol=1e-9)


def test_weighted_contrast_equals_statsmodels_cell_means_hc2():
    """Independent route: OLS on one dummy per condition (cell-means model).

    The coefficients are the condition means, and the HC2 sandwich covariance is exactly
    diag(s_k^2 / n_k) in this model (leverage 1 / n_k, so sum e^2 / (1 - h) / n_k^2 =
    s_k^2 / n_k), so statsmodels' t_test of the contrast equals c'mu / sqrt(sum c^2 s^2 / n)
    exactly. statsmodels uses N - G residual df for p, so df is checked separately: with
    per-condition variances and counts from statsmodels' DescrStatsW, Satterthwaite's formula.
    """
    sizes = [12, 20, 9, 15]
    x, groups = _grouped(5, sizes, 6)
    stats = _stats(x, groups, 4)
    weights = parse_contrast("c0 - 0.5*c1 - 0.5*c3", ["c0", "c1", "c2", "c3"])
    w = weights_vector(weights, ["c0", "c1", "c2", "c3"])
    res = contrast_t(w, stats.count, stats.mean, stats.variance(), "two-sided")
    dummies = (groups[:, None] == np.arange(4)).astype(float)
    for u in range(x.shape[1]):
        fit = sm.OLS(x[:, u], dummies).fit(cov_type="HC2")
        ref = fit.t_test(w[None, :])
        np.testing.assert_allclose(res.t[u], float(np.squeeze(ref.tvalue)), rtol=1e-10)
        # WLS with weights 1 / s_k^2 is a second exact route (its scale is exactly 1)
        s2 = np.array([x[groups == k, u].var(ddof=1) for k in range(4)])
        wls = sm.WLS(x[:, u], dummies, weights=1.0 / s2[groups]).fit()
        np.testing.assert_allclose(res.t[u], float(np.squeeze(wls.t_test(w).tvalue)), rtol=1e-9)
        d = [DescrStatsW(x[groups == k, u]) for k in range(4)]
        a = np.array([w[k] ** 2 * d[k].var_ddof(1) / d[k].nobs for k in range(4)])
        dof = np.array([d[k].nobs - 1 for k in range(4)])
        keep = w != 0
        df = a[keep].sum() ** 2 / (a[keep] ** 2 / dof[keep]).sum()
        np.testing.assert_allclose(res.df[u], df, rtol=1e-10)
        np.testing.assert_allclose(res.p[u], 2 * scipy.stats.t.sf(abs(res.t[u]), df), rtol=1e-9)


def test_contrast_ignores_empty_zero_weight_groups():
    rng = np.random.default_rng(6)
    a, b = rng.normal(1, 1, (10, 4)), rng.normal(0, 1, (8, 4))
    n = [10, 0, 8]
    mean = np.stack([a.mean(0), np.zeros(4), b.mean(0)])
    var = np.stack([a.var(0, ddof=1), np.full(4, np.nan), b.var(0, ddof=1)])
    res = contrast_t([1, 0, -1], n, mean, var)
    ref = scipy.stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    np.testing.assert_allclose(res.t, ref.statistic, rtol=1e-12)
    with pytest.raises(ValueError, match="weights for"):
        contrast_t([1, -1], n, mean, var)


def test_cohens_d_definitions():
    a, b = _two_groups(7, 20)
    pooled = ((22 * a.var(0, ddof=1)) + 40 * b.var(0, ddof=1)) / 62
    ref = (a.mean(0) - b.mean(0)) / np.sqrt(pooled)
    d = cohens_d(*_moments(a), *_moments(b))
    np.testing.assert_allclose(d, ref, rtol=1e-12)
    n = [23, 41]
    mean = np.stack([a.mean(0), b.mean(0)])
    var = np.stack([a.var(0, ddof=1), b.var(0, ddof=1)])
    np.testing.assert_allclose(contrast_d([1, -1], n, mean, var), ref, rtol=1e-12)
    np.testing.assert_allclose(contrast_d([3, -3], n, mean, var), ref, rtol=1e-12)
    # 3 conditions: d = (m0 - (m1 + m2) / 2) / pooled SD of the three
    x, groups = _grouped(8, [10, 12, 14], 5)
    stats = _stats(x, groups, 3)
    d1 = contrast_d([1, -0.5, -0.5], stats.count, stats.mean, stats.variance())
    d2 = contrast_d([2, -1, -1], stats.count, stats.mean, stats.variance())
    np.testing.assert_allclose(d1, d2, rtol=1e-12)
    resid = x - stats.mean[groups]
    sd = np.sqrt((resid**2).sum(0) / (x.shape[0] - 3))
    m = stats.mean
    np.testing.assert_allclose(d1, (m[0] - 0.5 * m[1] - 0.5 * m[2]) / sd, rtol=1e-10)
    assert np.isnan(cohens_d(3, np.ones(2), np.zeros(2), 3, np.zeros(2), np.zeros(2))).all()


# ------------------------------------------------------------------------------------ FDR
def test_bh_fdr_equals_statsmodels_and_scipy():
    rng = np.random.default_rng(9)
    p = np.concatenate([rng.uniform(size=3000), rng.uniform(0, 1e-3, 300)])
    p[::97] = p[5]  # ties
    q = bh_fdr(p)
    np.testing.assert_allclose(q, multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    np.testing.assert_allclose(q, scipy.stats.false_discovery_control(p), rtol=1e-12)
    q2 = bh_fdr(p.reshape(33, 100))
    assert q2.shape == (33, 100)
    np.testing.assert_array_equal(q2.reshape(-1), q)


def test_bh_fdr_nan_is_kept_and_not_counted():
    rng = np.random.default_rng(10)
    p = rng.uniform(0, 0.05, 500)
    with_nan = np.insert(p, [0, 100, 250, 250], np.nan)
    q = bh_fdr(with_nan)
    assert np.isnan(q).sum() == 4
    np.testing.assert_allclose(q[~np.isnan(q)], multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    assert np.isnan(bh_fdr(np.full(3, np.nan))).all()
    with pytest.raises(ValueError):
        bh_fdr([0.5, 1.5])


def test_bh_fdr_within_groups():
    rng = np.random.default_rng(11)
    p = rng.uniform(0, 0.2, 900)
    p[17] = np.nan
    area = rng.integers(0, 3, 900)
    q = bh_fdr(p, groups=area)
    for a in range(3):
        sel = (area == a) & ~np.isnan(p)
        ref = scipy.stats.false_discovery_control(p[sel])
        np.testing.assert_allclose(q[sel], ref, rtol=1e-12)
    assert np.isnan(q[17])
    assert not np.allclose(q[~np.isnan(q)], bh_fdr(p)[~np.isnan(q)])


# ------------------------------------------------------------------------------------ ANOVA
def test_one_way_anova_equals_scipy():
    x, groups = _grouped(12, [8, 11, 9, 14, 10], 40)
    stats = _stats(x, groups, 5)
    res = one_way_anova(stats.count, stats.mean, stats.variance())
    ref = scipy.stats.f_oneway(*[x[groups == k] for k in range(5)], axis=0)
    np.testing.assert_allclose(res.f, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(res.p, ref.pvalue, rtol=1e-9)
    assert (res.df1, res.df2) == (4.0, 47.0)
    np.testing.assert_array_equal(res.preferred, np.argmax(stats.mean, axis=0))


def test_anova_preferred_condition_and_degenerate_cases():
    rng = np.random.default_rng(13)
    sizes = [6, 0, 6, 6]  # group 1 empty: left out
    groups = np.repeat(np.arange(4), sizes)
    best = np.array([0, 2, 3, 3, 2])
    x = rng.normal(0, 0.1, (groups.size, 5)) + 5.0 * (groups[:, None] == best[None, :])
    x[:, 4] = 1.0  # constant unit: F = NaN
    stats = _stats(x, groups, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = one_way_anova(stats.count, stats.mean, stats.variance())
    np.testing.assert_array_equal(res.preferred[:4], best[:4])
    assert np.isnan(res.f[4]) and np.isnan(res.p[4]) and res.df1 == 2
    ref = scipy.stats.f_oneway(*[x[groups == k, :4] for k in (0, 2, 3)], axis=0)
    np.testing.assert_allclose(res.f[:4], ref.statistic, rtol=1e-10)


# ------------------------------------------------------------------------------------ parsing
KNOWN = [
    "sentences", "nonwords", "word_lists", "math", "false_belief", "false_photo", "a", "b", "c"
]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("sentences>nonwords", {"sentences": 1.0, "nonwords": -1.0}),
        ("sentences > nonwords", {"sentences": 1.0, "nonwords": -1.0}),
        ("a-b", {"a": 1.0, "b": -1.0}),
        (
            "math - 0.5*false_belief - 0.5*false_photo",
            {"math": 1.0, "false_belief": -0.5, "false_photo": -0.5},
        ),
        (
            "0.5*false_belief+0.5*false_photo-nonwords",
            {"false_belief": 0.5, "false_photo": 0.5, "nonwords": -1.0},
        ),
        (
            "sentences > word_lists + nonwords",
            {"sentences": 1, "word_lists": -0.5, "nonwords": -0.5},
        ),
        ("2 math - false_belief - false_photo", {"math": 2, "false_belief": -1, "false_photo": -1}),
        ("-b + a", {"b": -1.0, "a": 1.0}),
        ("a - 1e-1*b - 0.9 * b", {"a": 1.0, "b": -1.0}),
        ("2 a - b*2", {"a": 2.0, "b": -2.0}),
        ("a + a - 2*b", {"a": 2.0, "b": -2.0}),
        ("2*a + b > c", {"a": 2 / 3, "b": 1 / 3, "c": -1.0}),
        ("4*a > 2*b", {"a": 1.0, "b": -1.0}),
    ],
)
def test_parse_contrast_forms(expr, expected):
    got = parse_contrast(expr, KNOWN)
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v)
    check_weights(got)


def test_parse_contrast_names_with_hyphens_and_digits():
    known = ["false-belief", "false-photo", "2back", "0back"]
    assert parse_contrast("2back > 0back", known) == {"2back": 1.0, "0back": -1.0}
    got = parse_contrast("false-belief - false-photo", known)
    assert got == {"false-belief": 1.0, "false-photo": -1.0}


@pytest.mark.parametrize(
    ("expr", "match"),
    [
        ("sentences > faces", r"unknown condition 'faces'.*known conditions: sentences, nonwords"),
        ("sentence>nonwords", "unknown condition 'sentence'"),
        ("", "empty"),
        ("a > b > a", "at most one"),
        ("a b", "expected '\\+' or '-'"),
        ("a - 0.5*", "expected a condition name"),
        ("a - ", "expected a condition name"),
        ("> b", "empty"),
        ("a - a", "no nonzero weight"),
        ("a $ b", "unexpected character"),
        ("a - 3", "expected a condition name"),
        ("a * * b", "expected"),
        ("*a", "expected a condition name"),
        ("-a > b", "positive total weight"),
    ],
)
def test_parse_contrast_errors(expr, match):
    with pytest.raises(TopoInputError, match=match):
        parse_contrast(expr, KNOWN)


def test_check_weights():
    assert check_weights({"a": 1, "b": -1}) == {"a": 1, "b": -1}
    check_weights([1.0, -0.5, -0.5])
    with pytest.raises(TopoInputError, match="sum to 0.5, not 0"):
        check_weights({"math": 1.0, "false_belief": -0.5})
    check_weights({"math": 1.0}, require_zero_sum=False)
    with pytest.raises(TopoInputError, match="not all zero"):
        check_weights([0.0, 0.0], require_zero_sum=False)
    with pytest.raises(TopoInputError, match="unknown condition 'z'"):
        weights_vector({"z": 1.0}, ["a", "b"])


# ------------------------------------------------------------------------------------ screens
@pytest.mark.parametrize("alternative", ALTS)
def test_category_vs_rest_equals_scipy_loop(alternative):
    sizes = [5, 7, 4, 9, 6, 8]
    x, groups = _grouped(14, sizes, 60)
    x += 50.0  # an offset: the totals-minus-group route must not lose digits
    stats = _stats(x, groups, len(sizes))
    res = category_vs_rest(stats, alternative)
    assert res.t.shape == (6, 60)
    for k in range(6):
        ref = scipy.stats.ttest_ind(
            x[groups == k], x[groups != k], equal_var=False, alternative=alternative
        )
        np.testing.assert_allclose(res.t[k], ref.statistic, rtol=1e-9)
        np.testing.assert_allclose(res.df[k], ref.df, rtol=1e-9)
        np.testing.assert_allclose(res.p[k], ref.pvalue, rtol=1e-8)
        d = cohens_d(*_moments(x[groups == k]), *_moments(x[groups != k]))
        np.testing.assert_allclose(res.d[k], d, rtol=1e-9)
    assert np.isnan(category_vs_rest(stats, pvalues=False).p).all()


def test_category_vs_rest_chunked_columns(monkeypatch):
    import topocli.stats.contrasts as st

    x, groups = _grouped(15, [4, 5, 6], 50)
    stats = _stats(x, groups, 3)
    full = category_vs_rest(stats, "two-sided")
    monkeypatch.setattr(st, "_CHUNK_ELEMS", 7)
    chunked = category_vs_rest(stats, "two-sided")
    for a, b in zip(full, chunked, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_category_vs_baseline_equals_scipy():
    x, groups = _grouped(16, [6, 7, 8, 9, 10], 30)
    stats = _stats(x, groups, 5)
    res = category_vs_baseline(stats, [3, 0], [1, 4])
    base = np.isin(groups, [1, 4])
    for row, k in enumerate([3, 0]):
        ref = scipy.stats.ttest_ind(x[groups == k], x[base], equal_var=False, alternative="greater")
        np.testing.assert_allclose(res.t[row], ref.statistic, rtol=1e-10)
        np.testing.assert_allclose(res.p[row], ref.pvalue, rtol=1e-9)
    with pytest.raises(ValueError, match="both category and baseline"):
        category_vs_baseline(stats, [1], [1, 2])


def test_category_vs_rest_zero_variance_and_tiny_groups():
    stats = SufficientStats(3, 2)
    x = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0], [1.0, 0.5], [1.0, 3.0]])
    stats.update(x, [0, 0, 1, 1, 2])  # unit 0 constant; group 2 has one stimulus
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = category_vs_rest(stats)
    assert np.isnan(res.t[:, 0]).all() and np.isnan(res.p[:, 0]).all()
    assert np.isnan(res.t[2]).all()  # n = 1
    assert np.isfinite(res.t[:2, 1]).all()


# ------------------------------------------------------------------------------------ simulations
def test_bh_controls_fdr_on_null_sheets():
    """Pure-noise sheets: every discovery is false, so FDP = 1 if anything survives.

    BH on independent exact p-values has E[FDP] = q m0 / m = q = 0.05. Over S = 400 sheets the
    Monte Carlo standard error of the mean is sqrt(0.05 * 0.95 / 400) = 0.011; we allow 3 of
    them (0.033). Uncorrected p < 0.05 would give FDP = 1 on every sheet.
    """
    rng = np.random.default_rng(17)
    n_sheets, units, n = 400, 2000, 10
    fdp = np.empty(n_sheets)
    for s in range(n_sheets):
        x = rng.standard_normal((2 * n, units)).astype(np.float32)
        stats = SufficientStats.from_data(x, np.repeat([0, 1], n), 2)
        var = stats.variance()
        res = welch_t(n, stats.mean[0], var[0], n, stats.mean[1], var[1], "greater")
        found = bh_fdr(res.p) < 0.05
        fdp[s] = 1.0 if found.any() else 0.0
    slack = 3 * np.sqrt(0.05 * 0.95 / n_sheets)
    print(f"null sheets: mean FDP {fdp.mean():.4f} (bound {0.05 + slack:.4f})")
    assert fdp.mean() <= 0.05 + slack, fdp.mean()


def test_bh_fdr_with_planted_effects_and_recovery():
    """Sheets with a planted blob: FDR <= q on average and the blob is recovered (Dice >= 0.9)."""
    rng = np.random.default_rng(18)
    rows, cols, n = 40, 50, 16
    yy, xx = np.mgrid[:rows, :cols]
    blob = ((yy - 15) ** 2 + (xx - 30) ** 2 <= 8**2).reshape(-1)  # 197 units
    fdp, dice = [], []
    for _ in range(200):
        on = rng.standard_normal((n, rows * cols))
        on[:, blob] += 1.6
        off = rng.standard_normal((n, rows * cols))
        x = np.vstack([on, off])
        stats = SufficientStats.from_data(x, np.repeat([0, 1], n), 2)
        var = stats.variance()
        res = welch_t(n, stats.mean[0], var[0], n, stats.mean[1], var[1], "greater")
        found = bh_fdr(res.p) < 0.05
        fdp.append((found & ~blob).sum() / max(found.sum(), 1))
        dice.append(2 * (found & blob).sum() / (found.sum() + blob.sum()))
    slack = 3 * np.std(fdp) / np.sqrt(len(fdp))
    print(f"planted: mean FDP {np.mean(fdp):.4f} (+{slack:.4f}), Dice {np.mean(dice):.3f}")
    assert np.mean(fdp) <= 0.05 * (~blob).mean() + slack, np.mean(fdp)
    assert np.mean(dice) >= 0.9, np.mean(dice)
    assert np.min(dice) >= 0.85


@pytest.mark.parametrize(
    "spelling", ["sentences>nonwords", "sentences-nonwords", "sentences - nonwords",
                 "1*sentences - 1*nonwords", "2*sentences > 2*nonwords", "-nonwords + sentences"]
)
def test_every_spelling_of_a_contrast_finds_the_named_one(spelling):
    named = {
        "sentences-nonwords": {"sentences": 1.0, "nonwords": -1.0},
        "nonwords-sentences": {"nonwords": 1.0, "sentences": -1.0},
    }
    name, weights = match_contrast(spelling, named, KNOWN)
    assert name == "sentences-nonwords"
    assert weights == named["sentences-nonwords"]


def test_unnamed_contrast_gets_one_canonical_name():
    spellings = ["a - 0.5*b - 0.5*sentences", "a > b + sentences", "2*a - b - sentences"]
    names = {match_contrast(s, {}, KNOWN)[0] for s in spellings}
    assert names == {"a-0.5*b-0.5*sentences"}
    assert contrast_name({"a": 3.0, "b": -3.0}) == "a-b"
    assert not same_contrast({"a": 1.0, "b": -1.0}, {"a": 1.0, "b": -0.5, "nonwords": -0.5})
    assert not same_contrast({"a": 1.0, "b": -1.0}, {"a": -1.0, "b": 1.0})
    assert normalized_weights({"a": 4.0, "b": -2.0, "c": -2.0, "d": 0.0}) == {
        "a": 1.0, "b": -0.5, "c": -0.5
    }
