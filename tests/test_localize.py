"""`topo localize`: planted answers, oracles (scipy / statsmodels), smoothing order, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import feed_activations, forbid_model
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from topocli.activations import extraction
from topocli.errors import TopoInputError
from topocli.reporting.reader import load_sheet_maps, read_manifest
from topocli.reporting.results import ResultsFolder
from topocli.sheet import AreaSpec, Sheet
from topocli.stats.maps import contrast_maps
from topocli.stats.smoothing import smooth_map, smooth_units
from topocli.stats.suffstats import SufficientStats
from topocli.stimuli.localizers import LocalizerSpec
from topocli.stimuli.stimulus_set import Stimulus, StimulusSet, load_stimulus_set
from topocli.workflows.localize.report import UNIT_COLUMNS, write_localize_results
from topocli.workflows.localize.run import localize, run_localize


# ---------------------------------------------------------------------- helpers
def _stim_set(counts: dict[str, int]) -> StimulusSet:
    stimuli = [
        Stimulus(cond, i % 2, "text", text=f"{cond} {i}")
        for cond, n in counts.items()
        for i in range(n)
    ]
    return StimulusSet(Path("synthetic"), stimuli, list(counts))


def _fake_model(sheet: Sheet) -> SimpleNamespace:
    return SimpleNamespace(sheet=sheet)


def _blob_sheet() -> tuple[Sheet, np.ndarray]:
    sheet = Sheet.build([AreaSpec("v1", 400), AreaSpec("v2", 400)], "tiled")
    grid_blob = np.zeros(sheet.grid_shape, dtype=bool)
    grid_blob[5:11, 4:10] = True  # inside the first 20 x 20 tile
    blob = grid_blob[sheet.row, sheet.col]
    assert blob.sum() == 36 and not blob[400:].any()
    return sheet, blob


def _tiny_model(tiny_model_dir):
    from topocli.models.topo_model import build_topo_model

    return build_topo_model(tiny_model_dir("bert"), mode="direct")


def _raw_acts(model, stim_set) -> np.ndarray:
    """Per-stimulus activations, in batches of 4 like the localize calls they are compared with
    (padding differs with the batch: activations move by ~1e-7)."""
    acts = np.zeros((len(stim_set), model.sheet.n_units), dtype=np.float32)
    for rows, a, _ in extraction.iter_activations(model, stim_set, batch_size=4):
        acts[rows] = a.numpy()
    return acts


# ---------------------------------------------------------------------- planted answers
def test_planted_blob_is_the_significant_cluster_and_profile_peaks_on_held_out(monkeypatch):
    sheet, blob = _blob_sheet()
    stim = _stim_set({"faces": 24, "objects": 24, "places": 24})
    rng = np.random.default_rng(3)
    acts = rng.normal(size=(len(stim), sheet.n_units))
    is_face = stim.condition_index() == 0
    acts[np.ix_(is_face, blob)] += 2.0
    feed_activations(monkeypatch, acts)
    res = localize(
        _fake_model(sheet),
        stim,
        {"faces>objects": {"faces": 1, "objects": -1}},
        q=0.05,
        top_percent=9,  # 36 of the 400 units of v1: the blob's size
        permutations=99,
        use_cache=False,
    )
    (c,) = res.contrasts
    found = c.labels == 1
    dice = 2 * (found & blob).sum() / (found.sum() + blob.sum())
    assert dice >= 0.9
    assert c.clusters.iloc[0]["areas"] == "v1" and np.isfinite(c.clusters.iloc[0]["moran_i"])
    assert c.n_clusters == 1  # scattered false positives never make an 8-unit cluster
    prof = c.profiles[c.profiles["area"] == "v1"]
    for direction in ("even->odd", "odd->even", "mean"):
        rows = prof[prof["split_direction"] == direction].set_index("condition")
        assert rows["response_mean"].idxmax() == "faces"
        assert rows.loc["faces", "response_mean"] > 1.5
        assert rows.loc["places", "response_mean"] < 0.5  # never in the contrast: still low
    # the split-half fROIs agree in the blob's area, not in the null area
    dice_by_area = c.dice.set_index("area")["dice"]
    assert dice_by_area["v1"] >= 0.8 and dice_by_area["v2"] < 0.5
    # each half alone sees the blob
    assert (c.t_split[:, blob] > 2).mean() > 0.9


def test_weighted_contrast_and_two_sided_negative_cluster(monkeypatch):
    sheet, blob = _blob_sheet()
    stim = _stim_set({"math": 16, "belief": 16, "photo": 16})
    rng = np.random.default_rng(4)
    acts = rng.normal(size=(len(stim), sheet.n_units))
    acts[np.ix_(stim.condition_index() == 0, blob)] -= 2.5  # math responds *less*
    feed_activations(monkeypatch, acts)
    weights = {"math": 1.0, "belief": -0.5, "photo": -0.5}
    res = localize(
        _fake_model(sheet),
        stim,
        {"md": weights},
        alternative="two-sided",
        permutations=0,
        use_cache=False,
    )
    c = res.contrasts[0]
    assert c.clusters.iloc[0]["sign"] == -1 and c.clusters.iloc[0]["peak_t"] < 0
    assert np.isnan(c.clusters.iloc[0]["moran_p"])  # no permutations asked
    # one-sided 'greater' finds nothing where the effect is negative
    feed_activations(monkeypatch, acts)
    res = localize(_fake_model(sheet), stim, {"md": weights}, permutations=0, use_cache=False)
    assert res.contrasts[0].n_clusters == 0 and not res.contrasts[0].significant[blob].any()


def test_anova_equals_f_oneway_and_finds_preferred_condition(monkeypatch):
    sheet = Sheet.build([AreaSpec("a1", 64)], "stacked")
    conds = ["f250", "f1000", "f4000"]
    stim = _stim_set(dict.fromkeys(conds, 10))
    rng = np.random.default_rng(5)
    acts = rng.normal(size=(len(stim), sheet.n_units))
    cond = stim.condition_index()
    pref = np.arange(sheet.n_units) % 3
    acts += 3.0 * (cond[:, None] == pref[None, :])
    acts = acts.astype(np.float32).astype(np.float64)  # what the extraction streams
    feed_activations(monkeypatch, acts)
    res = localize(
        _fake_model(sheet),
        stim,
        {"hi>lo": {"f4000": 1, "f250": -1}},
        permutations=0,
        anova_conditions=conds,
        use_cache=False,
    )
    a = res.anova
    f_ref, p_ref = sps.f_oneway(*(acts[cond == k] for k in range(3)))
    np.testing.assert_allclose(a.f, f_ref, rtol=1e-9)
    np.testing.assert_allclose(a.p, p_ref, rtol=1e-6, atol=1e-300)
    assert a.significant.all()
    assert np.array_equal(a.preferred, pref)


def test_fdr_simulation_mean_fdp_is_at_most_q():
    """Over 200 simulated sheets (10% true effects) the mean false discovery proportion <= q."""
    rng = np.random.default_rng(6)
    n_units, n = 400, 12
    truth = np.zeros(n_units, dtype=bool)
    truth[:40] = True
    groups = np.repeat([0, 1], n)
    fdp = []
    for _ in range(200):
        x = rng.normal(size=(2 * n, n_units))
        x[:n, truth] += 1.5
        st = SufficientStats.from_data(x, groups, 2)
        var = st.variance()
        maps = contrast_maps(np.array([1.0, -1.0]), st.count, st.mean, var, "greater", 0.05)
        sig = maps["significant"]
        fdp.append((sig & ~truth).sum() / max(sig.sum(), 1))
    assert np.mean(fdp) <= 0.05 + 0.01


# ---------------------------------------------------------------------- zero variance
def test_zero_variance_units_get_nan_t_and_are_never_significant(monkeypatch, tmp_path):
    sheet = Sheet.build([AreaSpec("a", 48)], "stacked")
    stim = _stim_set({"alpha": 8, "beta": 8})
    rng = np.random.default_rng(7)
    acts = rng.normal(size=(len(stim), sheet.n_units)).astype(np.float32)
    is_a = stim.condition_index() == 0
    acts[is_a, :24] += 3.0
    acts[:, 0] = 0.0  # dead unit
    acts[:, 1] = np.float32(0.7)  # constant, not exactly representable: rounding in the mean
    acts[:, 2] = np.where(is_a, 1.0, 0.0)  # constant within each condition, different means
    feed_activations(monkeypatch, acts)
    res = localize(
        _fake_model(sheet),
        stim,
        {"a>b": {"alpha": 1, "beta": -1}},
        q=0.5,
        min_cluster=1,
        permutations=9,
        use_cache=False,
    )
    c = res.contrasts[0]
    for u in (0, 1, 2):
        assert np.isnan(c.t[u]) and np.isnan(c.p[u]) and np.isnan(c.q[u]) and not c.significant[u]
        assert c.labels[u] == 0
    assert c.significant[3:24].all()
    # BH counts only the units with a p value: equal to statsmodels on those
    finite = np.isfinite(c.p)
    np.testing.assert_allclose(c.q[finite], multipletests(c.p[finite], method="fdr_bh")[1])


# ---------------------------------------------------------------------- oracles on a real model
def test_units_csv_equals_scipy_and_statsmodels_on_raw_activations(
    tiny_model_dir, stimulus_dirs, tmp_path
):
    model = _tiny_model(tiny_model_dir)
    stim = load_stimulus_set(stimulus_dirs["text"])
    acts = _raw_acts(model, stim).astype(np.float64)
    a, b = acts[stim.condition_index() == 0], acts[stim.condition_index() == 1]
    res = localize(
        model,
        stim,
        {"alpha>beta": {"alpha": 1, "beta": -1}},
        q=0.2,
        alternative="two-sided",
        fdr_scope="area",
        min_cluster=2,
        permutations=19,
        batch_size=4,
        use_cache=False,
    )
    with ResultsFolder(tmp_path / "out") as rf:
        write_localize_results(rf, res, model, {"localizer": "toy", "model": "tiny-bert"})
    units = pd.read_csv(tmp_path / "out" / "units.csv")
    assert list(units.columns) == UNIT_COLUMNS
    ref = sps.ttest_ind(a, b, equal_var=False, alternative="two-sided")
    np.testing.assert_allclose(units["t"], ref.statistic, rtol=1e-6)
    np.testing.assert_allclose(units["df"], ref.df, rtol=1e-6)
    np.testing.assert_allclose(units["p"], ref.pvalue, rtol=1e-5, atol=1e-12)
    q_ref = np.empty(model.sheet.n_units)
    for k in range(len(model.sheet.areas)):
        sel = model.sheet.area == k
        q_ref[sel] = multipletests(ref.pvalue[sel], method="fdr_bh")[1]
        np.testing.assert_allclose(
            sps.false_discovery_control(ref.pvalue[sel]), q_ref[sel], rtol=1e-12
        )
    np.testing.assert_allclose(units["q"], q_ref, rtol=1e-5)
    pooled = np.sqrt(
        ((len(a) - 1) * a.var(0, ddof=1) + (len(b) - 1) * b.var(0, ddof=1)) / (len(a) + len(b) - 2)
    )
    np.testing.assert_allclose(units["d"], (a.mean(0) - b.mean(0)) / pooled, rtol=1e-6)
    assert (units["significant"] == (units["q"] < 0.2)).all()
    # one-sided p from the same statistics
    res1 = localize(
        model,
        stim,
        {"alpha>beta": {"alpha": 1, "beta": -1}},
        permutations=0,
        batch_size=4,
        use_cache=False,
    )
    ref1 = sps.ttest_ind(a, b, equal_var=False, alternative="greater")
    np.testing.assert_allclose(res1.contrasts[0].p, ref1.pvalue, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(
        res1.contrasts[0].q, multipletests(ref1.pvalue, method="fdr_bh")[1], rtol=1e-5
    )


def test_abs_tests_absolute_activations_like_scipy_on_abs(tiny_model_dir, stimulus_dirs):
    """--abs: llm-localization's convention, t of |a|; the oracle is scipy on |activations|."""
    model = _tiny_model(tiny_model_dir)
    stim = load_stimulus_set(stimulus_dirs["text"])
    acts = _raw_acts(model, stim).astype(np.float64)
    cond = stim.condition_index()
    res = localize(
        model, stim, {"alpha-beta": {"alpha": 1, "beta": -1}}, alternative="two-sided",
        permutations=0, batch_size=4, use_cache=False, absolute=True,
    )
    ref = sps.ttest_ind(np.abs(acts[cond == 0]), np.abs(acts[cond == 1]), equal_var=False)
    np.testing.assert_allclose(res.contrasts[0].t, ref.statistic, rtol=1e-6)
    signed = sps.ttest_ind(acts[cond == 0], acts[cond == 1], equal_var=False).statistic
    assert not np.allclose(res.contrasts[0].t, signed, rtol=1e-3)  # the option changes t


def test_results_folder_contents(tiny_model_dir, stimulus_dirs, tmp_path):
    model = _tiny_model(tiny_model_dir)
    stim = load_stimulus_set(stimulus_dirs["text"])
    res = localize(
        model,
        stim,
        {"alpha>beta": {"alpha": 1, "beta": -1}, "beta>alpha": {"beta": 1, "alpha": -1}},
        q=0.5,
        min_cluster=2,
        permutations=9,
        batch_size=4,
        use_cache=False,
        anova_conditions=["alpha", "beta"],
    )
    out = tmp_path / "out"
    with ResultsFolder(out) as rf:
        write_localize_results(rf, res, model, {"localizer": "toy", "model": "tiny-bert"})
    for name in (
        "units.csv",
        "clusters.csv",
        "profiles.csv",
        "dice.csv",
        "tmap.nii.gz",
        "qmap.nii.gz",
        "stats.safetensors",
        "report.html",
        "anova.csv",
    ):
        assert (out / name).is_file(), name
    tmaps, names, sheet = load_sheet_maps(out / "tmap.nii.gz")
    assert names == ["alpha>beta", "beta>alpha"] and sheet == model.sheet
    np.testing.assert_allclose(tmaps[0], res.contrasts[0].t.astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(tmaps[1], -tmaps[0], rtol=1e-6)
    stats = SufficientStats.load(out / "stats.safetensors")
    assert stats == res.stats
    assert json.loads(stats.metadata["conditions"]) == ["alpha", "beta"]
    clusters = pd.read_csv(out / "clusters.csv")
    assert set(clusters["contrast"]) <= {"alpha>beta", "beta>alpha"}
    assert {"moran_i", "moran_p", "centroid_x_mm", "areas"} <= set(clusters.columns)
    profiles = pd.read_csv(out / "profiles.csv")
    assert set(profiles["condition"]) == {"alpha", "beta"}
    manifest = read_manifest(out, verify=True)
    assert manifest["command"] == "localize"
    params = manifest["parameters"]
    assert params["q"] == 0.5 and params["localizer"] == "toy" and params["permutations"] == 9
    assert params["contrasts"]["alpha>beta"] == {"alpha": 1.0, "beta": -1.0}
    assert manifest["extra"]["model"]["weights_sha256"] == model.source["weights_sha256"]
    assert manifest["extra"]["counts"]["alpha"] == {"even": 3, "odd": 3}
    assert [i["path"] for i in manifest["inputs"]["stimuli"]] == [
        str((stimulus_dirs["text"] / c).resolve()) for c in ("alpha", "beta")
    ]
    html = (out / "report.html").read_text()
    assert "alpha&gt;beta" in html and "Moran" in html and "tiny-bert" in html


# ---------------------------------------------------------------------- smoothing order
def test_smoothing_is_per_stimulus_before_statistics_and_reuses_the_raw_cache(
    tiny_model_dir, stimulus_dirs
):
    model = _tiny_model(tiny_model_dir)
    sheet = model.sheet
    stim = load_stimulus_set(stimulus_dirs["text"])
    contrast = {"alpha>beta": {"alpha": 1, "beta": -1}}
    kw = dict(permutations=0, batch_size=4, alternative="two-sided")
    raw = localize(model, stim, contrast, fwhm_mm=0, use_cache=True, **kw)
    assert not raw.from_cache
    smoothed = localize(model, stim, contrast, fwhm_mm=3.0, use_cache=False, **kw)
    sm = smooth_units(_raw_acts(model, stim), sheet, 3.0).astype(np.float64)  # float32 stream
    ref = sps.ttest_ind(
        sm[stim.condition_index() == 0], sm[stim.condition_index() == 1], equal_var=False
    )
    t = smoothed.contrasts[0].t
    np.testing.assert_allclose(t, ref.statistic, rtol=1e-5)
    # smoothing the finished t-map is a different thing
    t_of_map = smooth_map(raw.contrasts[0].t, sheet, 3.0)
    assert np.max(np.abs(t - t_of_map)) > 0.1 * np.max(np.abs(t))
    # a new FWHM runs from the raw (float16) activation cache, not the model
    cached = localize(model, stim, contrast, fwhm_mm=3.0, use_cache=True, **kw)
    assert cached.from_cache and cached.cache_key == raw.cache_key
    np.testing.assert_allclose(cached.contrasts[0].t, t, rtol=2e-2, atol=2e-2)
    assert cached.stats.metadata["fwhm_mm"] == "3.0"


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("contrasts", "kwargs", "message"),
    [
        ({"x": {"alpha": 1, "gamma": -1}}, {}, "known conditions: alpha, beta"),
        ({"x": {"alpha": 1, "beta": -0.5}}, {}, "sum to 0.5"),
        ({"x": {"alpha": 1, "beta": -1}}, {"q": 0.0}, "between 0 and 1"),
        ({"x": {"alpha": 1, "beta": -1}}, {"q": 1.0}, "between 0 and 1"),
        ({"x": {"alpha": 1, "beta": -1}}, {"q": 1.5}, "between 0 and 1"),
        ({"x": {"alpha": 1, "beta": -1}}, {"q": float("nan")}, "between 0 and 1"),
        ({"x": {"alpha": 1, "beta": -1}}, {"alternative": "less"}, "greater, two-sided"),
        ({"x": {"alpha": 1, "beta": -1}}, {"fdr_scope": "layer"}, "sheet, area"),
        ({"x": {"alpha": 1, "beta": -1}}, {"connectivity": 6}, "4 or 8"),
        ({"x": {"alpha": 1, "beta": -1}}, {"top_percent": 0}, "top-percent"),
        ({"x": {"alpha": 1, "beta": -1}}, {"fwhm_mm": -1}, "fwhm"),
        ({"x": {"alpha": 1, "beta": -1}}, {"anova_conditions": ["alpha", "zeta"]}, "zeta"),
        ({"x": {"alpha": 1, "beta": -1}}, {"froi_areas": ["nope"]}, "unknown area"),
        ({}, {}, "no contrast"),
    ],
)
def test_bad_input_fails_in_one_line_before_the_model_runs(monkeypatch, contrasts, kwargs, message):
    forbid_model(monkeypatch)
    sheet = Sheet.build([AreaSpec("a", 16)], "tiled")
    stim = _stim_set({"alpha": 4, "beta": 4})
    with pytest.raises(TopoInputError, match=message) as info:
        localize(_fake_model(sheet), stim, contrasts, use_cache=False, **kwargs)
    assert "\n" not in str(info.value)


def test_too_few_stimuli_per_split_and_across_areas_on_tiled(monkeypatch):
    forbid_model(monkeypatch)
    sheet = Sheet.build([AreaSpec("a", 16), AreaSpec("b", 16)], "tiled")
    contrast = {"x": {"alpha": 1, "beta": -1}}
    with pytest.raises(TopoInputError, match="'beta' has 1 stimuli in the odd split"):
        localize(_fake_model(sheet), _stim_set({"alpha": 4, "beta": 3}), contrast)
    with pytest.raises(TopoInputError, match="stacked"):
        localize(
            _fake_model(sheet),
            _stim_set({"alpha": 4, "beta": 4}),
            contrast,
            fwhm_mm=2,
            across_areas=True,
        )


# ---------------------------------------------------------------------- the command
def _toy_spec(**changes) -> LocalizerSpec:
    spec = LocalizerSpec(
        name="toy",
        conditions=["alpha", "beta"],
        contrasts={"alpha>beta": {"alpha": 1.0, "beta": -1.0}},
        default_contrasts=["alpha>beta"],
        defaults={"q": 0.3, "min_cluster": 2, "permutations": 9},
    )
    for k, v in changes.items():
        setattr(spec, k, v)
    return spec


def _ctx(model_dir, out=None, quiet=False):
    from topocli.cli import Context

    return Context(str(model_dir), "cpu", "float32", 4, 0, out, False, quiet)


def test_run_localize_defaults_from_the_localizer_and_default_out(
    tiny_model_dir, stimulus_dirs, tmp_path, monkeypatch
):
    from rich.console import Console

    monkeypatch.setattr(
        "topocli.workflows.localize.run.resolve_localizer", lambda name: _toy_spec()
    )
    monkeypatch.chdir(tmp_path)
    buf = io.StringIO()
    out = run_localize(
        _ctx(tiny_model_dir("bert")),
        "toy",
        stimuli=stimulus_dirs["text"],
        out_console=Console(file=buf, width=200),
    )
    assert out == Path("localize-toy") and (tmp_path / out / "units.csv").is_file()
    text = buf.getvalue()
    assert "alpha>beta" in text and "significant units" in text
    manifest = read_manifest(tmp_path / out)
    p = manifest["parameters"]
    assert (p["q"], p["min_cluster"], p["permutations"], p["fwhm_mm"]) == (0.3, 2, 9, 0.0)
    assert p["localizer"] == "toy" and p["model"] == str(tiny_model_dir("bert"))
    # explicit options win over the localizer's defaults; expressions are parsed
    out2 = run_localize(
        _ctx(tiny_model_dir("bert"), tmp_path / "o2", quiet=True),
        "toy",
        stimuli=stimulus_dirs["text"],
        contrast=["beta - alpha"],
        q=0.1,
        fwhm_mm=1.5,
        alternative="two-sided",
        cache=False,
    )
    p2 = read_manifest(out2)["parameters"]
    assert p2["q"] == 0.1 and p2["fwhm_mm"] == 1.5 and p2["alternative"] == "two-sided"
    # an expression is stored under its canonical name
    assert p2["contrasts"] == {"beta-alpha": {"beta": 1.0, "alpha": -1.0}}


def test_run_localize_bad_input(tiny_model_dir, stimulus_dirs, tmp_path, monkeypatch):
    monkeypatch.setattr(
        "topocli.workflows.localize.run.resolve_localizer",
        lambda name: _toy_spec(user_stimuli=True),
    )
    ctx = _ctx(tiny_model_dir("bert"), tmp_path / "o", quiet=True)
    with pytest.raises(TopoInputError, match="needs your stimuli: pass --stimuli"):
        run_localize(ctx, "toy")
    with pytest.raises(TopoInputError, match="known conditions: alpha, beta"):
        run_localize(ctx, "toy", stimuli=stimulus_dirs["text"], contrast=["alpha>gamma"])
    with pytest.raises(TopoInputError, match="between 0 and 1"):
        run_localize(ctx, "toy", stimuli=stimulus_dirs["text"], q=2.0)
    assert not (tmp_path / "o").exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    ctx = _ctx(tiny_model_dir("bert"), full, quiet=True)
    ctx.load_model = lambda **kw: pytest.fail("the model loaded although --out was bad")
    with pytest.raises(TopoInputError, match="pass --overwrite"):
        run_localize(ctx, "toy", stimuli=stimulus_dirs["text"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".full")] == []


def test_run_localize_with_the_shipped_language_localizer(tiny_model_dir, tmp_path):
    from topocli.stimuli.localizers import resolve_localizer

    spec = resolve_localizer("language")
    assert {"sentences", "nonwords"} <= set(spec.conditions)
    # every contrast of the localizer runs by default, the primary one first
    assert spec.default_contrasts[0] == "sentences-nonwords"
    assert set(spec.default_contrasts) == set(spec.contrasts) and len(spec.contrasts) == 5
    out = run_localize(
        _ctx(tiny_model_dir("bert"), tmp_path / "lang", quiet=True), "language", permutations=9
    )
    manifest = read_manifest(out)
    assert list(manifest["extra"]["contrasts"]) == spec.default_contrasts
    assert manifest["extra"]["contrasts"]["sentences-nonwords"] == {
        "sentences": 1.0, "nonwords": -1.0
    }
    # smoothing is opt-in (one policy with screen); the localizer's FWHM is recorded
    assert manifest["parameters"]["fwhm_mm"] == 0.0
    assert manifest["parameters"]["literature_fwhm_mm"] == spec.defaults["fwhm_mm"] == 8.0
    units = pd.read_csv(out / "units.csv")
    assert list(dict.fromkeys(units["contrast"])) == spec.default_contrasts
    assert len(units) == 64 * 5
    profiles = pd.read_csv(out / "profiles.csv")
    assert set(profiles["condition"]) == set(spec.conditions)
    # a localizer that ships no stimuli says so and names its conditions
    user_toml = tmp_path / "user.toml"
    user_toml.write_text(
        'name = "u"\ndescription = "d"\nmodality = "audio"\nstimuli = "user"\n'
        'conditions = ["vocal", "non_vocal"]\nsource = ["s"]\n[contrasts]\n'
        '"v" = "vocal - non_vocal"\n',
        encoding="utf-8",
    )
    with pytest.raises(TopoInputError, match="vocal, non_vocal"):
        run_localize(_ctx(tiny_model_dir("bert"), tmp_path / "voice", quiet=True), str(user_toml))
    with pytest.raises(TopoInputError, match="unknown localizer 'nope'"):
        run_localize(_ctx(tiny_model_dir("bert"), tmp_path / "x", quiet=True), "nope")


def test_generated_parametric_localizer_from_a_user_toml(tiny_model_dir, tmp_path):
    """A user tonotopy definition: stimuli generated into a temp folder, ANOVA, its defaults."""
    from topocli.stimuli.localizers import resolve_localizer

    toml = tmp_path / "tones.toml"
    toml.write_text(
        """
name = "tones"
description = "two tones"
modality = "audio"
stimuli = "generated"
analysis = "parametric"
conditions = ["tone_300hz", "tone_2000hz"]
source = ["test"]
[contrasts]
"high-low" = "tone_2000hz - tone_300hz"
[parametric]
unit = "Hz"
values = { tone_300hz = 300, tone_2000hz = 2000 }
[generator]
kind = "tonotopy"
frequencies_hz = [300, 2000]
n_per_frequency = 4
duration_s = 0.2
sample_rate = 16000
seed = 0
[thresholds]
q = 0.2
fwhm_mm = 1.0
min_cluster = 2
"""
    )
    spec = resolve_localizer(toml)
    assert spec.generated and spec.anova_conditions == ["tone_300hz", "tone_2000hz"]
    assert spec.default_contrasts == ["high-low"]
    assert spec.contrasts == {"high-low": {"tone_2000hz": 1.0, "tone_300hz": -1.0}}
    out = run_localize(
        _ctx(tiny_model_dir("wav2vec2"), tmp_path / "gen", quiet=True), str(toml), permutations=0
    )
    manifest = read_manifest(out)
    p = manifest["parameters"]
    assert (p["fwhm_mm"], p["q"], p["min_cluster"], p["localizer"]) == (0.0, 0.2, 2, "tones")
    assert p["literature_fwhm_mm"] == 1.0
    assert manifest["extra"]["counts"] == {
        "tone_300hz": {"even": 2, "odd": 2},
        "tone_2000hz": {"even": 2, "odd": 2},
    }
    anova = pd.read_csv(out / "anova.csv")
    assert set(anova["preferred"]) <= {"tone_300hz", "tone_2000hz"} and len(anova) > 0
    assert "Preferred condition" in (out / "report.html").read_text()
    # the tonotopic map's smoothness: Moran's I of the preferred index, per area, as the
    # topography table computes it for that map (an independent recomputation)
    from topocli.stats.topography import area_morans_i

    topo = pd.read_csv(out / "anova_topography.csv")
    sheet = load_sheet_maps(out / "tmap.nii.gz")[2]
    pref = anova["preferred"].map({"tone_300hz": 0.0, "tone_2000hz": 1.0}).to_numpy()
    expected = area_morans_i(pref, sheet, 0, 0)["moran_i"].to_numpy()
    np.testing.assert_allclose(topo["moran_i"].to_numpy(), expected, equal_nan=True)


def test_planted_hook_edit_on_a_real_model_is_recovered(tiny_model_dir, tmp_path, monkeypatch):
    """Two conditions with the same sentences; a hook-point edit adds a response to a blob of
    units only for condition 'on': in the edited area the blob is the only significant cluster."""
    lines = [
        f"the {w} walked to the {v} today"
        for w in ("cat", "dog", "bird", "fish")
        for v in ("park", "lake")
    ]
    for cond in ("on", "off"):
        (tmp_path / "stim" / cond).mkdir(parents=True)
        (tmp_path / "stim" / cond / "s.txt").write_text("\n".join(lines) + "\n")
    stim = load_stimulus_set(tmp_path / "stim")
    model = _tiny_model(tiny_model_dir)
    sheet = model.sheet
    first = model.blocks[0].name
    grid = np.zeros(sheet.grid_shape, dtype=bool)
    grid[1:3, 2:6] = True  # a 2 x 4 blob inside the first area
    planted = grid[sheet.row, sheet.col]
    local = torch.from_numpy(planted[sheet.area_slice(0)])
    current: dict[str, torch.Tensor] = {}
    original = extraction.prepare_batch

    def flagging(model_, stimuli, indices):
        current["on"] = torch.tensor([s.condition == "on" for s in stimuli])
        return original(model_, stimuli, indices)

    monkeypatch.setattr(extraction, "prepare_batch", flagging)
    remove = model.hook_points[first].add_edit(
        lambda z: z + 3.0 * (current["on"][:, None, None] & local[None, None, :]).to(z.dtype)
    )
    try:
        res = localize(
            model,
            stim,
            {"on>off": {"on": 1, "off": -1}},
            min_cluster=4,
            permutations=0,
            top_percent=25,
            batch_size=3,
            use_cache=False,
        )
    finally:
        remove()
    c = res.contrasts[0]
    # in the edited area exactly the blob is significant and it is one cluster (the edit also
    # flows on to the next block, which is downstream and may respond too)
    first_area = sheet.area_slice(0)
    assert np.array_equal(c.significant[first_area], planted[first_area])
    blob_labels = np.unique(c.labels[planted])
    assert blob_labels.size == 1 and blob_labels[0] > 0
    assert np.array_equal(c.labels == blob_labels[0], planted)
    area0 = sheet.areas[0].name
    prof = c.profiles[(c.profiles["area"] == area0) & (c.profiles["split_direction"] != "mean")]
    for _, rows in prof.groupby("split_direction"):
        r = rows.set_index("condition")["response_mean"]
        assert r["on"] - r["off"] == pytest.approx(3.0, rel=0.05)  # fROI = the 8 blob units


def test_control_runs_the_identity_adaptor_twin_and_tests_trained_vs_control(
    tiny_model_dir, stimulus_dirs, tmp_path, capsys
):
    from topocli.cli import main
    from topocli.models.checkpoint import save_checkpoint
    from topocli.models.topo_model import build_topo_model

    trained = build_topo_model(tiny_model_dir("bert"), mode="adaptor", adaptor_noise=0.3)
    ckpt = save_checkpoint(trained, tmp_path / "ckpt")
    out = tmp_path / "loc"
    argv = ["localize", "--model", str(ckpt), "--stimuli", str(stimulus_dirs["text"])]
    argv += ["-c", "alpha>beta", "--permutations", "19", "--control", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert "trained vs identity-adaptor control" in capsys.readouterr().out
    table = pd.read_csv(out / "control.csv")
    assert list(table["contrast"]) == ["alpha-beta"]  # "alpha>beta" by its canonical name
    assert table["n_areas"].iloc[0] == len(trained.sheet.areas)
    manifest = read_manifest(out, verify=True)
    ctl = manifest["extra"]["control"]["model"]
    assert ctl["name"] == "ckpt-control"
    assert ctl["weights_sha256"] == trained.source["weights_sha256"]
    assert ctl["adaptor_sha256"] != manifest["extra"]["model"]["adaptor_sha256"]
    # the control's own topography, on the same sheet, beside the trained one's
    both = pd.read_csv(out / "topography.csv"), pd.read_csv(out / "control_topography.csv")
    assert [len(t) for t in both] == [len(trained.sheet.areas)] * 2
    # a model that is itself a control has nothing to be compared with: a warning, no table
    out2 = tmp_path / "loc2"
    argv2 = ["localize", "--model", "minilm-control", "--stimuli", str(stimulus_dirs["text"])]
    argv2 += ["-c", "alpha>beta", "--permutations", "0", "--control", "-q", "--out", str(out2)]
    capsys.readouterr()
    assert main(argv2) == 0
    assert "itself a non-topographic control" in capsys.readouterr().err
    assert not (out2 / "control.csv").exists()
