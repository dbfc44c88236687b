"""Agreement metrics: profile correlation with permutation p and bootstrap CI, selectivity,
Moran distributions, Dice, condition maps.

Oracles: hand enumeration of permutations, scipy (pearsonr, spearmanr, permutation_test,
ttest_ind, mannwhitneyu) and hand-computed values; the EMFL reference table end to end when
../shared/reference is present.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from topocli.errors import TopoInputError
from topocli.human.profiles import category_profiles, load_human_profiles
from topocli.stats.agreement import (
    ConditionMap,
    apply_condition_map,
    compare_moran_distributions,
    dice,
    load_condition_map,
    parse_model_froi,
    profile_agreement,
    selectivity_dprime,
    validate_condition_map,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
NEEDS_REFERENCE = pytest.mark.skipif(
    not REFERENCE.is_dir(),
    reason=f"EMFL reference data not found at {REFERENCE} (../shared/reference is optional)",
)


def _series(values, names=None) -> pd.Series:
    names = names or [f"c{k}" for k in range(len(values))]
    return pd.Series(np.asarray(values, dtype=float), index=names)


# ------------------------------------------------------------------------------------------
# Profile agreement
# ------------------------------------------------------------------------------------------


def test_perfect_toy_profile_exact_p_by_hand():
    # 4 conditions, identical order: only the identity (r = 1) and the reversal (r = -1) of
    # the 24 orderings reach |r| >= 1, so p = 2 / 24.
    result = profile_agreement(_series([1, 2, 3, 4]), _series([1, 2, 3, 4]), seed=0)
    assert result["pearson_r"] == pytest.approx(1.0)
    assert result["spearman_r"] == pytest.approx(1.0)
    assert result["permutation_exact"] and result["n_permutations"] == 24
    assert result["pearson_p_perm"] == pytest.approx(2 / 24)
    assert result["spearman_p_perm"] == pytest.approx(2 / 24)
    assert result["n_conditions"] == 4


def test_toy_profile_matches_hand_enumeration_and_scipy():
    names = ["faces", "bodies", "scenes", "objects"]
    model = _series([1.0, 3.0, 2.0, 5.0], names)
    human = _series([2.0, 1.0, 4.0, 3.0], names)
    result = profile_agreement(model, human, seed=0)
    r_obs = stats.pearsonr(model, human).statistic
    rho_obs = stats.spearmanr(model, human).statistic
    assert result["pearson_r"] == pytest.approx(r_obs, rel=1e-12)
    assert result["spearman_r"] == pytest.approx(rho_obs, rel=1e-12)
    hits_r = hits_rho = 0
    for order in itertools.permutations(range(4)):
        shuffled = human.to_numpy()[list(order)]
        hits_r += abs(stats.pearsonr(model, shuffled).statistic) >= abs(r_obs) - 1e-12
        hits_rho += abs(stats.spearmanr(model, shuffled).statistic) >= abs(rho_obs) - 1e-12
    assert result["pearson_p_perm"] == pytest.approx(hits_r / 24)
    assert result["spearman_p_perm"] == pytest.approx(hits_rho / 24)


def test_exact_p_equals_scipy_permutation_test():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=6), rng.normal(size=6)
    result = profile_agreement(_series(x), _series(y), permutations=1000)
    assert result["permutation_exact"] and result["n_permutations"] == 720

    def statistic(shuffled):
        return abs(stats.pearsonr(x, shuffled).statistic)

    oracle = stats.permutation_test(
        (y,), statistic, permutation_type="pairings", alternative="greater", n_resamples=10**6
    )
    assert result["pearson_p_perm"] == pytest.approx(oracle.pvalue, rel=1e-9)


def test_monte_carlo_p_is_close_to_exact_enumeration():
    rng = np.random.default_rng(1)
    n = 8  # 8! = 40320 > 10000 -> Monte Carlo
    x = rng.normal(size=n)
    y = 0.5 * x + rng.normal(size=n)
    result = profile_agreement(_series(x), _series(y), permutations=10000, bootstrap=100)
    assert not result["permutation_exact"] and result["n_permutations"] == 10000
    orders = np.array(list(itertools.permutations(range(n))))
    xs = (x - x.mean()) / np.linalg.norm(x - x.mean())
    ys = y[orders] - y.mean()
    r_all = ys @ xs / np.linalg.norm(ys, axis=1)
    exact = np.mean(np.abs(r_all) >= abs(result["pearson_r"]) - 1e-12)
    assert result["pearson_p_perm"] == pytest.approx(exact, abs=0.015)
    again = profile_agreement(_series(x), _series(y), permutations=10000, bootstrap=100)
    assert again == result  # same seed, same numbers


def test_bootstrap_ci_contains_r_on_clear_case():
    rng = np.random.default_rng(2)
    x = np.arange(10.0)
    y = 2.0 * x + rng.normal(scale=1.0, size=10)
    result = profile_agreement(_series(x), _series(y), permutations=2000, bootstrap=5000)
    assert result["pearson_ci_low"] <= result["pearson_r"] <= result["pearson_ci_high"]
    assert result["spearman_ci_low"] <= result["spearman_r"] <= result["spearman_ci_high"]
    assert result["pearson_ci_low"] > 0.8
    assert result["pearson_p_perm"] < 0.001


def test_bootstrap_skips_degenerate_resamples():
    # With 3 conditions, a resample drawing one condition 3 times (3 of 27 outcomes) has no r.
    result = profile_agreement(_series([1, 2, 4]), _series([1, 3, 2]), bootstrap=20000)
    valid = result["n_bootstrap_valid"] / result["n_bootstrap"]
    assert valid == pytest.approx(24 / 27, abs=0.01)
    assert result["pearson_ci_low"] == -1.0 and result["pearson_ci_high"] == 1.0


def test_shared_conditions_only_and_too_few():
    model = _series([1, 2, 3, 4], ["a", "b", "c", "d"])
    human = _series([4, 3, np.nan, 1, 7], ["d", "c", "b", "a", "zz"])
    # b is NaN on the human side and zz has no model value: 3 shared conditions (a, c, d)
    result = profile_agreement(model, human)
    assert result["conditions"] == ["a", "c", "d"] and result["n_conditions"] == 3
    assert result["pearson_r"] == pytest.approx(stats.pearsonr([1, 3, 4], [1, 3, 4]).statistic)
    with pytest.raises(TopoInputError, match="only 2 shared condition"):
        profile_agreement(model, _series([1, 2, 9], ["a", "b", "x"]))
    with pytest.raises(TopoInputError, match="repeats"):
        profile_agreement(model, _series([1, 2, 3], ["a", "a", "b"]))


def test_no_permutations_or_bootstrap_gives_nan():
    result = profile_agreement(_series(range(9)), _series([0, 2, 1, 3, 5, 4, 6, 8, 7]), 0, 0)
    assert result["pearson_r"] > 0.9
    assert math.isnan(result["pearson_p_perm"]) and math.isnan(result["pearson_ci_low"])


def test_constant_profile_gives_nan_with_note():
    result = profile_agreement(_series([1, 1, 1, 1]), _series([1, 2, 3, 4]))
    assert math.isnan(result["pearson_r"]) and math.isnan(result["spearman_p_perm"])
    assert "model profile is constant" in result["note"]


# ------------------------------------------------------------------------------------------
# Selectivity, Moran distributions, Dice
# ------------------------------------------------------------------------------------------


def test_selectivity_dprime_by_hand():
    profile = _series([3.0, 1.0, 2.0, 0.0], ["faces", "objects", "scenes", "bodies"])
    # no sem: target variance 0 (one condition), others var([1, 2, 0], ddof=1) = 1
    expected = (3.0 - 1.0) / math.sqrt((0.0 + 1.0) / 2)
    assert selectivity_dprime(profile, ["faces"], ["objects", "scenes", "bodies"]) == (
        pytest.approx(expected)
    )
    sem = _series([0.5, 0.1, 0.2, 0.3], ["faces", "objects", "scenes", "bodies"])
    pooled = math.sqrt((0.25 + (0.01 + 0.04 + 0.09) / 3) / 2)
    assert selectivity_dprime(profile, ["faces"], ["objects", "scenes", "bodies"], sem) == (
        pytest.approx(2.0 / pooled)
    )
    assert math.isnan(selectivity_dprime(profile, ["faces"], ["objects"]))
    with pytest.raises(TopoInputError, match="no value"):
        selectivity_dprime(profile, ["faces"], ["words"])
    with pytest.raises(TopoInputError, match="both target and other"):
        selectivity_dprime(profile, ["faces"], ["faces", "objects"])


def test_compare_moran_distributions_equals_scipy():
    rng = np.random.default_rng(3)
    topographic = rng.normal(0.575, 0.042, size=12)
    control = np.append(rng.normal(0.235, 0.012, size=9), np.nan)
    out = compare_moran_distributions(topographic, control)
    welch = stats.ttest_ind(topographic, control[:-1], equal_var=False)
    mwu = stats.mannwhitneyu(topographic, control[:-1], alternative="two-sided")
    assert out["n_a"] == 12 and out["n_b"] == 9
    assert out["mean_a"] == pytest.approx(topographic.mean())
    assert out["sd_b"] == pytest.approx(control[:-1].std(ddof=1))
    assert out["welch_t"] == pytest.approx(welch.statistic)
    assert out["welch_p"] == pytest.approx(welch.pvalue)
    assert out["welch_df"] == pytest.approx(welch.df)
    assert out["mannwhitney_u"] == pytest.approx(mwu.statistic)
    assert out["mannwhitney_p"] == pytest.approx(mwu.pvalue)
    single = compare_moran_distributions([0.5], [0.2, 0.3])
    assert math.isnan(single["welch_t"]) and single["n_a"] == 1


def test_dice_by_hand():
    a = np.array([1, 1, 1, 0, 0], dtype=bool)
    b = np.array([0, 1, 1, 1, 0], dtype=bool)
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert dice(a, a) == 1.0
    assert math.isnan(dice(np.zeros(3, bool), np.zeros(3, bool)))
    with pytest.raises(TopoInputError, match="same shape"):
        dice(a, b[:4])


# ------------------------------------------------------------------------------------------
# Condition maps
# ------------------------------------------------------------------------------------------


TOML = """
[conditions]
fb = "false_belief"
fp = "false_photo"
arithmetic = "math"

[frois]
"language@text.6" = "language"
"tom" = "tom"
"""


def test_condition_map_toml_and_csv(tmp_path):
    toml_path = tmp_path / "map.toml"
    toml_path.write_text(TOML)
    csv_path = tmp_path / "map.csv"
    csv_path.write_text(
        "kind,model,human\ncondition,fb,false_belief\ncondition,fp,false_photo\n"
        "condition,arithmetic,math\nfroi,language@text.6,language\nfroi,tom,tom\n"
    )
    for path in (toml_path, csv_path):
        cmap = load_condition_map(path)
        assert cmap.conditions == {"fb": "false_belief", "fp": "false_photo", "arithmetic": "math"}
        assert cmap.frois == {"language@text.6": "language", "tom": "tom"}
    assert parse_model_froi("language@text.6") == ("language", "text.6")
    assert parse_model_froi("tom") == ("tom", None)
    validate_condition_map(
        cmap,
        ["fb", "fp", "arithmetic", "extra"],
        ["false_belief", "false_photo", "math", "faces"],
        model_frois=["language@text.6", "tom@text.3"],
        human_frois=["language", "tom", "md"],
    )
    renamed = apply_condition_map(_series([1, 2, 3, 4], ["fb", "extra", "fp", "arithmetic"]), cmap)
    assert renamed.to_dict() == {"false_belief": 1.0, "false_photo": 3.0, "math": 4.0}


def test_condition_map_absent_names(tmp_path):
    path = tmp_path / "map.toml"
    path.write_text(TOML)
    cmap = load_condition_map(path)
    with pytest.raises(TopoInputError) as caught:
        validate_condition_map(
            cmap,
            ["fb", "fp"],
            ["false_belief", "math"],
            model_frois=["language@text.3"],
            human_frois=["language"],
        )
    message = str(caught.value)
    assert "\n" not in message and "map.toml" in message
    for name in ("'arithmetic'", "'false_photo'", "'language@text.6'", "'tom'"):
        assert name in message


def test_condition_map_bad_files(tmp_path):
    cases = {
        "dup.toml": ('[conditions]\na = "x"\nb = "x"\n', "onto human 'x'"),
        "bad.toml": ("[conditions\n", "invalid TOML"),
        "none.toml": ('[frois]\na = "x"\n', "maps no conditions"),
        "extra.toml": ('[conditions]\na = "x"\n[other]\n', "unknown sections"),
        "cols.csv": ("model,human\na,x\n", "missing columns: kind"),
        "kind.csv": ("kind,model,human\ncolour,a,x\n", "kind must be"),
        "map.json": ("{}", ".toml or .csv"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(TopoInputError, match=message):
            load_condition_map(tmp_path / name)
    assert isinstance(ConditionMap().conditions, dict)


# ------------------------------------------------------------------------------------------
# End to end on the EMFL reference table
# ------------------------------------------------------------------------------------------


@NEEDS_REFERENCE
def test_emfl_profiles_compare_end_to_end(tmp_path):
    human = category_profiles(
        load_human_profiles(REFERENCE / "emfl_human_froi_responses.csv"), ["language", "tom", "md"]
    )
    path = tmp_path / "map.toml"
    path.write_text(
        '[conditions]\nfb = "false_belief"\nfp = "false_photo"\narithmetic = "math"\n'
        'pseudo = "nonwords"\n[frois]\n"language" = "language"\n"tom" = "tom"\n"md" = "md"\n'
    )
    cmap = load_condition_map(path)
    validate_condition_map(
        cmap, ["fb", "fp", "arithmetic", "pseudo"], human.index, human_frois=human.columns
    )
    rng = np.random.default_rng(4)
    for category in ("language", "tom", "md"):
        target = human[category].rename(index={v: k for k, v in cmap.conditions.items()})
        model = target.loc[list(cmap.conditions)] + rng.normal(scale=0.01, size=4)
        result = profile_agreement(apply_condition_map(model, cmap), human[category])
        assert result["n_conditions"] == 4 and result["permutation_exact"]
        assert result["pearson_r"] > 0.95
        assert result["pearson_ci_low"] <= result["pearson_r"] <= result["pearson_ci_high"]
        assert result["pearson_p_perm"] >= 1 / 24  # 4 conditions cannot do better
