"""Edits applied on their columns only (``X + (Z'_S - Z_S) W^+_S``) equal the dense path.

The dense path (``Z = X W``, edit, ``X_hat = Z' W^+``) is the reference: every test runs the same
perturbations through both, on tiny float64 models (adaptor with a W far from identity, identity
adaptors, direct mode), and checks outputs, pooled records and intervene's statistics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from topocli.models import topo_model
from topocli.models.topo_model import ColumnEdit
from topocli.workflows.intervene.perturbations import PerturbationSet, edited_columns, make_edit

KINDS = {
    "adaptor": dict(mode="adaptor", adaptor_noise=0.1),
    "identity": dict(mode="adaptor", adaptor_noise=0.0),
    "direct": dict(mode="direct"),
}
MODES = ("ablate", "mean", "steer", "stimulate")


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    from topocli.models.registry import resolve_model

    path = str(tiny_model_dir("bert"))
    out = {}
    for name, kw in KINDS.items():
        model = resolve_model(path, dtype=torch.float64, **kw)
        model.eval()
        out[name] = model
    return out


@pytest.fixture(scope="module")
def batch(models, stimulus_dirs):
    from topocli.activations.extraction import prepare_batch
    from topocli.stimuli.stimulus_set import load_stimulus_set

    stim = load_stimulus_set(stimulus_dirs["text"])
    rows = np.arange(min(6, len(stim)))
    return prepare_batch(models["adaptor"], [stim.stimuli[i] for i in rows], rows)


def _perturbations(model, mode: str, dense: bool, seed: int = 0):
    """3 stacked perturbations in areas 0 and 1 (unequal counts; one leaves area 0 alone)."""
    rng = np.random.default_rng(seed)
    sheet = model.sheet
    a0, a1 = sheet.area_slice(0), sheet.area_slice(1)
    if dense:  # every unit of area 1 (a steer with a dense vector, a wide stimulation)
        units = [np.arange(a1.start, a1.stop)] * 3
    else:
        units = [
            np.concatenate(
                [
                    rng.choice(np.arange(a0.start, a0.stop), 5, replace=False),
                    rng.choice(np.arange(a1.start, a1.stop), 2, replace=False),
                ]
            ),
            rng.choice(np.arange(a1.start, a1.stop), 7, replace=False),
            np.concatenate(
                [
                    rng.choice(np.arange(a0.start, a0.stop), 1, replace=False),
                    rng.choice(np.arange(a1.start, a1.stop), 4, replace=False),
                ]
            ),
        ]
    replace = mode in ("ablate", "mean")
    values = [
        np.zeros(u.size) if mode == "ablate" else rng.normal(scale=2.0, size=u.size) for u in units
    ]
    return PerturbationSet(model, units, values, replace)


def _forward(model, batch, pset, record: bool, column_edits: bool, times: int = 3):
    from topocli.workflows.intervene.readouts import _repeat

    inputs = {k: _repeat(v, times) for k, v in batch.inputs.items()}
    masks = [_repeat(m, times) for m in batch.masks]
    for hp in model.hook_points.values():
        hp.column_edits = column_edits
    try:
        with torch.no_grad(), pset.applied():
            if record:
                out, pooled = model.record(inputs, "text", "mean", masks)
            else:
                out, pooled = model.forward(inputs, "text"), None
    finally:
        for hp in model.hook_points.values():
            hp.column_edits = True
    return out.last_hidden_state, pooled


@pytest.fixture
def column_calls(monkeypatch):
    """Counts the hook's column-path calls (to know which path ran).

    Both paths get W^+ in float64 here (the model computes it in float32, which alone moves the
    dense path's ``X W W^+`` from ``X`` by ~1e-7): the test checks the algebra to 1e-10.
    """
    exact = lambda self: torch.linalg.inv(self.weight.double())  # noqa: E731
    monkeypatch.setattr(topo_model.Adaptor, "pinv", exact)
    calls = []
    original = topo_model._edited_columns

    def spy(*args, **kwargs):
        calls.append(args[2] is None)
        return original(*args, **kwargs)

    monkeypatch.setattr(topo_model, "_edited_columns", spy)
    return calls


@pytest.mark.parametrize("record", [False, True], ids=["forward", "record"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", list(KINDS))
def test_column_path_equals_the_dense_path(models, batch, kind, mode, record, column_calls):
    model = models[kind]
    pset = _perturbations(model, mode, dense=False)
    dense, dense_pooled = _forward(model, batch, pset, record, column_edits=False)
    assert not column_calls
    cols, cols_pooled = _forward(model, batch, pset, record, column_edits=True)
    assert len(column_calls) == 2  # both edited areas took the column path
    assert all(column_calls) == (kind != "adaptor")  # W = I: no matmul at all
    if kind == "adaptor":
        torch.testing.assert_close(cols, dense, rtol=1e-10, atol=1e-12)
    else:  # a gather and a scatter: the same bits as the dense torch.where
        assert torch.equal(cols, dense)
    if record:  # records are float32 (pooling casts), and pool(X) W is projected in float32
        torch.testing.assert_close(cols_pooled, dense_pooled, rtol=1e-5, atol=1e-6)
    # the perturbations did change the output (the comparison is not vacuous)
    base = model.forward(batch.inputs, "text").last_hidden_state
    assert not torch.allclose(cols[: base.shape[0]], base, atol=1e-6)


@pytest.mark.parametrize("mode", ["steer", "stimulate"])
def test_an_edit_on_every_unit_keeps_the_dense_path(models, batch, mode, column_calls):
    model = models["adaptor"]
    pset = _perturbations(model, mode, dense=True)
    a, _ = _forward(model, batch, pset, True, column_edits=True)
    assert not column_calls  # s = H > H / 2: the two full products are cheaper
    b, _ = _forward(model, batch, pset, True, column_edits=False)
    assert torch.equal(a, b)


def test_the_column_path_on_a_channels_last_view_equals_the_dense_edit(monkeypatch):
    """CNN stages hand the hook a permuted (non-contiguous) [B, H, W, C] view."""
    monkeypatch.setattr(topo_model.Adaptor, "pinv", lambda self: torch.linalg.inv(self.weight))
    torch.manual_seed(0)
    channels, groups = 12, 2
    adaptor = topo_model.Adaptor(channels, noise=0.2, generator=torch.Generator().manual_seed(1))
    adaptor.weight.data = adaptor.weight.data.double()
    x = torch.randn(2 * groups, channels, 3, 5, dtype=torch.float64).permute(0, 2, 3, 1)
    mask = torch.zeros(groups, channels, dtype=torch.bool)
    mask[0, [1, 4]] = True
    mask[1, [7]] = True
    values = torch.randn(groups, channels, dtype=torch.float64)
    for replace in (True, False):
        edit = make_edit(mask, values, replace)
        with torch.no_grad():
            x_hat, _ = topo_model._edited_columns(x, edit, adaptor)
            want = edit(x @ adaptor.weight) @ adaptor.pinv()
            torch.testing.assert_close(x_hat, want, rtol=1e-10, atol=1e-12)
            x_id, _ = topo_model._edited_columns(x, edit, None)
            assert torch.equal(x_id, edit(x))


def test_edited_columns_are_distinct_edited_first_and_padded_with_untouched_units():
    rng = np.random.default_rng(4)
    mask = torch.from_numpy(rng.random((5, 16)) < 0.25)
    mask[3] = False  # a perturbation that leaves the area alone
    cols = edited_columns(mask).numpy()
    counts = mask.sum(1).numpy()
    assert cols.shape == (5, max(1, counts.max()))
    for j, row in enumerate(cols):
        assert len(set(row.tolist())) == row.size  # distinct: the scatter is well defined
        assert row[: counts[j]].tolist() == np.flatnonzero(mask[j].numpy()).tolist()
        assert not mask[j, row[counts[j] :]].any()  # padding is never edited


def test_column_form_of_an_edit_equals_the_dense_edit():
    rng = np.random.default_rng(4)
    mask = torch.from_numpy(rng.random((3, 16)) < 0.2)
    values = torch.from_numpy(rng.normal(size=(3, 16)).astype(np.float32))
    z = torch.from_numpy(rng.normal(size=(3 * 2, 5, 16)).astype(np.float32))
    for replace in (True, False):
        edit = make_edit(mask, values, replace)
        assert isinstance(edit, ColumnEdit)
        dense = edit(z)
        idx = edit.columns[:, None, None, :].expand(3, 2, 5, -1).reshape(6, 5, -1)
        got = edit.on_columns(torch.gather(z, 2, idx))
        assert torch.equal(got, torch.gather(dense, 2, idx))
        outside = ~mask.repeat_interleave(2, 0)[:, None, :].expand_as(z)
        assert torch.equal(dense[outside], z[outside])


# ---------------------------------------------------------------------- end to end
def test_intervene_statistics_are_those_of_the_dense_path(
    tiny_model_dir, stimulus_dirs, tmp_path, monkeypatch
):
    from test_intervene import _write_source
    from test_intervene_speed import _model, _run

    path = tiny_model_dir("bert")
    model = _model(path)
    t = np.linspace(-1, 1, model.sheet.n_units)
    source = _write_source(
        tmp_path / "loc", model, stimulus_dirs["text"], t, {1: [60, 61, 62]}, str(path)
    )
    calls = []
    original = topo_model._edited_columns
    with monkeypatch.context() as m:
        m.setattr(topo_model, "_edited_columns", lambda *a: calls.append(1) or original(*a))
        cols, ctrl_cols, _ = _run(source, tmp_path / "a", sequential_h=0, n_controls=10)
    assert calls  # the column path ran
    with monkeypatch.context() as m:
        m.setattr(topo_model, "_column_edit", lambda *_a: None)  # the dense path, as before
        dense, ctrl_dense, _ = _run(source, tmp_path / "b", sequential_h=0, n_controls=10)
    assert np.array_equal(cols["p_permutation"], dense["p_permutation"])
    for col in ["target_value", "control_mean", "control_sd", "effect_size_z"]:
        np.testing.assert_allclose(cols[col], dense[col], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ctrl_cols["value"], ctrl_dense["value"], rtol=1e-5, atol=1e-7)
