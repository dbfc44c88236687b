"""`topo intervene` at its floor: prefix reuse, the sequential test, reused duplicate draws,
percentile-band targets and the generation read-out (tiny models, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from topocli.errors import TopoInputError
from topocli.models.prefix import PrefixReuse
from topocli.workflows.intervene.perturbations import PerturbationSet
from topocli.workflows.intervene.statistics import (
    expected_draws_null,
    permutation_p,
    sequential_p,
)
from topocli.workflows.intervene.targets import band_units

CONTRAST = "alpha>beta"


def _model(path):
    from topocli.models.registry import resolve_model

    return resolve_model(str(path))


def _batch(model, stim_dir, n=8):
    from topocli.activations.extraction import prepare_batch
    from topocli.stimuli.stimulus_set import load_stimulus_set

    stim = load_stimulus_set(stim_dir)
    rows = np.arange(min(n, len(stim)))
    return prepare_batch(model, [stim.stimuli[i] for i in rows], rows)


# ---------------------------------------------------------------------- prefix reuse
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_replayed_prefix_gives_the_same_outputs_and_skips_the_blocks(
    tiny_model_dir, stimulus_dirs, family
):
    model = _model(tiny_model_dir(family))
    model.eval()
    batch = _batch(model, stimulus_dirs["text"])
    lo = model.sheet.area_slice(1).start
    units = [lo + np.array([0, 3, 7]), lo + np.array([1, 2, 9])]
    pset = PerturbationSet(model, units, [np.zeros(3), np.zeros(3)], replace=True)
    assert pset.edited_areas == [1]
    reuse = PrefixReuse(model, pset.edited_areas)
    b = len(batch.indices)
    calls = {k: 0 for k in range(len(model.blocks))}
    handles = [
        blk.module.register_forward_pre_hook(lambda *_a, k=k: calls.__setitem__(k, calls[k] + 1))
        for k, blk in enumerate(model.blocks)
    ]
    inputs = {
        k: v.repeat(2, *([1] * (v.ndim - 1))) if isinstance(v, torch.Tensor) else v
        for k, v in batch.inputs.items()
    }
    outs = []
    try:
        with torch.no_grad():
            for _ in range(2):  # first: record; second: replay
                with pset.applied(), reuse.pass_for(0, b, 2):
                    outs.append(model.forward(inputs, "text"))
    finally:
        for h in handles:
            h.remove()
    first, second = (
        o.last_hidden_state if hasattr(o, "last_hidden_state") else o.logits for o in outs
    )
    assert torch.equal(first, second)
    assert reuse.replayed == 1 and reuse.skipped_blocks == [0, 1]
    # the forward pre-hooks see every call, but the replayed blocks ran only their stub: their
    # own forward was replaced (the module's __call__ still runs the topo hook on the output)
    assert "forward" not in model.blocks[0].module.__dict__  # restored afterwards
    assert calls[0] == 2 and calls[1] == 2


def test_replay_refuses_an_edit_upstream_of_the_first_edited_block(tiny_model_dir, stimulus_dirs):
    model = _model(tiny_model_dir("bert"))
    batch = _batch(model, stimulus_dirs["text"])
    lo = model.sheet.area_slice(1).start
    pset = PerturbationSet(model, [lo + np.array([0, 1])], [np.zeros(2)], replace=True)
    reuse = PrefixReuse(model, [1])
    b = len(batch.indices)
    with torch.no_grad():
        with pset.applied(), reuse.pass_for(0, b, 1):
            model.forward(batch.inputs, "text")
        remove = model.hook_points[model.blocks[0].name].add_edit(lambda z: z * 0)
        try:
            with pytest.raises(AssertionError, match="prefix reuse"):
                with reuse.pass_for(0, b, 1):
                    model.forward(batch.inputs, "text")
        finally:
            remove()


def test_a_block_that_runs_twice_disables_reuse(tiny_model_dir, stimulus_dirs):
    model = _model(tiny_model_dir("bert"))
    batch = _batch(model, stimulus_dirs["text"])
    reuse = PrefixReuse(model, [1])
    b = len(batch.indices)
    block0 = model.blocks[0].module
    with torch.no_grad(), reuse.pass_for(0, b, 1):
        # calling block 0 again inside the pass: weights shared across depth
        out = model.forward(batch.inputs, "text")
        block0(out.last_hidden_state)
    assert reuse.cache[0] is None and "more than once" in reuse.reason


# ---------------------------------------------------------------------- sequential test
def _oracle_sequential(target, controls, h):
    """Besag & Clifford written out as the stopping procedure itself."""
    hits = 0
    for i, c in enumerate(controls, start=1):
        hits += c >= target
        if hits == h:
            return h / i
    return (hits + 1) / (len(controls) + 1)


def test_sequential_p_equals_the_stopping_procedure():
    rng = np.random.default_rng(3)
    for _ in range(500):
        n, h = int(rng.integers(5, 60)), int(rng.integers(1, 12))
        controls = rng.normal(size=n).round(1)  # ties included
        target = round(float(rng.normal(0.5)), 1)
        assert sequential_p(target, controls, h) == pytest.approx(
            _oracle_sequential(target, controls, h)
        )
    assert sequential_p(3.0, [1.0, 2.0], None) == permutation_p(3.0, [1.0, 2.0]) == 1 / 3
    assert np.isnan(sequential_p(float("nan"), [1.0, 2.0], 2))


def test_sequential_p_is_exact_under_the_null_by_simulation():
    # target exchangeable with the controls: P(p <= a) must equal a at every attainable a
    rng = np.random.default_rng(0)
    h, n_max, reps = 5, 49, 20000
    draws = rng.random((reps, n_max + 1))
    p = np.array([sequential_p(d[0], d[1:], h) for d in draws])
    for a in (h / n_max, 0.2, 0.5, 1.0):
        want = min(1.0, np.mean(np.isclose(p, a) | (p < a)))
        # attainable p values at or below a: P(p <= a) <= a, and = a up to Monte Carlo error
        assert want <= a + 3 * np.sqrt(a * (1 - a) / reps) + 1e-9
    support = np.unique(p)
    for a in support[support > 0.15][:5]:
        frac = np.mean(p <= a + 1e-12)
        assert frac == pytest.approx(a, abs=4 * np.sqrt(a * (1 - a) / reps) + 1e-3)


def test_expected_draws_under_the_null_matches_simulation():
    rng = np.random.default_rng(1)
    h, n_max, reps = 10, 100, 20000
    draws = rng.random((reps, n_max + 1))
    hits = np.cumsum(draws[:, 1:] >= draws[:, :1], axis=1)
    reached = hits[:, -1] >= h
    stop = np.where(reached, np.argmax(hits >= h, axis=1) + 1, n_max)
    assert expected_draws_null(h, n_max) == pytest.approx(stop.mean(), rel=0.02)
    assert expected_draws_null(h, n_max) < 0.45 * n_max  # a null target costs under half


# ---------------------------------------------------------------------- percentile band
def test_band_units_match_scipy_percentile_of_score():
    from scipy.stats import percentileofscore

    rng = np.random.default_rng(2)
    t = rng.normal(size=1000)
    t[[5, 50]] = np.nan
    finite = t[np.isfinite(t)]
    for lo, hi in [(0, 1), (20, 30), (99, 100), (0, 100)]:
        got = set(band_units(t, lo, hi).tolist())
        pct = {
            u: percentileofscore(finite, t[u], kind="strict")
            for u in np.flatnonzero(np.isfinite(t))
        }
        n = finite.size
        want = {u for u, q in pct.items() if lo * n / 100 - 1e-9 <= q * n / 100 < hi * n / 100}
        assert got == want
    low = band_units(t, 0, 1)
    assert low.size == 10 and np.all(t[low] <= np.nanpercentile(t, 1.1))
    assert np.all(np.diff(t[low]) <= 0)  # highest first, like top_units


# ---------------------------------------------------------------------- end to end
def _cli(argv, capsys):
    from topocli.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def source(tiny_model_dir, stimulus_dirs, tmp_path_factory):
    """A localize-like folder of the tiny BERT, with a t map (the test file of intervene)."""
    from test_intervene import _write_source

    path = tiny_model_dir("bert")
    model = _model(path)
    t = np.linspace(-1, 1, model.sheet.n_units)
    root = tmp_path_factory.mktemp("src")
    return _write_source(
        root / "loc", model, stimulus_dirs["text"], t, {1: [60, 61, 62]}, str(path)
    )


class _Ctx:
    def __init__(self, out):
        from topocli.cli.context import Context

        self.__dict__["inner"] = Context(out=out, quiet=True, overwrite=True, device="cpu")

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        setattr(self.inner, name, value)


def _run(source, out, **kw):
    from topocli.workflows.intervene.run import run_intervene

    opts = dict(contrast=CONTRAST, dose="5,20", readout="fidelity,probe", n_controls=30)
    opts.update(kw)
    run_intervene(_Ctx(out), source, **opts)
    return (
        pd.read_csv(out / "stats.csv"),
        pd.read_csv(out / "controls.csv"),
        json.loads((out / "manifest.json").read_text()),
    )


def test_prefix_reuse_gives_the_same_statistics(source, tmp_path):
    full, ctrl_full, _ = _run(source, tmp_path / "a", prefix_reuse=False, sequential_h=0)
    fast, ctrl_fast, man = _run(source, tmp_path / "b", prefix_reuse=True, sequential_h=0)
    cols = ["target_value", "control_mean", "control_sd", "p_permutation", "effect_size_z"]
    np.testing.assert_allclose(fast[cols].to_numpy(), full[cols].to_numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ctrl_fast["value"], ctrl_full["value"], rtol=1e-5, atol=1e-7)
    replayed = [d["prefix_replayed_blocks"] for d in man["extra"]["passes"]["per_dose"].values()]
    assert all(replayed)  # some block was replayed in every dose


def test_sequential_test_is_besag_clifford_on_the_same_draws(source, tmp_path, monkeypatch):
    from topocli.workflows.intervene import readouts
    from topocli.workflows.intervene.statistics import sequential_stop

    # 2 perturbations per forward (the tiny set is one batch): rounds small enough to stop in
    monkeypatch.setattr(readouts, "MAX_ROWS_CPU", 2 * 6)

    # a null-like target (mid-band units) so that the draws reach it and the test stops early
    opts = dict(dose=None, percentile_band="45-55", controls="random")
    full, ctrl_full, man_full = _run(source, tmp_path / "a", sequential_h=0, **opts)
    h = 2
    seq, _, man = _run(source, tmp_path / "b", sequential_h=h, **opts)
    passes = man["extra"]["passes"]
    assert (
        passes["perturbations_evaluated"] < man_full["extra"]["passes"]["perturbations_evaluated"]
    )
    # the oracle: the full run's draws, in draw order, read with the stopping rule
    for r in seq.itertuples():
        sub = full[
            (full["dose"] == r.dose)
            & (full["readout"] == r.readout)
            & (full["statistic"] == r.statistic)
            & (full["control"] == r.control)
        ]
        assert len(sub) == 1
        t = float(sub["target_value"].iloc[0])
        assert r.target_value == pytest.approx(t, rel=1e-9)
        draws = _control_draws(tmp_path / "a", r, man_full)
        assert r.p_permutation == pytest.approx(_oracle_sequential(t, draws, h))
        assert r.p_method.startswith("sequential")
        used = passes["per_dose"][f"{r.dose:g}"]["draws_used"][r.control]
        assert sequential_stop(t, draws[:used], h) is not None or used == len(draws)


def _control_draws(folder, row, manifest):
    """The per-draw statistic of one stats row, recomputed from the saved control read-outs."""
    controls = pd.read_csv(folder / "controls.csv")
    sub = controls[(controls["dose"] == row.dose) & (controls["control"] == row.control)]
    name = {"fidelity": "fidelity_cosine", "probe": "probe_accuracy"}[row.readout]
    target = manifest["extra"]["target_conditions"]
    others = manifest["extra"]["other_conditions"]
    piv = sub[sub["readout"] == name].pivot(index="draw", columns="condition", values="change")
    sign = -1.0  # effects are decreases of cosine / accuracy
    if row.readout == "probe" and row.statistic == "target_bias":
        share = sub[
            sub["readout"].isin([f"probe_predicted:{c}" for c in target])
            & (sub["condition"] == "all")
        ]
        return (-share.groupby("draw")["change"].sum()).to_numpy()
    on_target = sign * piv[target].mean(axis=1)
    on_other = sign * piv[others].mean(axis=1)
    vals = on_target if row.statistic == "target_effect" else on_target - on_other
    return vals.sort_index().to_numpy()


def test_identical_draws_run_once(source, tmp_path):
    # the tiny sheet has few distance-matched sites: draws repeat, and each repeat is free
    stats, controls, man = _run(
        source, tmp_path / "a", controls="distance-matched", sequential_h=0, dose="5"
    )
    per = man["extra"]["passes"]["per_dose"]["5"]
    assert per["duplicate_draws_reused"] > 0
    assert per["perturbations_evaluated"] + per["duplicate_draws_reused"] == 1 + 30
    # a reused draw has exactly its twin's read-outs
    sub = controls[controls["readout"] == "fidelity_cosine"]
    assert sub.groupby("draw")["value"].first().nunique() <= per["perturbations_evaluated"]


def test_percentile_band_end_to_end_and_bad_input(source, tmp_path):
    stats, _, man = _run(source, tmp_path / "a", dose=None, percentile_band="0-10", n_controls=5)
    targets = pd.read_csv(tmp_path / "a" / "targets.csv")
    t = pd.read_csv(source / "units.csv")["t"].to_numpy()
    assert set(targets["unit"]) == set(band_units(t, 0, 10).tolist())
    assert set(targets["unit"]) == set(np.argsort(t)[: int(np.ceil(0.1 * t.size))].tolist())
    assert man["parameters"]["percentile_band"] == [0.0, 10.0]
    for bad in ("10-5", "x", "0-101"):
        with pytest.raises(TopoInputError, match="--percentile-band"):
            _run(source, tmp_path / "b", dose=None, percentile_band=bad)
    with pytest.raises(TopoInputError, match="without --dose"):
        _run(source, tmp_path / "c", percentile_band="0-1")


# ---------------------------------------------------------------------- generation
@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_greedy_continuation_equals_transformers_generate(tiny_model_dir, stimulus_dirs, family):
    from topocli.workflows.intervene.readouts import continuation_losses, greedy_continuation

    model = _model(tiny_model_dir(family))
    model.eval()
    batch = _batch(model, stimulus_dirs["text"], n=4)
    with torch.no_grad():
        tokens = greedy_continuation(model, batch, 2, 5)
        losses = continuation_losses(model, batch, 1, tokens[:4])
    ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
    for i in range(4):
        real = ids[i, mask[i].bool()][None]
        with torch.no_grad():
            want = model.backbone.generate(
                real,
                attention_mask=torch.ones_like(real),
                max_new_tokens=5,
                do_sample=False,
                pad_token_id=0,
            )[0, real.shape[1] :]
            logits = model.backbone(torch.cat([real, want[None]], 1)).logits[0]
        assert torch.equal(tokens[i], want) and torch.equal(tokens[4 + i], want)
        ce = torch.nn.functional.cross_entropy(logits[real.shape[1] - 1 : -1], want)
        assert losses[i] == pytest.approx(float(ce), rel=1e-4)


def test_generation_readout_under_lesion(tiny_model_dir, stimulus_dirs, tmp_path):
    from test_intervene import _write_source

    path = tiny_model_dir("gpt2")
    model = _model(path)
    n = model.sheet.n_units
    t = np.linspace(-1, 1, n)
    src = _write_source(tmp_path / "loc", model, stimulus_dirs["text"], t, {1: [1, 2]}, str(path))
    stats, _, man = _run(
        src,
        tmp_path / "iv",
        dose="20",
        readout="generation,lm-loss",
        n_controls=3,
        generation_tokens=4,
    )
    effects = pd.read_csv(tmp_path / "iv" / "effects.csv")
    base = effects[effects["intervention"] == "unperturbed"].set_index(["condition", "readout"])
    assert base.loc[("all", "generation_agreement"), "value"] == 1.0
    target = effects[effects["intervention"] == "target"].set_index(["condition", "readout"])
    # a fifth of the units ablated: the continuations change and their loss rises
    assert target.loc[("all", "generation_agreement"), "value"] < 1.0
    assert target.loc[("all", "continuation_loss"), "change"] > 0
    gen = stats[(stats["readout"] == "generation") & (stats["statistic"] == "target_effect")]
    assert len(gen) and (gen["target_value"] > 0).all()


def test_generation_refused_on_an_encoder(source, tmp_path):
    with pytest.raises(TopoInputError, match="--readout generation needs a causal"):
        _run(source, tmp_path / "a", readout="generation")

