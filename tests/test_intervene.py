"""`topo intervene`: hook edits, controls, permutation statistics, read-outs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from topocli.cli import main
from topocli.errors import TopoInputError
from topocli.reporting.reader import read_manifest
from topocli.reporting.results import ResultsFolder
from topocli.sheet import AreaSpec, Sheet
from topocli.stats.suffstats import SufficientStats
from topocli.workflows.intervene.controls import (
    distance_matched_controls,
    make_controls,
    random_controls,
)
from topocli.workflows.intervene.perturbations import PerturbationSet
from topocli.workflows.intervene.readouts import token_losses
from topocli.workflows.intervene.reference import (
    PASS_SOURCE,
    load_reference,
    reference_from_activations,
    reference_from_pass,
    reference_from_stats,
)
from topocli.workflows.intervene.source import read_source
from topocli.workflows.intervene.statistics import effect_size_z, permutation_p
from topocli.workflows.intervene.targets import Selection, stimulation_units

CONTRAST = "alpha>beta"


# ---------------------------------------------------------------------- helpers
def _model(path, **kw):
    from topocli.models.registry import resolve_model

    return resolve_model(str(path), **kw)


def _batch(model, stim_dir, n=8):
    from topocli.activations.extraction import prepare_batch
    from topocli.stimuli.stimulus_set import load_stimulus_set

    stim = load_stimulus_set(stim_dir)
    rows = np.arange(min(n, len(stim)))
    return prepare_batch(model, [stim.stimuli[i] for i in rows], rows)


def _capture(model):
    """Register an edit on every area that stores the token-level Z it sees (after others)."""
    seen: dict[int, torch.Tensor] = {}
    removers = []
    for k, block in enumerate(model.blocks):

        def grab(z, k=k):
            seen[k] = z.detach().clone()
            return z

        removers.append(model.hook_points[block.name].add_edit(grab))
    return seen, removers


def _run(model, batch, pset=None):
    with torch.no_grad():
        if pset is None:
            seen, removers = _capture(model)
            out, pooled = model.record(batch.inputs, batch.modality, "mean", batch.masks)
        else:
            with pset.applied():
                seen, removers = _capture(model)
                out, pooled = model.record(batch.inputs, batch.modality, "mean", batch.masks)
        for r in removers:
            r()
    return out, pooled, seen


def _write_source(
    root: Path,
    model,
    stim_dir: Path,
    t: np.ndarray,
    clusters: dict[int, list[int]] | None = None,
    model_spec: str | None = None,
    command: str = "localize",
) -> Path:
    """A synthetic localize results folder: units.csv, clusters.csv, manifest with identity."""
    from topocli.models.checkpoint import model_identity

    sheet = model.sheet
    labels = np.zeros(sheet.n_units, dtype=np.int64)
    for cid, units in (clusters or {}).items():
        labels[units] = cid
    units = pd.DataFrame(
        {
            "contrast": CONTRAST,
            "unit": np.arange(sheet.n_units),
            "area": np.asarray(sheet.area_names, dtype=object)[sheet.area],
            "row": sheet.row,
            "col": sheet.col,
            "t": t,
            "significant": labels > 0,
            "cluster": labels,
        }
    )
    rows = [
        {
            "contrast": CONTRAST,
            "cluster": cid,
            "n_units": len(u),
            "peak_unit": int(u[np.argmax(t[u])]),
        }
        for cid, u in (clusters or {}).items()
    ]
    with ResultsFolder(root) as rf:
        rf.write_csv("units.csv", units)
        rf.write_csv(
            "clusters.csv",
            pd.DataFrame(rows, columns=["contrast", "cluster", "n_units", "peak_unit"]),
        )
        rf.write_manifest(
            command,
            {"model": model_spec, "stimuli": str(stim_dir)},
            {"stimuli": [str(stim_dir / "alpha"), str(stim_dir / "beta")]},
            seed=0,
            extra={
                "model": model_identity(model),
                "conditions": ["alpha", "beta"],
                "contrasts": {CONTRAST: {"alpha": 1.0, "beta": -1.0}},
            },
        )
    return root


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def bert(tiny_model_dir):
    return _model(tiny_model_dir("bert"))


# ---------------------------------------------------------------------- hooks
@pytest.mark.parametrize("mode", ["ablate", "mean", "steer", "stimulate"])
@pytest.mark.parametrize("area", [0, 1])
def test_edit_changes_exactly_the_chosen_units(bert, stimulus_dirs, mode, area):
    model = bert
    batch = _batch(model, stimulus_dirs["text"])
    sheet = model.sheet
    lo = sheet.area_slice(area).start
    units = lo + np.array([1, 5, 17, 30])
    values = np.array([0.0, 0.5, -1.25, 2.0]) if mode != "ablate" else np.zeros(4)
    replace = mode in ("ablate", "mean")
    pset = PerturbationSet(model, [units], [values], replace)
    _, pooled0, z0 = _run(model, batch)
    _, pooled1, z1 = _run(model, batch, pset)
    local = units - lo
    others = np.setdiff1d(np.arange(sheet.area_slice(area).stop - lo), local)
    # earlier areas: every activation bit-for-bit; the edited area: every other unit
    for k in range(area):
        assert torch.equal(z0[k], z1[k])
        sl = sheet.area_slice(k)
        assert torch.equal(pooled0[:, sl], pooled1[:, sl])
    assert torch.equal(z0[area][..., others], z1[area][..., others])
    assert torch.equal(pooled0[:, lo + others], pooled1[:, lo + others])
    # the chosen units: replaced at every token, or shifted by exactly the value
    v = torch.tensor(values, dtype=torch.float32)
    if replace:
        assert torch.equal(z1[area][..., local], v.expand_as(z1[area][..., local]))
    else:
        torch.testing.assert_close(z1[area][..., local], z0[area][..., local] + v)
        assert not torch.equal(z1[area][..., local], z0[area][..., local])
    if area == 0:  # the change propagates downstream
        assert not torch.equal(z0[1], z1[1])


def test_removing_the_edits_restores_the_outputs_exactly(bert, stimulus_dirs):
    model = bert
    batch = _batch(model, stimulus_dirs["text"])
    pset = PerturbationSet(model, [np.arange(10)], [np.zeros(10)], True)
    out0, pooled0, _ = _run(model, batch)
    out1, _, _ = _run(model, batch, pset)
    assert not torch.equal(out0.last_hidden_state, out1.last_hidden_state)
    assert all(not hp.edits for hp in model.hook_points.values())
    out2, pooled2, _ = _run(model, batch)
    assert torch.equal(out0.last_hidden_state, out2.last_hidden_state)
    assert torch.equal(pooled0, pooled2)
    # an exception inside the block removes the edits too
    with pytest.raises(RuntimeError), pset.applied():
        raise RuntimeError("boom")
    assert all(not hp.edits for hp in model.hook_points.values())


def test_stacked_perturbations_in_one_forward_equal_one_at_a_time(bert, stimulus_dirs):
    from topocli.workflows.intervene.readouts import Prepared, _forward

    model = bert
    batch = _batch(model, stimulus_dirs["text"], n=5)
    prep = Prepared([batch], 5, False, True, False)
    rng = np.random.default_rng(0)
    units = [rng.choice(64, size=6, replace=False) for _ in range(4)]
    values = [rng.normal(size=6) for _ in range(4)]
    pset = PerturbationSet(model, units, values, replace=False)
    with torch.no_grad(), pset.applied():
        stacked, _ = _forward(model, batch, 4, prep)
    for j in range(4):
        single = PerturbationSet(model, [units[j]], [values[j]], replace=False)
        with torch.no_grad(), single.applied():
            one, _ = _forward(model, batch, 1, prep)
        torch.testing.assert_close(stacked[5 * j : 5 * (j + 1)], one, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- controls
def _blob_sheet():
    sheet = Sheet.build([AreaSpec("v1", 400), AreaSpec("v2", 400)], "tiled")
    grid = sheet.unit_grid
    blob = grid[5:8, 5:8].ravel()  # 3 x 3 in the first 20 x 20 tile
    return sheet, blob


def test_random_controls_same_count_per_area_inside_and_disjoint():
    sheet, blob = _blob_sheet()
    other = sheet.unit_grid[2:4, 30:32].ravel()  # 4 units of v2
    target = Selection(np.concatenate([blob, other]), np.ones(13))
    draws = random_controls(sheet, target, 30, np.random.default_rng(1))
    again = random_controls(sheet, target, 30, np.random.default_rng(1))
    assert len(draws) == 30
    for c, c2 in zip(draws, again):
        u = c.selection.units
        assert np.array_equal(u, c2.selection.units)  # seeded
        assert u.size == target.units.size and np.unique(u).size == u.size
        assert np.array_equal(sheet.area[u], sheet.area[target.units])  # same area, same slot
        assert not set(u) & set(target.units)
    # draws differ from each other
    assert len({tuple(sorted(c.selection.units)) for c in draws}) == 30


def test_random_controls_refuse_more_units_than_the_area_has():
    sheet, _ = _blob_sheet()
    target = Selection(np.arange(300), np.ones(300))
    with pytest.raises(TopoInputError, match="lower the dose"):
        random_controls(sheet, target, 5, np.random.default_rng(0))


def test_distance_matched_controls_respect_the_distance_rule():
    from scipy.spatial.distance import pdist

    sheet, blob = _blob_sheet()
    target = Selection(blob, np.linspace(1, 2, blob.size))
    pos = sheet.positions_mm
    diameter = pdist(pos[blob]).max()
    centre = pos[blob].mean(axis=0)
    draws, note = distance_matched_controls(sheet, target, 40, np.random.default_rng(3))
    assert note is None and len(draws) == 40
    shape = np.sort(pdist(pos[blob]))
    for c in draws:
        u = c.selection.units
        assert u.size == blob.size and (sheet.area[u] == 0).all()
        got = np.hypot(*(pos[u].mean(axis=0) - centre))
        assert got >= diameter - 1e-9
        assert c.distance_mm == pytest.approx(got)
        assert np.allclose(np.sort(pdist(pos[u])), shape)  # the same shape, translated
        assert np.array_equal(c.selection.weights, target.weights)
    assert len({tuple(c.selection.units) for c in draws}) == 40


def test_distance_matched_near_edges_and_across_areas():
    from scipy.spatial.distance import pdist

    sheet = Sheet.build([AreaSpec("a", 64), AreaSpec("b", 64)], "tiled")  # 8 x 8 tiles
    pos = sheet.positions_mm
    grid = sheet.unit_grid
    a_part = grid[0:3, 0:3].ravel()
    b_part = grid[5:7, 12:14].ravel()
    target = Selection(np.concatenate([a_part, b_part]), np.ones(13))
    draws, _ = distance_matched_controls(sheet, target, 25, np.random.default_rng(0))
    assert len(draws) == 25
    for c in draws:
        u = c.selection.units
        assert np.array_equal(sheet.area[u], sheet.area[target.units])
        for part in (slice(0, 9), slice(9, 13)):
            t_pos, c_pos = pos[target.units[part]], pos[u[part]]
            dist = np.hypot(*(c_pos.mean(axis=0) - t_pos.mean(axis=0)))
            assert dist >= pdist(t_pos).max() - 1e-9


def test_distance_matched_gives_up_when_no_site_is_far_enough():
    sheet = Sheet.build([AreaSpec("a", 64)], "tiled")
    scattered = sheet.unit_grid[[0, 7, 0, 7], [0, 0, 7, 7]]
    draws, note = distance_matched_controls(
        sheet, Selection(scattered, np.ones(4)), 5, np.random.default_rng(0)
    )
    assert draws == [] and "diameter" in note


def test_make_controls_is_seeded_by_seed_and_dose():
    sheet, blob = _blob_sheet()
    target = Selection(blob, np.ones(blob.size), dose=5.0)
    a, _ = make_controls(sheet, target, ["random", "distance-matched"], 10, 7, 0)
    b, _ = make_controls(sheet, target, ["random", "distance-matched"], 10, 7, 0)
    c, _ = make_controls(sheet, target, ["random", "distance-matched"], 10, 8, 0)
    assert [x.kind for x in a] == ["random"] * 10 + ["distance-matched"] * 10
    assert all(np.array_equal(x.selection.units, y.selection.units) for x, y in zip(a, b))
    assert not all(np.array_equal(x.selection.units, y.selection.units) for x, y in zip(a, c))


def test_stimulation_is_a_truncated_gaussian_inside_the_site_area():
    sheet = Sheet.build([AreaSpec("a", 400), AreaSpec("b", 400)], "stacked", mm_per_unit=0.5)
    last_row = sheet.areas[0].row0 + sheet.areas[0].rows - 1
    site = int(sheet.unit_grid[last_row, 8])  # last row of area a, next to area b
    assert sheet.area[site] == 0
    units, w = stimulation_units(sheet, site, spread_mm=1.0)
    d = np.hypot(*(sheet.positions_mm[units] - sheet.positions_mm[site]).T)
    assert units[0] == site and w[0] == 1.0
    assert np.allclose(w, np.exp(-(d**2) / 2.0)) and (d <= 3.0 + 1e-9).all()
    assert (sheet.area[units] == 0).all()
    inside = np.hypot(*(sheet.positions_mm - sheet.positions_mm[site]).T) <= 3.0
    assert units.size == np.count_nonzero(inside & (sheet.area == 0))
    across, _ = stimulation_units(sheet, site, 1.0, across_areas=True)
    assert (sheet.area[across] == 1).any() and across.size == np.count_nonzero(inside)
    tiled = Sheet.build([AreaSpec("a", 100)], "tiled")
    with pytest.raises(TopoInputError, match="stacked"):
        stimulation_units(tiled, 0, 1.0, across_areas=True)


# ---------------------------------------------------------------------- statistics
def test_permutation_p_equals_a_hand_computation():
    controls = [0.1, 0.6, 0.5, 0.2, float("nan")]
    # controls >= 0.5: 0.6 and 0.5 -> (1 + 2) / (4 + 1)
    assert permutation_p(0.5, controls) == pytest.approx(3 / 5)
    assert permutation_p(0.7, controls) == pytest.approx(1 / 5)
    assert permutation_p(0.0, controls) == pytest.approx(5 / 5)
    assert np.isnan(permutation_p(0.5, []))
    c = np.array([0.1, 0.6, 0.5, 0.2])
    assert effect_size_z(0.7, controls) == pytest.approx((0.7 - c.mean()) / c.std(ddof=1))


def test_reference_direction_and_mean_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 7))
    cond = np.repeat([0, 1, 2], [10, 14, 16])
    split = np.arange(40) % 2
    stats = SufficientStats.from_data(x, 2 * cond + split, 6)
    ref = reference_from_stats(stats, ["a", "b", "c"], {"a": 1.0, "b": -0.5, "c": -0.5})
    want = x[cond == 0].mean(0) - 0.5 * (x[cond == 1].mean(0) + x[cond == 2].mean(0))
    assert np.allclose(ref.direction, want)
    assert np.allclose(ref.mean, x.mean(0))
    assert np.allclose(ref.sd, x.std(0, ddof=1))


def test_reference_from_the_activation_pipeline_equals_the_pooled_activations(
    bert, stimulus_dirs, tmp_path
):
    from topocli.activations.extraction import extract
    from topocli.stimuli.stimulus_set import load_stimulus_set

    stim = load_stimulus_set(stimulus_dirs["text"])
    weights = {"alpha": 1.0, "beta": -1.0}
    # use_cache=False: the float16 cache would round the activations
    with extract(bert, stim, 4, "mean", use_cache=False, keep_activations=True) as ext:
        acts = np.asarray(ext.source.array, dtype=np.float64)
    want = reference_from_activations(acts, stim.condition_index(), list(stim.conditions), weights)
    got = reference_from_pass(bert, stim, weights, batch_size=4, use_cache=False)
    assert got.source == PASS_SOURCE
    for name in ("mean", "direction", "sd"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-6)
    # what the workflow does for a folder without stats.safetensors: a cached pipeline pass
    src = _write_source(tmp_path / "loc", bert, stimulus_dirs["text"], np.zeros(64))
    ref, notes = load_reference(read_source(src), bert, stim, weights, batch_size=4)
    assert notes == [] and ref.source == PASS_SOURCE
    for name in ("mean", "direction", "sd"):
        np.testing.assert_allclose(getattr(ref, name), getattr(want, name), rtol=1e-2, atol=1e-3)


def test_token_losses_equal_cross_entropy_of_each_row():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(3, 5, 11)), dtype=torch.float32)
    ids = torch.tensor(rng.integers(0, 11, size=(3, 5)))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    got = token_losses(logits, ids, mask)
    for i, n in enumerate([5, 3]):
        ce = torch.nn.functional.cross_entropy(logits[i, : n - 1], ids[i, 1:n])
        assert got[i] == pytest.approx(float(ce), rel=1e-6)
    assert np.isnan(got[2])  # one token: no next-token prediction


# ---------------------------------------------------------------------- planted dependence
@pytest.fixture(scope="module")
def planted(tiny_model_dir, stimulus_dirs, tmp_path_factory):
    """A tiny BERT whose final representation is dominated by 4 units of its last area."""
    import transformers as tf

    root = tmp_path_factory.mktemp("planted")
    net = tf.BertModel.from_pretrained(tiny_model_dir("bert"))
    local = np.array([0, 1, 8, 9])  # a 2 x 2 block of the last area (4 x 8 units)
    with torch.no_grad():
        norm = net.encoder.layer[1].output.LayerNorm
        norm.weight[local] = 40.0
        norm.bias[local] = 20.0
    folder = root / "model"
    net.save_pretrained(folder)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model_dir("bert")).save_pretrained(folder)
    model = _model(folder)
    units = model.sheet.area_slice(1).start + local
    t = np.linspace(-1, 1, model.sheet.n_units)
    t[units] = [9.0, 8.0, 7.0, 6.0]
    src = _write_source(
        root / "loc", model, stimulus_dirs["text"], t, {1: list(units), 2: [0, 1]}, str(folder)
    )
    return folder, src, units


def test_planted_dependence_is_detected_and_controls_are_not(planted, tmp_path, capsys):
    folder, src, units = planted
    out = tmp_path / "iv"
    code, _, err = _cli(
        ["intervene", "--from", src, "--cluster", 1, "--n-controls", 19, "--out", out]
        + ["--device", "cpu", "--quiet"],
        capsys,
    )
    assert code == 0, err
    stats = pd.read_csv(out / "stats.csv")
    row = stats[(stats["statistic"] == "target_effect")].set_index("control")
    for kind in ("random", "distance-matched"):
        r = row.loc[kind]
        assert r["n_controls"] == 19
        assert r["p_permutation"] == pytest.approx(1 / 20)  # beats every draw
        assert r["target_value"] > 0.3
        assert r["control_max"] < 0.25 * r["target_value"]
        assert r["effect_size_z"] > 5
    targets = pd.read_csv(out / "targets.csv")
    assert sorted(targets["unit"]) == sorted(units)
    controls = pd.read_csv(out / "controls.csv")
    assert set(controls["control"]) == {"random", "distance-matched"}
    assert (controls.groupby("control")["draw"].nunique() == 19).all()
    effects = pd.read_csv(out / "effects.csv")
    base = effects[effects["intervention"] == "unperturbed"]
    assert np.allclose(base["value"], 1.0) and np.allclose(base["change"], 0.0)
    manifest = read_manifest(out, verify=True)
    assert manifest["command"] == "intervene"
    assert manifest["extra"]["units_per_dose"] == {"100": 4}
    html = (out / "report.html").read_text()
    assert "Dose-response" in html and "data:image/png;base64" in html


def test_dose_response_and_the_probe(planted, tmp_path, capsys):
    folder, src, units = planted
    out = tmp_path / "iv"
    code, _, err = _cli(
        ["intervene", "--from", src, "--contrast", CONTRAST, "--dose", "1,5,10"]
        + ["--readout", "fidelity,probe", "--controls", "random", "--n-controls", 9]
        + ["--out", out, "--device", "cpu", "-q"],
        capsys,
    )
    assert code == 0, err
    targets = pd.read_csv(out / "targets.csv")
    sizes = targets.groupby("dose").size()
    assert list(sizes) == [1, 4, 7]  # ceil(p% of 64 units)
    assert list(targets[targets["dose"] == 5.0]["unit"]) == list(units)  # highest t first
    stats = pd.read_csv(out / "stats.csv")
    assert set(stats["control"]) == {"random"}
    assert set(stats["statistic"]) == {"target_effect", "selectivity", "target_bias"}
    fid = stats[(stats["readout"] == "fidelity") & (stats["statistic"] == "target_effect")]
    assert np.all(np.diff(fid["target_value"].to_numpy()) > 0)  # more units, larger effect
    effects = pd.read_csv(out / "effects.csv")
    acc = effects[(effects["readout"] == "probe_accuracy") & (effects["condition"] == "all")]
    assert set(acc["intervention"]) == {"unperturbed", "target", "random (mean)"}


def test_probe_baseline_matches_sklearn_on_extracted_features(planted, tmp_path, capsys):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from topocli.activations.extraction import iter_activations
    from topocli.stimuli.stimulus_set import load_stimulus_set

    folder, src, _ = planted
    stim_dir = Path(json.loads((src / "manifest.json").read_text())["parameters"]["stimuli"])
    stim = load_stimulus_set(stim_dir)
    model = _model(folder)
    final = np.zeros((len(stim), 32))
    for rows, _, fin in iter_activations(model, stim, batch_size=4, with_final=True):
        final[rows] = fin.numpy()
    y, split = stim.condition_index(), stim.split_index()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=0))
    pred = clf.fit(final[split == 0], y[split == 0]).predict(final[split == 1])
    out = tmp_path / "iv"
    code, _, err = _cli(
        ["intervene", "--from", src, "--cluster", 1, "--readout", "probe", "--controls", "none"]
        + ["--out", out, "--device", "cpu", "-q"],
        capsys,
    )
    assert code == 0, err
    effects = pd.read_csv(out / "effects.csv")
    base = effects[(effects["intervention"] == "unperturbed")].set_index(["condition", "readout"])
    for k, cond in enumerate(stim.conditions):
        truth = y[split == 1] == k
        want = (pred[truth] == k).mean()
        assert base.loc[(cond, "probe_accuracy"), "value"] == pytest.approx(want)
    stats = pd.read_csv(out / "stats.csv")
    assert set(stats["control"]) == {"none"} and stats["p_permutation"].isna().all()


def test_lm_loss_on_a_causal_model_equals_the_model_own_loss(
    tiny_model_dir, stimulus_dirs, tmp_path, capsys
):
    from transformers import AutoTokenizer

    from topocli.stimuli.stimulus_set import load_stimulus_set

    path = tiny_model_dir("gpt2")
    model = _model(path)
    t = np.linspace(-1, 1, model.sheet.n_units)
    src = _write_source(
        tmp_path / "loc", model, stimulus_dirs["text"], t, {1: [60, 61, 62]}, str(path)
    )
    out = tmp_path / "iv"
    code, _, err = _cli(
        ["intervene", "--from", src, "--cluster", 1, "--readout", "lm-loss,fidelity"]
        + ["--n-controls", 3, "--out", out, "--device", "cpu", "-q"],
        capsys,
    )
    assert code == 0, err
    effects = pd.read_csv(out / "effects.csv")
    base = effects[
        (effects["intervention"] == "unperturbed") & (effects["readout"] == "lm_loss")
    ].set_index("condition")
    tok = AutoTokenizer.from_pretrained(path)
    stim = load_stimulus_set(stimulus_dirs["text"])
    for cond in stim.conditions:
        losses = []
        for s in stim.stimuli:
            if s.condition != cond:
                continue
            enc = tok(s.text, return_tensors="pt")
            with torch.no_grad():
                losses.append(float(model.backbone(**enc, labels=enc["input_ids"]).loss))
        assert base.loc[cond, "value"] == pytest.approx(np.mean(losses), rel=1e-4)
    target = effects[(effects["intervention"] == "target") & (effects["readout"] == "lm_loss")]
    assert (target["change"].abs() > 0).all()


# ---------------------------------------------------------------------- with the real localize
@pytest.mark.parametrize("mode", ["mean", "steer", "stimulate"])
def test_on_a_localize_results_folder(tiny_model_dir, stimulus_dirs, tmp_path, capsys, mode):
    pytest.importorskip("topocli.workflows.localize.run")
    loc = tmp_path / "loc"
    code, _, err = _cli(
        ["localize", "--model", tiny_model_dir("bert"), "--stimuli", stimulus_dirs["text"]]
        + ["--contrast", CONTRAST, "--fwhm-mm", 0, "--permutations", 9, "--out", loc]
        + ["--device", "cpu", "-q"],
        capsys,
    )
    if code != 0:
        pytest.skip(f"topo localize is not usable here: {err.strip()}")
    out = tmp_path / "iv"
    extra = ["--dose", "0.4,0.7"] if mode == "stimulate" else ["--dose", "5,10"]
    code, _, err = _cli(
        ["intervene", "--from", loc, "--mode", mode, "--strength", -2, "--n-controls", 4]
        + extra
        + ["--out", out, "--device", "cpu", "-q"],
        capsys,
    )
    assert code == 0, err
    manifest = read_manifest(out)
    assert "stats.safetensors" in manifest["extra"]["reference"]
    assert manifest["extra"]["target_conditions"] == ["alpha"]
    stats = pd.read_csv(out / "stats.csv")
    assert set(stats["dose"]) == ({0.4, 0.7} if mode == "stimulate" else {5.0, 10.0})
    fid = stats[(stats["readout"] == "fidelity") & (stats["statistic"] == "target_effect")]
    assert (fid["target_value"] > 0).all()


# ---------------------------------------------------------------------- bad input
@pytest.fixture
def source(bert, tiny_model_dir, stimulus_dirs, tmp_path):
    t = np.arange(bert.sheet.n_units, dtype=np.float64)  # area 1 holds the top units
    return _write_source(
        tmp_path / "loc",
        bert,
        stimulus_dirs["text"],
        t,
        {1: [40, 41], 3: [5, 6]},
        str(tiny_model_dir("bert")),
    )


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--cluster", "7"], "no cluster 7 for contrast 'alpha>beta'; clusters.csv has: 1, 3"),
        (["--dose", "0,5"], "--dose must lie in (0, 100]"),
        (["--dose", "150"], "--dose must lie in (0, 100]"),
        (["--contrast", "x>y"], "no contrast 'x>y'"),
        (["--mode", "zap"], "unknown --mode"),
        (["--readout", "vibes"], "unknown --readout"),
        (["--dose", "60"], "random controls need"),
        (["--readout", "lm-loss"], "has none (masked-token loss is not supported)"),
        (["--dose", "5", "--top-percent", "5"], "give one of them"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_folder(source, tmp_path, capsys, extra, match):
    out = tmp_path / "iv"
    code, _, err = _cli(
        ["intervene", "--from", source, *extra, "--out", out, "--device", "cpu"], capsys
    )
    assert code == 2, err
    assert match in " ".join(err.split())
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_results_folder_from_another_model_is_refused(source, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "iv"
    code, _, err = _cli(
        ["intervene", "--from", source, "--cluster", 1, "--model", tiny_model_dir("gpt2")]
        + ["--out", out, "--device", "cpu"],
        capsys,
    )
    assert code == 2 and "results folder is from model" in err and not out.exists()


def test_a_folder_that_is_not_localize_or_screen_is_refused(bert, stimulus_dirs, tmp_path, capsys):
    src = _write_source(tmp_path / "x", bert, stimulus_dirs["text"], np.zeros(64), command="info")
    code, _, err = _cli(["intervene", "--from", src, "--out", tmp_path / "iv"], capsys)
    assert code == 2 and "localize or screen" in err


def test_targets_are_selected_on_the_even_half_and_measured_on_the_odd(
    tiny_model_dir, stimulus_dirs, tmp_path, capsys
):
    from scipy import stats as sps

    from topocli.stats.suffstats import SufficientStats
    from topocli.workflows.intervene.readouts import Outcome
    from topocli.workflows.intervene.run import plan_intervention, selection_t
    from topocli.workflows.intervene.statistics import Design, per_stimulus_effects

    loc = tmp_path / "loc"
    argv = ["localize", "--model", str(tiny_model_dir("bert")), "--stimuli"]
    argv += [str(stimulus_dirs["text"]), "-c", "alpha>beta", "--permutations", "0", "-q"]
    assert main([*argv, "--out", str(loc)]) == 0
    plan = plan_intervention(loc, contrast="alpha>beta", dose="10", controls="none")
    stats = SufficientStats.load(loc / "stats.safetensors")
    t, note = selection_t(plan, stats.n_units)
    assert note is None
    # oracle: Welch t of the even half only (groups 2c + 0), from scipy
    var = stats.variance()
    ref = sps.ttest_ind_from_stats(
        stats.mean[0], np.sqrt(var[0]), stats.count[0],
        stats.mean[2], np.sqrt(var[2]), stats.count[2], equal_var=False,
    ).statistic
    np.testing.assert_allclose(t, ref, rtol=1e-9, atol=1e-12)
    # the odd half is what the effects are averaged over
    design = Design(["alpha", "beta"], np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), ["alpha"],
                    ["beta"])
    outcome = Outcome(cosine=np.full((2, 4), 0.5))
    _, rows = per_stimulus_effects("fidelity", outcome, None, None, design)
    assert list(rows) == [1, 3]
