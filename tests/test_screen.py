"""`topo screen`: planted categories, the K-category fast path, discovery, bad input, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fakes import feed_activations, forbid_model
from scipy import stats as sps
from sklearn.metrics import adjusted_rand_score

from topocli.activations.extraction import extract
from topocli.activations.source import ActivationSource
from topocli.cli import main
from topocli.errors import TopoInputError
from topocli.reporting.reader import load_sheet_maps, read_manifest
from topocli.reporting.results import ResultsFolder
from topocli.sheet import AreaSpec, Sheet
from topocli.stats.froi import dice
from topocli.stimuli.stimulus_set import Stimulus, StimulusSet, load_stimulus_set
from topocli.workflows.screen.analysis import ScreenOptions, rank_categories
from topocli.workflows.screen.discovery import discover_clusters, selectivity_scores
from topocli.workflows.screen.inputs import check_categories, check_not_in_baseline
from topocli.workflows.screen.known import KnownMap
from topocli.workflows.screen.run import discover_screen, screen


# ---------------------------------------------------------------------- helpers
def _stim_set(counts: dict[str, int], root: str = "synthetic") -> StimulusSet:
    stimuli = [
        Stimulus(cond, i % 2, "text", text=f"{cond} {i}")
        for cond, n in counts.items()
        for i in range(n)
    ]
    return StimulusSet(Path(root), stimuli, list(counts))


def _sheet() -> Sheet:
    return Sheet.build([AreaSpec("a1", 400), AreaSpec("a2", 400)], "tiled")


def _blob(sheet: Sheet, r0: int, c0: int, h: int = 6, w: int = 6) -> np.ndarray:
    grid = np.zeros(sheet.grid_shape, dtype=bool)
    grid[r0 : r0 + h, c0 : c0 + w] = True
    return grid[sheet.row, sheet.col]


def _opts(**kw) -> ScreenOptions:
    base = {"use_cache": False, "permutations": 19, "n_exemplars": 3}
    return ScreenOptions(**{**base, **kw})


def _planted(sheet, blobs, n_per, effect=2.0, seed=0):
    """Activations [N, U]: N(0, 1) noise plus ``effect`` on each category's blob."""
    rng = np.random.default_rng(seed)
    names = list(blobs)
    groups = np.repeat(np.arange(len(names)), n_per)
    x = rng.standard_normal((groups.size, sheet.n_units)).astype(np.float32)
    for k, name in enumerate(names):
        x[np.ix_(groups == k, blobs[name])] += effect
    return x, groups


# ---------------------------------------------------------------------- planted categories
def test_planted_category_clusters_are_found_and_ranked_by_novelty(monkeypatch):
    sheet = _sheet()
    blobs = {
        "apples": _blob(sheet, 3, 3),
        "boats": _blob(sheet, 12, 11),
        "clocks": _blob(sheet, 4, 25),  # second tile
        "drums": _blob(sheet, 13, 30, 5, 8),
    }
    x, _ = _planted(sheet, blobs, 24)
    stim_set = _stim_set(dict.fromkeys(blobs, 24))
    feed_activations(monkeypatch, x)
    # a known localizer overlapping the apples blob (and a bit more), nothing near the others
    known_mask = blobs["apples"] | _blob(sheet, 3, 9, 6, 2)
    known = [KnownMap("language", "test", known_mask)]
    res = screen(SimpleNamespace(sheet=sheet), stim_set, None, _opts(), known)
    by_name = {c.name: c for c in res.categories}
    for name, blob in blobs.items():
        c = by_name[name]
        assert c.n_clusters >= 1
        assert dice(c.labels == 1, blob) >= 0.9, name  # the largest cluster is the planted one
        assert c.heldout_effect > 0.5  # fROI = top 10% (80 units) around a 36-unit blob
        assert c.reference == "rest"
        # exemplars come from the category itself
        assert all(res.stim_set.stimuli[i].condition == name for i in c.exemplar_rows)
        assert len(c.exemplar_rows) == 3
    assert by_name["apples"].best_known == "language"
    assert by_name["apples"].max_dice > 0.8
    for other in ("boats", "clocks", "drums"):
        assert by_name["apples"].novelty < by_name[other].novelty
        assert by_name[other].novelty == pytest.approx(1.0, abs=0.1)
    assert [c.rank for c in res.categories] == [1, 2, 3, 4]
    assert res.categories[-1].name == "drums" or by_name["drums"].n_significant >= 36
    table = res.category_table()
    assert list(table.columns[:11]) == [
        "category",
        "n_stimuli",
        "n_significant_units",
        "n_clusters",
        "peak_t",
        "moran_i",
        "best_known_match",
        "max_dice",
        "novelty",
        "novelty_random_placement",
        "rank",
    ]
    # the split-half profile: every category's fROI prefers its own category on held-out data
    prof = res.profiles[res.profiles["split_direction"] == "mean"]
    for name in blobs:
        rows = prof[prof["contrast"] == name].set_index("condition")["response_mean"]
        assert rows.idxmax() == name


def test_rank_by_units_then_novelty():
    def cat(name, n_sig, novelty, peak):
        sig = np.zeros(100, bool)
        sig[:n_sig] = True
        t = np.where(sig, peak, 0.0)
        return SimpleNamespace(
            name=name, n_significant=n_sig, novelty=novelty, peak_t=peak, t=t, rank=0
        )

    cats = [cat("a", 10, 0.2, 5.0), cat("b", 10, 0.9, 4.0), cat("c", 30, np.nan, 3.0)]
    order = [c.name for c in rank_categories(cats, "units")]
    assert order == ["c", "b", "a"]
    order = [c.name for c in rank_categories(cats, "peak-t")]
    assert order == ["a", "b", "c"]
    assert [c.rank for c in cats if c.name == "a"] == [1]


# ---------------------------------------------------------------------- oracles
@pytest.mark.parametrize("mode", ["rest", "single", "with_baseline"])
def test_fast_path_equals_a_per_category_scipy_loop(monkeypatch, mode):
    sheet = Sheet.build([AreaSpec("a", 60)], "tiled")
    rng = np.random.default_rng(3)
    counts = {"c0": 9, "c1": 12, "c2": 7, "c3": 10}
    if mode == "single":
        counts = {"c0": 9}
    base_n = 15 if mode != "rest" else 0
    n = sum(counts.values()) + base_n
    x = rng.standard_normal((n, sheet.n_units)) * rng.uniform(0.5, 2, sheet.n_units)
    x += rng.uniform(-1, 1, (n, 1))  # stimulus-wide offsets
    x = x.astype(np.float32)
    cats = _stim_set(counts)
    base = _stim_set({"pool": base_n}, "pool") if base_n else None
    g = cats.condition_index()
    g = np.concatenate([g, np.full(base_n, len(counts))])
    feed_activations(monkeypatch, x)
    res = screen(SimpleNamespace(sheet=sheet), cats, base, _opts(permutations=0), [])
    xd = x.astype(np.float64)
    for c in res.categories:
        k = list(counts).index(c.name)
        if mode == "single":
            ref = g == len(counts)
        else:
            ref = g != k
        want = sps.ttest_ind(xd[g == k], xd[ref], equal_var=False, alternative="greater")
        np.testing.assert_allclose(c.t, want.statistic, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(c.p, want.pvalue, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(c.q, sps.false_discovery_control(want.pvalue), rtol=1e-6)
        if mode == "with_baseline":
            want_b = sps.ttest_ind(xd[g == k], xd[g == len(counts)], equal_var=False)
            np.testing.assert_allclose(c.vs_baseline["t"], want_b.statistic, rtol=1e-8)
        else:
            assert c.vs_baseline is None


def test_vectorised_profiles_equal_froi_profiles():
    from topocli.stats.froi import froi_profiles
    from topocli.workflows.screen.analysis import category_profiles

    sheet = Sheet.build([AreaSpec("a", 50), AreaSpec("b", 30)], "stacked")
    rng = np.random.default_rng(5)
    conds = ["x", "y", "z", "w"]
    n = np.array([[5, 4], [3, 3], [6, 5], [1, 2]], dtype=float)  # w has 1 even stimulus: NaN var
    mean = rng.standard_normal((4, 2, sheet.n_units))
    var = rng.uniform(0.5, 2, (4, 2, sheet.n_units))
    var[3, 0] = np.nan
    t_split = rng.standard_normal((2, 2, sheet.n_units))
    t_split[0, 0, :3] = np.nan
    table, resp = category_profiles(t_split, ["x", "z"], n, mean, var, conds, 15.0)
    want = pd.concat(
        [
            froi_profiles(t_split[k], mean, sheet, conds, c, "sheet", 15.0, n=n, var=var)
            for k, c in enumerate(["x", "z"])
        ],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(table, want, check_dtype=False, rtol=1e-12)
    means = want[want["split_direction"] == "mean"]["response_mean"].to_numpy()
    np.testing.assert_allclose(resp.reshape(-1), means)


def test_selectivity_score_is_the_median_t_of_the_significant_units():
    t = np.array([[9.0, 8.0, 7.0, 0.5, -3.0, np.nan, 0.1, 0.2, 0.3, 6.0]])
    p = np.array([[1e-9, 1e-8, 1e-7, 0.3, 0.999, np.nan, 0.45, 0.4, 0.35, 1e-6]])
    region = np.ones(10, bool)
    assert selectivity_scores(t, p, region, 0.05)[0] == np.median([9.0, 8.0, 7.0, 6.0])
    region[:2] = False  # over an area: only its units count
    assert selectivity_scores(t, p, region, 0.05)[0] == np.median([7.0, 6.0])
    # nothing significant: the peak t; nothing finite: -inf
    assert selectivity_scores(t, np.full_like(p, 0.9), region, 0.05)[0] == 7.0
    assert selectivity_scores(np.full((1, 10), np.nan), p, region)[0] == -np.inf


# ---------------------------------------------------------------------- discovery
def _pool(sheet, n_groups=4, n_per=30, seed=1, emb_noise=0.6):
    rng = np.random.default_rng(seed)
    spots = [(2, 2), (12, 12), (3, 24), (13, 28)][:n_groups]
    blobs = {f"g{k}": _blob(sheet, r, c) for k, (r, c) in enumerate(spots)}
    x, truth = _planted(sheet, blobs, n_per, effect=1.5, seed=seed)
    order = rng.permutation(truth.size)
    x, truth = x[order], truth[order]
    centers = rng.standard_normal((n_groups, 16)) * 1.5
    emb = centers[truth] + emb_noise * rng.standard_normal((truth.size, 16))
    return x, truth, emb, blobs


def test_discovery_recovers_planted_groups():
    sheet = _sheet()
    x, truth, emb, _ = _pool(sheet)
    disc = discover_clusters(emb, ActivationSource.from_array(x), min_size=10, max_size=60)
    assert adjusted_rand_score(truth, disc.labels) >= 0.8
    assert len(disc.names) == 4
    assert disc.names[0] == "discovered_01"
    assert set(disc.log["decision"]) >= {"split (root)", "kept"}
    # the score only grows down the walk: every kept node beats each eligible child
    kept = disc.log[disc.log["decision"] == "kept"]
    assert (kept["best_child_score"].fillna(-np.inf) <= kept["score"]).all()


def test_discovery_stops_where_the_sheet_stops_improving():
    """Embedding sub-clusters that share one sheet territory are not split apart."""
    sheet = _sheet()
    x, truth, emb, _ = _pool(sheet, n_per=40, seed=5)
    rng = np.random.default_rng(7)
    sub = rng.integers(0, 2, truth.size)
    emb = emb + rng.standard_normal((8, emb.shape[1]))[2 * truth + sub]  # 8 embedding clusters
    disc = discover_clusters(emb, ActivationSource.from_array(x), min_size=10, max_size=80)
    assert adjusted_rand_score(truth, disc.labels) >= 0.8  # the 4 sheet groups
    assert adjusted_rand_score(2 * truth + sub, disc.labels) < 0.8  # not the 8 sub-clusters


def test_discovery_through_the_float16_cache_matches_memory(monkeypatch):
    sheet = _sheet()
    x, truth, emb, _ = _pool(sheet, n_groups=3, seed=4)
    stim_set = _stim_set({"pool": truth.size})
    feed_activations(monkeypatch, x, emb)
    model = SimpleNamespace(sheet=sheet)
    mem = extract(model, stim_set, use_cache=False, with_final=True, keep_activations=True)
    disk = extract(
        model, stim_set, use_cache=False, with_final=True, keep_activations=True, memory_bytes=0
    )
    assert mem.source.in_memory and not disk.source.in_memory
    np.testing.assert_allclose(disk.final, emb.astype(np.float32))
    a = discover_clusters(mem.final, mem.source, 10, 60)
    b = discover_clusters(disk.final, disk.source, 10, 60)
    assert adjusted_rand_score(a.labels, b.labels) == 1.0
    folder = disk.source.folder
    disk.source.close()
    assert not folder.exists()  # the temporary cache is removed


def test_discover_screen_end_to_end(monkeypatch):
    sheet = _sheet()
    x, truth, emb, blobs = _pool(sheet, seed=2)
    pool = _stim_set({"pool": truth.size}, "pool")
    feed_activations(monkeypatch, x, emb)
    res = discover_screen(SimpleNamespace(sheet=sheet), pool, _opts(min_size=10, max_size=60))
    assert res.mode == "discover"
    labels = np.array([res.conditions.index(s.condition) for s in res.stim_set])
    assert adjusted_rand_score(truth, labels) >= 0.8
    found = [c.labels == 1 for c in res.categories]
    for blob in blobs.values():  # every planted territory is some discovered cluster's
        assert max(dice(f, blob) for f in found) >= 0.9
    assert res.notes and "circular" in res.notes[0]


# ---------------------------------------------------------------------- bad input
def test_library_checks():
    with pytest.raises(TopoInputError, match="category 'b' has 3 stimuli; need at least 4"):
        check_categories(_stim_set({"a": 8, "b": 3}))
    cats = _stim_set({"a": 6})
    same = StimulusSet(
        Path("elsewhere"), [Stimulus("x", 0, "text", text=f"a {i}") for i in [5, 4, 3, 2, 1, 0]]
    )
    with pytest.raises(TopoInputError, match="same stimuli as"):
        check_not_in_baseline(cats, same)
    with pytest.raises(TopoInputError, match="larger than --max-size"):
        ScreenOptions(min_size=20, max_size=10).check()
    with pytest.raises(TopoInputError, match="--min-size must be at least 4"):
        ScreenOptions(min_size=2).check()


def _write_text(folder: Path, n: int, tag: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"the {tag} sentence number {i} is here" for i in range(n)]
    (folder / "items.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _one_line_error(capsys, argv, message):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1
    assert message in err


def test_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    forbid_model(monkeypatch)
    root = tmp_path / "cats"
    _write_text(root / "animals", 10, "animal")
    _write_text(root / "tools", 3, "tool")
    out = ["--out", str(tmp_path / "out"), "--quiet"]
    _one_line_error(capsys, ["screen", "--stimuli", str(root), *out], "category 'tools' has 3")
    # a category folder that is also the baseline: same path, then same content
    animals = root / "animals"
    _one_line_error(
        capsys,
        ["screen", "--stimuli", str(animals), "--against", str(animals), *out],
        "is also in the baseline",
    )
    copy = _write_text(tmp_path / "copy", 10, "animal")
    _one_line_error(
        capsys,
        ["screen", "--stimuli", str(animals), "--against", str(copy), *out],
        "same stimuli as",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(capsys, ["screen", "--discover", str(empty), *out], "pool is empty")
    _one_line_error(
        capsys,
        ["screen", "--discover", str(root), "--min-size", "20", "--max-size", "10", *out],
        "--min-size 20 is larger than --max-size 10",
    )
    assert not (tmp_path / "out").exists()


def test_image_categories_on_a_text_model(tiny_model_dir, stimulus_dirs, tmp_path, capsys):
    _one_line_error(
        capsys,
        [
            "screen",
            "--model",
            str(tiny_model_dir("bert")),
            "--stimuli",
            str(stimulus_dirs["image"]),
            "--no-builtin-known",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
        "image categories, but this model takes text",
    )
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- the CLI on a real model
EXPECTED = {
    "categories.csv",
    "clusters.csv",
    "units.csv",
    "profiles.csv",
    "exemplars.csv",
    "dice.csv",
    "known.csv",
    "tmap.nii.gz",
    "qmap.nii.gz",
    "known_maps.nii.gz",
    "stats.safetensors",
    "report.html",
    "manifest.json",
}


def _localize_folder(model_dir: Path, stim_dir: Path, out: Path) -> Path:
    from topocli.models.topo_model import build_topo_model
    from topocli.workflows.localize.report import write_localize_results
    from topocli.workflows.localize.run import localize

    model = build_topo_model(model_dir, mode="direct")
    stim = load_stimulus_set(stim_dir)
    res = localize(model, stim, {"alpha>beta": {"alpha": 1.0, "beta": -1.0}}, permutations=0)
    with ResultsFolder(out) as rf:
        write_localize_results(rf, res, model, {"localizer": "toy"})
    return out


def test_cli_screen_on_tiny_bert_writes_every_output(
    tiny_model_dir, stimulus_dirs, tmp_path, capsys
):
    bert = tiny_model_dir("bert")
    known_dir = _localize_folder(bert, stimulus_dirs["text"], tmp_path / "loc")
    out = tmp_path / "screen"
    argv = [
        "screen",
        "--model",
        str(bert),
        "--stimuli",
        str(stimulus_dirs["text"]),
        "--known",
        str(known_dir),
        "--permutations",
        "9",
        "--min-cluster",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "categories ranked" in printed and "alpha" in printed
    assert EXPECTED <= {p.name for p in out.iterdir()}
    cats = pd.read_csv(out / "categories.csv")
    assert sorted(cats["category"]) == ["alpha", "beta"]
    assert sorted(cats["rank"]) == [1, 2]
    units = pd.read_csv(out / "units.csv")
    assert {"category", "unit", "t", "q", "significant"} <= set(units.columns)
    assert len(units) == 2 * 64
    maps, names, sheet = load_sheet_maps(out / "tmap.nii.gz")
    assert names == list(cats["category"]) and maps.shape == (2, sheet.n_units)
    np.testing.assert_allclose(
        maps[0], units[units["category"] == names[0]]["t"].to_numpy(), rtol=1e-6, atol=1e-6
    )
    known = pd.read_csv(out / "known.csv")
    assert list(known["known"]) == ["language", "tom", "md", "toy: alpha>beta"]
    from topocli.activations.extraction import activation_cache_dir

    assert len(list((activation_cache_dir() / "screen-known").glob("*.safetensors"))) == 3
    manifest = read_manifest(out, verify=True)
    assert manifest["command"] == "screen"
    assert manifest["parameters"]["q"] == 0.05
    assert manifest["extra"]["contrasts"]["alpha"] == {"alpha": 1.0, "beta": -1.0}
    html = (out / "report.html").read_text()
    assert html.index("Ranked categories") < html.index("Categories one by one")
    assert "alpha" in html and "Novelty against known localizers" in html

    # the same localize folder under another model's identity is refused
    forged = tmp_path / "forged"
    import shutil

    shutil.copytree(known_dir, forged)
    m = json.loads((forged / "manifest.json").read_text())
    m["extra"]["model"]["weights_sha256"] = "0" * 64
    (forged / "manifest.json").write_text(json.dumps(m))
    argv2 = [
        *argv[:6],
        str(forged),
        "--no-builtin-known",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "screen2"),
        "--quiet",
    ]
    _one_line_error(capsys, argv2, "made with another model")


def test_cli_single_category_and_discovery_on_tiny_bert(tiny_model_dir, stimulus_dirs, tmp_path):
    bert = str(tiny_model_dir("bert"))
    text = stimulus_dirs["text"]
    common = ["--model", bert, "--no-builtin-known", "--device", "cpu", "--quiet"]
    common += ["--permutations", "0"]
    out = tmp_path / "single"
    rc = main(
        [
            "screen",
            "--stimuli",
            str(text / "alpha"),
            "--against",
            str(text / "beta"),
            "--out",
            str(out),
            *common,
        ]
    )
    assert rc == 0
    cats = pd.read_csv(out / "categories.csv")
    assert list(cats["category"]) == ["alpha"] and cats["reference"][0] == "baseline"
    out = tmp_path / "disc"
    rc = main(["screen", "--discover", str(text), "--min-size", "4", "--out", str(out), *common])
    assert rc == 0
    assign = pd.read_csv(out / "assignments.csv")
    assert len(assign) == 12
    assert assign["cluster"].str.startswith(("discovered_", "unassigned")).all()
    assert (out / "discovery.csv").is_file()


def test_a_cached_rerun_gives_the_same_statistics_and_final_reps(tiny_model_dir, stimulus_dirs):
    from topocli.models.topo_model import build_topo_model

    model = build_topo_model(tiny_model_dir("bert"), mode="direct")
    stim = load_stimulus_set(stimulus_dirs["text"])
    def collect():
        return extract(
            model, stim, 4, use_cache=True, with_final=True, keep_activations=True
        )

    first = collect()
    again = collect()
    assert not first.from_cache and again.from_cache
    assert first.stats == again.stats  # bit for bit: float16 rounding and batch order replayed
    np.testing.assert_array_equal(first.final, again.final)
    np.testing.assert_array_equal(first.source.array, again.source.array)


def test_a_known_folder_made_with_other_settings_is_flagged(
    tiny_model_dir, stimulus_dirs, tmp_path
):
    from topocli.errors import TopoWarning
    from topocli.workflows.screen.known import read_known_folder

    bert = tiny_model_dir("bert")
    known_dir = _localize_folder(bert, stimulus_dirs["text"], tmp_path / "loc")
    from topocli.models.topo_model import build_topo_model

    model = build_topo_model(bert, mode="direct")
    with pytest.warns(TopoWarning, match="fwhm_mm 4.0 vs 0.0"):
        read_known_folder(known_dir, model, model.sheet, ScreenOptions(fwhm_mm=4.0))


def test_topography_is_measured_unsmoothed_whatever_the_display_fwhm(
    tiny_model_dir, stimulus_dirs, tmp_path, capsys
):
    argv = ["screen", "--model", str(tiny_model_dir("bert")), "--stimuli"]
    argv += [str(stimulus_dirs["text"]), "--no-builtin-known", "--permutations", "19", "-q"]
    tables = []
    for fwhm in ("0", "3"):
        out = tmp_path / f"s{fwhm}"
        assert main([*argv, "--fwhm-mm", fwhm, "--out", str(out)]) == 0, capsys.readouterr().err
        tables.append(pd.read_csv(out / "topography.csv"))
    raw, smoothed = tables
    assert len(raw) and (raw["map_fwhm_mm"] == 0).all() and (smoothed["map_fwhm_mm"] == 0).all()
    pd.testing.assert_frame_equal(raw, smoothed)


def test_screen_control_tests_trained_vs_identity_adaptors(
    tiny_model_dir, stimulus_dirs, tmp_path, capsys
):
    from topocli.models.checkpoint import save_checkpoint
    from topocli.models.topo_model import build_topo_model

    trained = build_topo_model(tiny_model_dir("bert"), mode="adaptor", adaptor_noise=0.3)
    ckpt = save_checkpoint(trained, tmp_path / "ckpt")
    out = tmp_path / "scr"
    argv = ["screen", "--model", str(ckpt), "--stimuli", str(stimulus_dirs["text"])]
    argv += ["--no-builtin-known", "--permutations", "19", "--control", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert "trained vs identity-adaptor control" in capsys.readouterr().out
    table = pd.read_csv(out / "control.csv")
    assert sorted(table["category"]) == ["alpha", "beta"]
    assert (table["n_areas"] == len(trained.sheet.areas)).all()
