"""The shipped topographic checkpoints and the default model by modality."""

import json

import pytest

from topocli.cli.context import Context
from topocli.models import packaged, registry


def test_the_default_model_follows_the_stimuli_modality():
    assert registry.default_model("text") == "minilm"
    assert registry.default_model("image") == "efficientnet-lite0-topo"
    assert registry.default_model("audio") == "whisper-tiny-topo"
    assert registry.default_model(None) == "minilm"
    for name in registry.DEFAULT_BY_MODALITY.values():
        assert registry.is_shipped(name)
        assert not registry.is_shipped(registry.control_name(name))


class _Loaded:
    def to(self, _device):
        return self


def test_no_model_loads_the_shipped_default_of_the_modality(monkeypatch):
    seen = []

    def fake_resolve(spec, **_options):
        seen.append(spec)
        return _Loaded()

    monkeypatch.setattr(registry, "resolve_model", fake_resolve)
    for modality, expected in registry.DEFAULT_BY_MODALITY.items():
        ctx = Context()
        ctx.load_model(modality)
        assert seen[-1] == expected and ctx.model_spec == expected
    ctx = Context(model="minilm-control")  # an explicit --model always wins
    ctx.load_model("image")
    assert seen[-1] == "minilm-control"


def test_screen_of_a_photo_folder_runs_the_image_default(
    tmp_path, monkeypatch, tiny_model_dir, stimulus_dirs
):
    """`topo screen --stimuli photos/` with no --model: the image default runs, and the
    results folder names it (here a tiny ViT stands in for efficientnet-lite0-topo)."""
    from topocli.cli import main

    vit = str(tiny_model_dir("vit"))
    monkeypatch.setitem(registry.DEFAULT_BY_MODALITY, "image", vit)
    out = tmp_path / "screen"
    args = ["screen", "--stimuli", str(stimulus_dirs["image"]), "--no-builtin-known"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["model"] == vit


def _shipped_ready(name: str) -> bool:
    base = registry.SHIPPED_BASE.get(name)
    return (registry.shipped_dir(name) / "topo.json").is_file() and (
        base is None or not packaged.missing_packages(packaged.PACKAGED[base])
    )


@pytest.mark.parametrize("name", [n for n in registry.SHIPPED if n != registry.DEFAULT_MODEL])
def test_a_shipped_checkpoint_is_small_and_names_its_package(name):
    folder = registry.shipped_dir(name)
    if not (folder / "topo.json").is_file():
        pytest.fail(f"{name} is registered but not shipped in {folder}")
    meta = json.loads((folder / "topo.json").read_text())
    assert meta["base_model"] == f"package:{registry.SHIPPED_BASE[name]}"
    assert meta["mode"] == "adaptor"
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 12e6, f"{name}: {size / 1e6:.1f} MB is too big for the wheel"
    assert not (folder / "trainer_state.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in registry.SHIPPED if n != registry.DEFAULT_MODEL])
def test_a_shipped_checkpoint_and_its_control_load_offline(name):
    if not _shipped_ready(name):
        pytest.skip(f"needs {packaged.PACKAGED[registry.SHIPPED_BASE[name]].pip_line}")
    import torch

    model = registry.resolve_model(name)
    control = registry.resolve_model(registry.control_name(name))
    assert model.source["name"] == name
    assert control.source["name"] == registry.control_name(name)
    assert model.sheet.describe() == control.sheet.describe()
    trained = [a.weight.detach() for a in model.adaptors]
    identity = [a.weight.detach() for a in control.adaptors]
    assert all(torch.equal(w, torch.eye(w.shape[0])) for w in identity)
    # trained: not the identity (the spatial loss moved W)
    assert all(float((w - torch.eye(w.shape[0])).abs().max()) > 1e-2 for w in trained)


@pytest.mark.slow
def test_one_folder_of_photos_is_screened_against_the_built_image_baseline(
    tmp_path, monkeypatch, tiny_model_dir
):
    """`topo screen --stimuli animals/` (photos, no --model, no --against): the image default
    runs against the mixed image baseline (the categories-visual build, pooled); photos copied
    from that build are left out of the baseline, never on both sides."""
    import shutil

    from topocli.cli import main
    from topocli.errors import TopoInputError
    from topocli.stimuli.localizers import baseline_pool

    try:
        pool = baseline_pool("image")
    except TopoInputError as exc:
        pytest.skip(f"the image baseline cannot be built here: {exc}")
    animals = tmp_path / "animals"
    animals.mkdir()
    for src in sorted((pool / "animals").iterdir())[:6]:
        shutil.copy(src, animals / src.name)
    vit = str(tiny_model_dir("vit"))
    monkeypatch.setitem(registry.DEFAULT_BY_MODALITY, "image", vit)
    out = tmp_path / "screen"
    assert main(["screen", "--stimuli", str(animals), "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["model"] == vit
    import pandas as pd

    cats = pd.read_csv(out / "categories.csv")
    assert list(cats["category"]) == ["animals"] and set(cats["reference"]) == {"baseline"}
