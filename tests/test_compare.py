"""`topo compare`: model results folders against human fROI tables and maps.

Oracles: hand computations (numpy, itertools enumeration of the permutations, a loop over the
bootstrap resamples), scipy (pearsonr, spearmanr, ttest_ind, mannwhitneyu), topocli.human.maps's
category profiles and the EMFL reference table end to end (when ../shared/reference exists).
Model results folders are written here with ResultsFolder, so these tests do not depend on
`topo localize`.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from topocli.cli import main
from topocli.errors import TopoInputError
from topocli.human.profiles import category_profiles, load_human_profiles
from topocli.reporting.reader import read_manifest
from topocli.reporting.results import ResultsFolder
from topocli.sheet import AreaSpec, Sheet
from topocli.workflows.compare.conditions import shipped_condition_map
from topocli.workflows.compare.human_side import parse_map_specs
from topocli.workflows.compare.metrics import METRIC_COLUMNS
from topocli.workflows.compare.models import is_control_model
from topocli.workflows.compare.result import PROFILE_COLUMNS
from topocli.workflows.compare.run import compare

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
NEEDS_REFERENCE = pytest.mark.skipif(
    not REFERENCE.is_dir(),
    reason=f"EMFL reference data not found at {REFERENCE} (../shared/reference is optional)",
)
EMFL_MAP = Path(__file__).resolve().parents[1] / "localizers" / "condition_maps" / "emfl_text.toml"
AREAS = ("layer.0", "layer.1")
TRAINED = {"name": None, "checkpoint": "/ckpt/topo-minilm", "mode": "adaptor"}
CONTROL = {"name": "minilm-control", "checkpoint": None, "mode": "adaptor"}


# ---------------------------------------------------------------------- helpers
def _sheet() -> Sheet:
    return Sheet.build([AreaSpec(a, 32, "text") for a in AREAS], "stacked", 1.0, width=8)


def write_model_results(
    out: Path,
    profiles: dict[str, dict[str, float]],
    contrasts: dict[str, dict[str, float]],
    identity: dict | None = None,
    sems: dict[str, dict[str, float]] | None = None,
    n_stimuli: int = 20,
    moran: dict[str, list[float]] | None = None,
    dice: dict[str, float] | None = None,
    localizer: str | None = "synthetic",
) -> Path:
    """A localize-like results folder; ``profiles`` maps 'contrast@area' -> {condition: mean}."""
    sheet = _sheet()
    rows = []
    for froi, values in profiles.items():
        contrast, area = froi.split("@")
        for condition, mean in values.items():
            sem = (sems or {}).get(froi, {}).get(condition, 0.1)
            for direction in ("even->odd", "odd->even", "mean"):
                rows.append(
                    {
                        "froi": froi,
                        "contrast": contrast,
                        "area": area,
                        "condition": condition,
                        "split_direction": direction,
                        "response_mean": mean + (0.0 if direction == "mean" else 9.0),
                        "response_sem": sem,
                        "n_units": 4,
                        "n_stimuli": n_stimuli,
                    }
                )
    clusters = []
    for contrast, values in (moran or {}).items():
        for k, value in enumerate(values, start=1):
            clusters.append(
                {"contrast": contrast, "cluster": k, "n_units": 8 + k, "moran_i": value}
            )
    cluster_table = pd.DataFrame(clusters, columns=["contrast", "cluster", "n_units", "moran_i"])
    dice_table = pd.DataFrame(
        [
            {"froi": f, "contrast": f.split("@")[0], "area": f.split("@")[1], "dice": d}
            for f, d in (dice or {}).items()
        ],
        columns=["froi", "contrast", "area", "dice"],
    )
    names = list(contrasts)
    tmaps = np.stack([np.linspace(-3, 3, sheet.n_units) * (k + 1) for k in range(len(names))])
    with ResultsFolder(out) as rf:
        rf.write_csv("profiles.csv", pd.DataFrame(rows))
        rf.write_csv("clusters.csv", cluster_table)
        rf.write_csv("dice.csv", dice_table)
        rf.write_sheet_nifti("tmap.nii.gz", tmaps, sheet, names)
        rf.write_manifest(
            "localize",
            {"q": 0.05, "top_percent": 10.0, "min_cluster": 8, "permutations": 99},
            {},
            seed=0,
            extra={"model": identity or TRAINED, "localizer": localizer, "contrasts": contrasts},
        )
    return out


def write_simple_table(path: Path, rows: dict[str, dict[str, float]], sem: float = 0.2) -> Path:
    """``roi, condition, mean, sem, n`` table."""
    table = pd.DataFrame(
        [
            {"roi": roi, "condition": c, "mean": v, "sem": sem, "n": 9}
            for roi, values in rows.items()
            for c, v in values.items()
        ]
    )
    table.to_csv(path, index=False)
    return path


def metric(table: pd.DataFrame, name: str, froi: str | None = None, model: str | None = None):
    rows = table[table["metric"] == name]
    if froi is not None:
        rows = rows[rows["model_froi"] == froi]
    if model is not None:
        rows = rows[rows["model"] == model]
    assert len(rows) == 1, (name, froi, model, rows)
    return rows.iloc[0]


def hand_bootstrap_ci(x, y, n_boot, seed, spearman=False):
    """Percentile CI with the generator consumed as profile_agreement does (exact p: no draws)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(x), size=(n_boot, len(x)))
    values = []
    for idx in draws:
        a, b = np.asarray(x)[idx], np.asarray(y)[idx]
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            continue
        if spearman:
            a, b = stats.rankdata(a), stats.rankdata(b)
        values.append(np.corrcoef(a, b)[0, 1])
    return np.percentile(values, [2.5, 97.5])


# ---------------------------------------------------------------------- planted correlation
def test_planted_correlation_metrics_equal_a_hand_computation(tmp_path):
    model_conditions = ["m_a", "m_b", "m_c", "m_d", "m_e"]
    human_conditions = ["h_a", "h_b", "h_c", "h_d", "h_e"]
    x = np.array([0.1, 0.5, 0.2, 0.9, 0.4])
    rng = np.random.default_rng(3)
    y = 2.0 * x + 1.0 + rng.normal(scale=0.15, size=5)  # planted r ~ 0.9
    sems = {"sel@layer.0": dict(zip(model_conditions, [0.05, 0.1, 0.05, 0.2, 0.1], strict=True))}
    model_dir = write_model_results(
        tmp_path / "model",
        {
            "sel@layer.0": dict(zip(model_conditions, x, strict=True)),
            "sel@layer.1": dict(zip(model_conditions, x[::-1], strict=True)),
        },
        {"sel": {"m_d": 1.0, "m_b": 1.0, "m_a": -1.0, "m_c": -1.0}},
        sems=sems,
        moran={"sel": [0.5, 0.6, 0.7]},
        dice={"sel@layer.0": 0.75, "sel@layer.1": 0.5},
    )
    human_csv = write_simple_table(
        tmp_path / "human.csv", {"hROI": dict(zip(human_conditions, y, strict=True))}, sem=0.3
    )
    cmap = tmp_path / "map.toml"
    cmap.write_text(
        "[conditions]\n"
        + "".join(f'{m} = "{h}"\n' for m, h in zip(model_conditions, human_conditions, strict=True))
        + '[frois]\n"sel@layer.0" = "hROI"\n'
    )
    result = compare(
        [model_dir], human_profiles=human_csv, condition_map=cmap, seed=5, bootstrap=3000
    )
    table = result.metrics
    assert list(table.columns) == METRIC_COLUMNS
    assert [p.froi for p in result.pairs] == ["sel@layer.0"]  # only the mapped area

    pearson = metric(table, "pearson_r")
    assert pearson["value"] == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert pearson["value"] == pytest.approx(stats.pearsonr(x, y).statistic, rel=1e-12)
    assert pearson["value"] > 0.85
    orderings = list(itertools.permutations(range(5)))
    r_obs = abs(np.corrcoef(x, y)[0, 1])
    hits = sum(abs(np.corrcoef(x, y[list(o)])[0, 1]) >= r_obs - 1e-12 for o in orderings)
    assert pearson["p_value"] == pytest.approx(hits / 120)
    assert int(pearson["n"]) == 5
    low, high = hand_bootstrap_ci(x, y, 3000, seed=5)
    assert (pearson["ci_low"], pearson["ci_high"]) == pytest.approx((low, high), rel=1e-12)
    assert pearson["ci_low"] <= pearson["value"] <= pearson["ci_high"]

    spearman = metric(table, "spearman_r")
    rho = stats.spearmanr(x, y).statistic
    assert spearman["value"] == pytest.approx(rho, rel=1e-12)
    hits = sum(abs(stats.spearmanr(x, y[list(o)]).statistic) >= abs(rho) - 1e-12 for o in orderings)
    assert spearman["p_value"] == pytest.approx(hits / 120)
    low, high = hand_bootstrap_ci(x, y, 3000, seed=5, spearman=True)
    assert (spearman["ci_low"], spearman["ci_high"]) == pytest.approx((low, high), rel=1e-12)

    # d': targets (h_d, h_b) vs others (h_a, h_c), spread = SD = SEM * sqrt(n)
    sd = {c: s * math.sqrt(20) for c, s in sems["sel@layer.0"].items()}
    pooled = math.sqrt(
        ((sd["m_d"] ** 2 + sd["m_b"] ** 2) / 2 + (sd["m_a"] ** 2 + sd["m_c"] ** 2) / 2) / 2
    )
    expected = ((x[3] + x[1]) / 2 - (x[0] + x[2]) / 2) / pooled
    assert metric(table, "dprime_model")["value"] == pytest.approx(expected, rel=1e-12)
    human_sd = 0.3 * 3.0  # sem * sqrt(9)
    expected_h = ((y[3] + y[1]) / 2 - (y[0] + y[2]) / 2) / human_sd
    assert metric(table, "dprime_human")["value"] == pytest.approx(expected_h, rel=1e-12)

    assert metric(table, "dice_model")["value"] == 0.75
    assert math.isnan(metric(table, "dice_human")["value"])
    moran = metric(table, "moran_i_model")
    assert moran["value"] == pytest.approx(0.6) and moran["sd"] == pytest.approx(0.1)
    assert int(moran["n"]) == 3
    per_1000 = metric(table, "clusters_per_1000_model")
    assert per_1000["value"] == pytest.approx(1000 * 3 / 64)  # 3 clusters on 64 units
    size = metric(table, "cluster_size_pct_model")
    assert size["value"] == pytest.approx(100 * np.mean([9, 10, 11]) / 64)

    profiles = result.profiles
    assert list(profiles.columns) == PROFILE_COLUMNS
    model_rows = profiles[profiles["side"] == "model"].set_index("condition")
    assert model_rows.loc["m_d", "mean"] == pytest.approx(0.9)  # the 'mean' direction only
    assert model_rows.loc["m_d", "shared_condition"] == "h_d"
    human_rows = profiles[profiles["side"] == "human"].set_index("condition")
    assert human_rows["mean"].to_numpy() == pytest.approx(y)


def test_same_seed_same_numbers_and_monte_carlo_path(tmp_path):
    conditions = [f"c{k}" for k in range(9)]  # 9! > 10000: random permutations
    x = np.arange(9, dtype=float)
    y = x**1.5
    model_dir = write_model_results(
        tmp_path / "m", {"k@layer.0": dict(zip(conditions, x, strict=True))}, {"k": {"c8": 1.0}}
    )
    human_csv = write_simple_table(tmp_path / "h.csv", {"k": dict(zip(conditions, y, strict=True))})
    first = compare([model_dir], human_profiles=human_csv, permutations=500, bootstrap=300, seed=2)
    again = compare([model_dir], human_profiles=human_csv, permutations=500, bootstrap=300, seed=2)
    pd.testing.assert_frame_equal(first.metrics, again.metrics)
    row = metric(first.metrics, "pearson_r")
    assert row["p_value"] == pytest.approx(1 / 501)  # nothing reaches |r| by chance
    assert "500 random orderings" in row["method"]
    note = metric(first.metrics, "dprime_model")["note"]
    assert "not shared" in note  # the contrast has no negative-weight condition


# ---------------------------------------------------------------------- EMFL reference
def _emfl_model(tmp_path: Path, name: str, identity: dict, scale: float, moran: list[float]):
    human = category_profiles(
        load_human_profiles(REFERENCE / "emfl_human_froi_responses.csv"), ["language", "tom", "md"]
    )
    rng = np.random.default_rng(len(name))
    conditions = ["false_belief", "false_photo", "math", "nonwords"]
    profiles = {}
    for contrast in ("language", "tom", "md"):
        for area in AREAS:
            values = human.loc[conditions, contrast].to_numpy() * scale
            values = values + rng.normal(scale=0.02, size=4)
            profiles[f"{contrast}@{area}"] = dict(zip(conditions, values, strict=True))
    contrasts = {
        "language": {"false_belief": 0.5, "false_photo": 0.5, "nonwords": -1.0},
        "tom": {"false_belief": 1.0, "false_photo": -1.0},
        "md": {"math": 1.0, "false_belief": -0.5, "false_photo": -0.5},
    }
    return write_model_results(
        tmp_path / name,
        profiles,
        contrasts,
        identity=identity,
        moran={c: moran for c in contrasts},
        dice={f: 0.8 for f in profiles},
        localizer="emfl_text",
    ), human


@NEEDS_REFERENCE
def test_emfl_reference_end_to_end_with_the_shipped_condition_map(tmp_path):
    shipped = shipped_condition_map("emfl_text")
    assert shipped is not None and shipped.read_text() == EMFL_MAP.read_text()
    trained, human = _emfl_model(tmp_path, "trained", TRAINED, 1.0, [0.55, 0.6, 0.58, 0.62])
    control, _ = _emfl_model(tmp_path, "control", CONTROL, 1.0, [0.2, 0.25, 0.23])
    result = compare(
        [trained, control],
        human_profiles=REFERENCE / "emfl_human_froi_responses.csv",
        condition_map=EMFL_MAP,
        permutations=10000,
        bootstrap=2000,
    )
    assert len(result.pairs) == 2 * 3 * len(AREAS)
    assert [m.is_control for m in result.models] == [False, True]
    summary = result.summary_table()
    assert (summary["n_conditions"] == 4).all()
    assert (summary["pearson_r"] > 0.9).all()
    assert (summary["pearson_p"] >= 1 / 24 - 1e-12).all()  # 4 conditions: exact, 24 orderings
    for pair_row in summary.itertuples():
        assert pair_row.pearson_ci_low <= pair_row.pearson_r <= pair_row.pearson_ci_high
    # the human side is topocli.human.maps's category profile, conditions in human names
    profiles = result.profiles[result.profiles["side"] == "human"]
    tom = profiles[profiles["froi"] == "tom"].set_index("condition")["mean"]
    assert tom.loc["math"] == pytest.approx(human.loc["math", "tom"])
    # trained vs control: Welch and Mann-Whitney equal scipy
    a, b = [0.55, 0.6, 0.58, 0.62], [0.2, 0.25, 0.23]
    rows = result.metrics[result.metrics["metric"] == "moran_welch_t_trained_vs_control"]
    assert len(rows) == 3  # one per contrast
    welch = stats.ttest_ind(a, b, equal_var=False)
    assert rows["value"].to_numpy() == pytest.approx(welch.statistic)
    assert rows["p_value"].to_numpy() == pytest.approx(welch.pvalue)
    mwu = result.metrics[result.metrics["metric"] == "moran_mannwhitney_u_trained_vs_control"]
    assert mwu["p_value"].to_numpy() == pytest.approx(stats.mannwhitneyu(a, b).pvalue)


@NEEDS_REFERENCE
def test_emfl_shipped_map_is_used_by_default_for_the_emfl_text_localizer(tmp_path):
    model, _ = _emfl_model(tmp_path, "trained", TRAINED, 1.0, [0.5, 0.6])
    result = compare(
        [model],
        human_profiles=REFERENCE / "emfl_human_froi_responses.csv",
        permutations=100,
        bootstrap=100,
    )
    assert "shipped condition map of localizer 'emfl_text'" in result.cmap_source
    assert set(result.cmap.frois.values()) == {"language", "tom", "md"}


# ---------------------------------------------------------------------- CLI
def _small_emfl_like(tmp_path: Path) -> tuple[Path, Path, Path]:
    conditions = ["a", "b", "c", "d"]
    values = {"a": 1.0, "b": 0.5, "c": 0.1, "d": -0.2}
    contrasts = {"lang": {"a": 1.0, "d": -1.0}}
    trained = write_model_results(
        tmp_path / "trained",
        {f"lang@{area}": values for area in AREAS},
        contrasts,
        moran={"lang": [0.5, 0.55, 0.6]},
        dice={f"lang@{a}": 0.9 for a in AREAS},
    )
    control = write_model_results(
        tmp_path / "control",
        {f"lang@{area}": {c: v * 0.5 for c, v in values.items()} for area in AREAS},
        contrasts,
        identity=CONTROL,
        moran={"lang": [0.2, 0.3]},
    )
    human = write_simple_table(
        tmp_path / "human.csv",
        {"lang": {c: v + 0.1 * k for k, (c, v) in enumerate(values.items())}},
    )
    assert conditions == list(values)
    return trained, control, human


def test_cli_writes_every_output(tmp_path, capsys):
    trained, control, human = _small_emfl_like(tmp_path)
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--model-results",
            str(trained),
            str(control),
            "--human-profiles",
            str(human),
            "--permutations",
            "1000",
            "--bootstrap",
            "500",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Profile agreement" in captured.out
    names = {p.name for p in out.iterdir()}
    assert {"metrics.csv", "profiles.csv", "report.html", "manifest.json"} <= names
    manifest = read_manifest(out, verify=True)
    assert manifest["command"] == "compare"
    assert manifest["parameters"]["permutations"] == 1000
    assert [m["is_control"] for m in manifest["extra"]["models"]] == [False, True]
    assert len(manifest["inputs"]["model_results"]) == 2
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics["model"]) >= {
        "topo-minilm",
        "minilm-control",
        "topo-minilm vs minilm-control",
    }
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 4 and "lang" in html
    assert "same names on both sides" in html
    profiles = pd.read_csv(out / "profiles.csv")
    assert set(profiles["side"]) == {"model", "human"}


def test_cli_repeated_option_form_and_shipped_map_name(tmp_path, capsys):
    trained, control, human = _small_emfl_like(tmp_path)
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            f"--model-results={trained}",
            "--model-results",
            str(control),
            "--human-profiles",
            str(human),
            "--permutations",
            "10",
            "--bootstrap",
            "10",
            "--quiet",
            "-o",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert len(json.loads((out / "manifest.json").read_text())["extra"]["models"]) == 2


# ---------------------------------------------------------------------- human maps
def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return path


def _planted_maps(tmp_path: Path, misaligned: bool = False) -> tuple[Path, list[str], dict]:
    """A parcel with a planted blob; even/odd contrast maps and condition maps."""
    rng = np.random.default_rng(0)
    shape = (16, 16, 12)
    affine = np.eye(4)
    parcel = np.zeros(shape)
    parcel[2:12, 2:12, 2:10] = 1  # 800 voxels
    blob = np.zeros(shape, dtype=bool)
    blob[4:8, 4:8, 3:8] = True  # 80 voxels = 10% of the parcel
    parcels = tmp_path / "parcels" / "lang"
    parcels.mkdir(parents=True)
    _save(parcels / "lh.blob.nii.gz", parcel, affine)
    planted = {"a": 2.0, "b": 1.0, "c": 0.5, "d": -0.5}
    entries = []
    maps = tmp_path / "maps"
    maps.mkdir()
    for half in ("even", "odd"):
        contrast = rng.normal(size=shape)
        contrast[blob] += 8.0
        map_affine = affine.copy()
        if misaligned:
            map_affine[0, 3] = 3.0
        entries.append(str(_save(maps / f"lang.{half}.nii.gz", contrast, map_affine)))
        for condition, value in planted.items():
            beta = rng.normal(scale=0.05, size=shape)
            beta[blob] += value
            entries.append(
                f"{condition}.{half}={_save(maps / f'{condition}_{half}.nii', beta, map_affine)}"
            )
    whole = rng.normal(size=shape)
    whole[blob] += 8.0
    entries.append(str(_save(maps / "lang.nii.gz", whole, affine)))
    return tmp_path / "parcels", entries, planted


def test_human_maps_recover_a_planted_blob_profile_and_dice(tmp_path):
    parcels, entries, planted = _planted_maps(tmp_path)
    trained, control, _ = _small_emfl_like(tmp_path)
    result = compare(
        [trained],
        human_maps=entries,
        parcels=parcels,
        permutations=100,
        bootstrap=100,
        human_q=0.05,
    )
    human = result.human.profiles["lang"]
    assert human["mean"].to_dict() == pytest.approx(planted, abs=0.05)
    assert (human["n_elements"] == 80).all()
    assert metric(result.metrics, "dice_human", froi="lang@layer.0")["value"] == 1.0
    islands = result.human.spatial["lang"].islands
    assert len(islands) >= 1 and islands["n_units"].iloc[0] >= 60
    model_vs_human = metric(result.metrics, "moran_welch_t_model_vs_human")
    welch = stats.ttest_ind(
        [0.5, 0.55, 0.6], islands["moran_i"].dropna().to_numpy(), equal_var=False
    )
    if len(islands["moran_i"].dropna()) > 1:
        assert model_vs_human["value"] == pytest.approx(welch.statistic)
    note = " ".join(result.human.notes["lang"])
    assert "cross-validated" in note


def test_cli_human_maps_with_parcels_writes_human_tables(tmp_path, capsys):
    parcels, entries, _ = _planted_maps(tmp_path)
    trained, _, _ = _small_emfl_like(tmp_path)
    out = tmp_path / "cmp"
    argv = ["compare", "--model-results", str(trained), "--human-maps", *entries]
    argv += ["--parcels", str(parcels), "--permutations", "50", "--bootstrap", "50"]
    code = main([*argv, "--human-q", "0.05", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert {"human_islands.csv", "human_dice.csv", "human_clusters.csv"} <= names
    assert (out / "report.html").read_text().count("<img") >= 3


def test_surface_maps_on_fsaverage5_islands_use_the_mesh(tmp_path):
    from nilearn import datasets

    mesh = datasets.load_fsaverage("fsaverage5")["pial"].parts["left"]
    coords = np.asarray(mesh.coordinates)
    rng = np.random.default_rng(1)
    patch = np.linalg.norm(coords - coords[100], axis=1) < 12.0
    entries = []
    planted = {"a": 1.0, "b": 0.6, "c": 0.2, "d": -0.4}
    for half in ("even", "odd", None):
        t = rng.normal(size=coords.shape[0])
        t[patch] += 9.0
        name = "lang" if half is None else f"lang.{half}"
        path = tmp_path / f"{name}.gii"
        nib.save(
            nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(t.astype(np.float32))]), path
        )
        entries.append(str(path))
        if half is None:
            continue
        for condition, value in planted.items():
            beta = rng.normal(scale=0.05, size=coords.shape[0])
            beta[patch] += value
            path = tmp_path / f"{condition}.{half}.gii"
            nib.save(
                nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(beta.astype(np.float32))]),
                path,
            )
            entries.append(str(path))
    trained, _, _ = _small_emfl_like(tmp_path)
    top = 50.0 * patch.sum() / patch.size  # the fROI: half the patch's size
    result = compare(
        [trained], human_maps=entries, permutations=50, bootstrap=50, human_q=0.05, top_percent=top
    )
    islands = result.human.spatial["lang"].islands
    assert islands["n_units"].iloc[0] >= 0.8 * patch.sum()
    assert result.human.spatial["lang"].element == "vertex"
    profile = result.human.profiles["lang"]["mean"]
    assert profile.to_dict() == pytest.approx(planted, abs=0.1)


# ---------------------------------------------------------------------- bad input
def _cli_error(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_misaligned_map_is_refused_or_resampled(tmp_path, capsys):
    parcels, entries, _ = _planted_maps(tmp_path, misaligned=True)
    trained, _, _ = _small_emfl_like(tmp_path)
    out = tmp_path / "cmp"
    argv = ["compare", "--model-results", str(trained), "--human-maps", *entries]
    argv += ["--parcels", str(parcels), "--permutations", "20", "--bootstrap", "20"]
    err = _cli_error([*argv, "--out", str(out)], capsys)
    assert "does not match parcel" in err and "--resample" in err
    assert not out.exists()
    code = main([*argv, "--resample", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err


def test_condition_map_naming_absent_conditions(tmp_path, capsys):
    trained, _, human = _small_emfl_like(tmp_path)
    cmap = tmp_path / "bad.toml"
    cmap.write_text(
        '[conditions]\na = "a"\nb = "b"\nzz = "c"\nd = "nope"\n[frois]\nlang = "lang"\n'
    )
    err = _cli_error(
        ["compare", "--model-results", str(trained), "--human-profiles", str(human)]
        + ["--condition-map", str(cmap), "--out", str(tmp_path / "o")],
        capsys,
    )
    assert "['zz']" in err and "['nope']" in err
    assert not (tmp_path / "o").exists()


def test_profile_csv_missing_columns(tmp_path, capsys):
    trained, _, _ = _small_emfl_like(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("roi,condition,mean\nlang,a,1\n")
    err = _cli_error(
        ["compare", "--model-results", str(trained), "--human-profiles", str(bad)]
        + ["--out", str(tmp_path / "o")],
        capsys,
    )
    assert "missing columns: sem, n" in err


def test_model_profiles_missing_columns(tmp_path):
    trained, _, human = _small_emfl_like(tmp_path)
    table = pd.read_csv(trained / "profiles.csv").drop(columns=["split_direction"])
    folder = tmp_path / "broken"
    with ResultsFolder(folder) as rf:
        rf.write_csv("profiles.csv", table)
        rf.write_manifest("localize", {}, {}, extra={"model": TRAINED})
    with pytest.raises(TopoInputError, match="missing columns: split_direction"):
        compare([folder], human_profiles=human)


def test_empty_parcel(tmp_path, capsys):
    parcels, entries, _ = _planted_maps(tmp_path)
    _save(parcels / "lang" / "rh.empty.nii.gz", np.zeros((16, 16, 12)), np.eye(4))
    trained, _, _ = _small_emfl_like(tmp_path)
    err = _cli_error(
        ["compare", "--model-results", str(trained), "--human-maps", *entries]
        + ["--parcels", str(parcels), "--out", str(tmp_path / "o")],
        capsys,
    )
    assert "rh.empty" in err and "empty" in err


def test_fewer_than_three_shared_conditions(tmp_path, capsys):
    trained, _, _ = _small_emfl_like(tmp_path)
    human = write_simple_table(tmp_path / "h.csv", {"lang": {"a": 1.0, "b": 0.2, "x": 0.0}})
    err = _cli_error(
        ["compare", "--model-results", str(trained), "--human-profiles", str(human)]
        + ["--out", str(tmp_path / "o")],
        capsys,
    )
    assert "needs at least 3" in err


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "exactly one of --human-profiles"),
        (["--human-profiles", "H", "--human-maps", "x.nii"], "exactly one of"),
        (["--human-profiles", "H", "--parcels", "P"], "--parcels goes with --human-maps"),
        (["--human-maps", "lang=/no/such.nii.gz"], "human map not found"),
        (["--human-maps", "what=H", "--condition-map", "M"], "neither a human condition"),
        (["--human-maps", "a=H", "--condition-map", "M"], "both a condition and an fROI"),
        (["--human-profiles", "H", "--condition-map", "/no/map.toml"], "condition map not found"),
    ],
)
def test_option_errors_are_one_line(tmp_path, capsys, extra, message):
    trained, _, human = _small_emfl_like(tmp_path)
    cmap = tmp_path / "map.toml"
    cmap.write_text('[conditions]\na = "a"\nb = "b"\nc = "c"\n[frois]\nlang = "a"\n')
    extra = [e.replace("H", str(human)) if e.endswith("H") else e for e in extra]
    extra = [str(cmap) if e == "M" else e for e in extra]
    err = _cli_error(
        ["compare", "--model-results", str(trained), *extra, "--out", str(tmp_path / "o")], capsys
    )
    assert message in err


def test_not_a_results_folder(tmp_path, capsys):
    _, _, human = _small_emfl_like(tmp_path)
    err = _cli_error(
        ["compare", "--model-results", str(tmp_path), "--human-profiles", str(human)]
        + ["--out", str(tmp_path / "o")],
        capsys,
    )
    assert "manifest.json" in err


def test_map_specs_and_control_identity(tmp_path):
    for name in ("x.nii.gz", "math_odd.nii", "lang.gii", "tom.nii", "other.nii"):
        (tmp_path / name).write_bytes(b"")
    specs = parse_map_specs(
        [f"tom.even={tmp_path / 'x.nii.gz'}", tmp_path / "math_odd.nii", tmp_path / "lang.gii"]
    )
    assert [(s.key, s.half) for s in specs] == [("tom", "even"), ("math", "odd"), ("lang", None)]
    with pytest.raises(TopoInputError, match="given twice"):
        parse_map_specs([tmp_path / "tom.nii", f"tom={tmp_path / 'other.nii'}"])
    assert is_control_model({"name": "minilm-control"})
    assert is_control_model({"name": "x", "mode": "adaptor", "checkpoint": None})
    assert not is_control_model({"name": "minilm", "mode": "adaptor", "checkpoint": "/c"})
    assert not is_control_model({"name": "bert", "mode": "direct", "checkpoint": None})


def test_model_froi_missing_from_one_folder_is_skipped_with_a_note(tmp_path):
    trained, _, human = _small_emfl_like(tmp_path)
    cmap = tmp_path / "map.toml"
    cmap.write_text(
        '[conditions]\na = "a"\nb = "b"\nc = "c"\nd = "d"\n'
        '[frois]\n"lang@layer.1" = "lang"\n"tom" = "lang"\n'
    )
    result = compare([trained], human_profiles=human, condition_map=cmap, permutations=10)
    assert [p.froi for p in result.pairs] == ["lang@layer.1"]
    assert any("no model fROI 'tom'" in note for note in result.notes)
    cmap.write_text('[conditions]\na = "a"\nb = "b"\nc = "c"\n[frois]\n"tom" = "lang"\n')
    with pytest.raises(TopoInputError, match="none of the condition map's model fROIs"):
        compare([trained], human_profiles=human, condition_map=cmap)


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("clusters.csv", "", "cannot read model cluster table as CSV"),
        (
            "clusters.csv",
            "contrast,n_units\nlang,3\n",
            "model cluster table is missing columns: moran_i",
        ),
        ("dice.csv", "froi\nlang@layer.0\n", "model Dice table is missing columns: dice"),
        ("profiles.csv", "", "cannot read model profile table as CSV"),
    ],
)
def test_damaged_model_tables_are_one_line_errors(tmp_path, name, text, message):
    trained, _, human = _small_emfl_like(tmp_path)
    (trained / name).write_text(text)
    with pytest.raises(TopoInputError, match="changed since manifest.json was written"):
        compare([trained], human_profiles=human, permutations=10, bootstrap=10)
    _rehash(trained, name)  # a folder whose manifest agrees with the damage: the parse checks
    with pytest.raises(TopoInputError, match=message):
        compare([trained], human_profiles=human, permutations=10, bootstrap=10)


def _rehash(folder, name):
    from topocli.reporting.results import sha256_file

    manifest = json.loads((folder / "manifest.json").read_text())
    for row in manifest["outputs"]:
        if row["path"] == name:
            row["sha256"] = sha256_file(folder / name)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_damaged_sheet_only_costs_the_sheet_map(tmp_path):
    trained, _, human = _small_emfl_like(tmp_path)
    (trained / "sheet.safetensors").write_bytes(b"not a sheet")
    result = compare([trained], human_profiles=human, permutations=10, bootstrap=10)
    assert result.models[0].sheet is None
    assert result.models[0].n_units is None


def test_the_contrast_weights_baseline_sits_beside_the_model_r(tmp_path):
    from scipy import stats as sps

    trained, _, human = _small_emfl_like(tmp_path)
    result = compare([trained], human_profiles=human, permutations=100, bootstrap=10)
    rows = result.metrics[result.metrics["metric"] == "pearson_r_contrast_weights"]
    assert len(rows) == len(result.pairs) > 0
    human_means = [1.0, 0.6, 0.3, 0.1]  # values + 0.1 k, conditions a, b, c, d
    want = sps.pearsonr([1.0, 0.0, 0.0, -1.0], human_means).statistic  # lang = a - d
    np.testing.assert_allclose(rows["value"].to_numpy(dtype=float), want, rtol=1e-12)


def test_folders_made_with_different_settings_are_flagged(tmp_path):
    from topocli.errors import TopoWarning

    trained, control, human = _small_emfl_like(tmp_path)
    manifest = json.loads((control / "manifest.json").read_text())
    manifest["parameters"]["fwhm_mm"] = 8.0
    (control / "manifest.json").write_text(json.dumps(manifest))
    manifest = json.loads((trained / "manifest.json").read_text())
    manifest["parameters"]["fwhm_mm"] = 0.0
    (trained / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(TopoWarning, match="fwhm_mm 0.0 vs 8.0"):
        compare([trained, control], human_profiles=human, permutations=10, bootstrap=10)
