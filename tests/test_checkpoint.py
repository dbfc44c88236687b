"""Checkpoint folders: exact round trip, no pickle, wrong base weights refused."""

import json

import numpy as np
import pytest
import torch

from topocli.errors import TopoInputError
from topocli.models.checkpoint import load_checkpoint, save_checkpoint
from topocli.models.registry import resolve_model
from topocli.models.topo_model import build_topo_model


def test_round_trip_adaptors_sheet_and_outputs(tiny_model_dir, tmp_path):
    model = build_topo_model(
        tiny_model_dir("bert"),
        layout="tiled",
        mm_per_unit=0.5,
        permutation_seed=7,
        adaptor_noise=0.05,
        seed=3,
    )
    ckpt = save_checkpoint(model, tmp_path / "ckpt", training={"steps": 0})
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "adaptors.safetensors",
        "sheet.safetensors",
        "topo.json",
    ]
    meta = json.loads((ckpt / "topo.json").read_text())
    assert meta["weights_sha256"] == model.source["weights_sha256"]
    assert meta["sheet"]["layout"] == "tiled" and meta["sheet"]["mm_per_unit"] == 0.5
    loaded = load_checkpoint(ckpt)
    assert loaded.sheet == model.sheet
    for a, b in zip(model.adaptors, loaded.adaptors):
        assert torch.equal(a.weight, b.weight)
    ids = torch.tensor([[101, 2000, 3000, 102]])
    with torch.no_grad():
        out_a, acts_a = model.record({"input_ids": ids}, "text")
        out_b, acts_b = loaded.record({"input_ids": ids}, "text")
    assert torch.equal(acts_a, acts_b)
    assert torch.equal(out_a.last_hidden_state, out_b.last_hidden_state)


def test_resolve_model_accepts_checkpoint_and_model_folders(tiny_model_dir, tmp_path):
    model = build_topo_model(tiny_model_dir("gpt2"))
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    assert resolve_model(str(ckpt)).source["checkpoint"] == str(ckpt)
    direct = resolve_model(str(tiny_model_dir("gpt2")))
    assert direct.mode == "direct"


def test_other_base_weights_refused(tiny_model_dir, tmp_path):
    import shutil

    import tiny_models

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir("bert"), base)
    ckpt = save_checkpoint(build_topo_model(base), tmp_path / "ckpt")
    tiny_models.build("bert", base, seed=99)  # same architecture, different weights
    with pytest.raises(TopoInputError, match="weights sha256"):
        load_checkpoint(ckpt)


def test_sheet_that_does_not_fit_is_refused(tiny_model_dir, tmp_path):
    from topocli.sheet import AreaSpec, Sheet

    ckpt = save_checkpoint(build_topo_model(tiny_model_dir("bert")), tmp_path / "ckpt")
    Sheet.build([AreaSpec("encoder.layer.0", 16)]).save(ckpt / "sheet.safetensors")
    with pytest.raises(TopoInputError, match="sheet.safetensors.*does not fit"):
        load_checkpoint(ckpt)


def test_no_pickle_in_checkpoint(tiny_model_dir, tmp_path):
    ckpt = save_checkpoint(build_topo_model(tiny_model_dir("bert")), tmp_path / "ckpt")
    for f in ckpt.iterdir():
        assert b"\x80\x04\x95" not in f.read_bytes()[:64]  # pickle protocol 4 header


def test_unknown_hub_id_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(TopoInputError, match="huggingface-cli download"):
        resolve_model("someone/not-cached-model")


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(TopoInputError, match="not a model folder"):
        resolve_model(str(tmp_path / "x"))


def test_permuted_positions_survive_round_trip(tiny_model_dir, tmp_path):
    model = build_topo_model(tiny_model_dir("bert"), permutation_seed=1)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "c"))
    np.testing.assert_array_equal(loaded.sheet.row, model.sheet.row)
