"""Finding a backbone's blocks: each recorded block is one area of the sheet.

Blocks are found generically: every ``nn.ModuleList`` whose children are transformer blocks
(same class, each with a normalisation layer and an attention module) is one *stream*
(``text``, ``vision`` or ``audio``, from its module path and the model type).

A model without transformer blocks is searched for CNN *stages* (stream ``vision``, layout
``nchw``): the ``layer1`` .. ``layerN`` of a torchvision / timm ResNet, each stage of a timm
EfficientNet's ``blocks``, the ``encoder.stages`` of a transformers ResNet / ConvNeXt. A stage's
units are its output channels, measured by one small recorded forward pass.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from topocli.errors import TopoInputError


@dataclass
class Block:
    """A recorded block: its module path, stream, width (units) and output layout.

    ``layout`` is ``"tokens"`` (``[..., tokens, units]``) or ``"nchw"`` (a CNN stage: units are
    the channels of ``[batch, channels, height, width]``).
    """

    name: str
    module: nn.Module
    stream: str
    n_units: int
    layout: str = "tokens"


def _block_width(block: nn.Module) -> int | None:
    """Units of a block's output: the width of its last normalisation outside attention.

    Norms inside attention (Qwen3 / Gemma 3 QK-norm) are head_dim wide, not the residual
    stream; a hierarchical stage (Swin, CLAP's HTSAT) ends in a patch merging whose output
    width is its last projection's. :meth:`TopoModel.record` checks the widths it records.
    """
    downsample = getattr(block, "downsample", None)
    if isinstance(downsample, nn.Module):
        projections = [m for m in downsample.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if projections:
            last = projections[-1]
            return int(last.out_features if isinstance(last, nn.Linear) else last.out_channels)
    width = None
    for path, mod in block.named_modules():
        if "norm" not in type(mod).__name__.lower() or _inside_attention(path):
            continue
        weight = getattr(mod, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 1:
            width = int(weight.shape[0])
    return width


def _inside_attention(path: str) -> bool:
    parts = path.lower().split(".")
    return any(p.endswith(("attn", "attention")) or p in {"q_norm", "k_norm"} for p in parts)


# the model's main input says its modality when the module path does not
_STREAM_OF_INPUT = {"pixel_values": "vision", "input_values": "audio", "input_features": "audio"}


def _stream_of(path: str, main_input: str) -> str:
    p = path.lower()
    # BLIP-2's Q-Former reads the image features: it belongs to the vision side
    if any(k in p for k in ("vision", "visual", "image", "qformer")):
        return "vision"
    if any(k in p for k in ("audio", "speech", "acoustic")):
        return "audio"
    if any(k in p for k in ("text", "language_model")):
        return "text"
    return _STREAM_OF_INPUT.get(main_input, "text")


def discover_blocks(model: nn.Module) -> list[Block]:
    """Find the block stacks of any transformer: ModuleLists of same-class blocks with a norm.

    Nested lists inside an already-found block (e.g. experts) are skipped; encoder-decoder
    models should be passed their encoder.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", "") or ""
    main_input = getattr(model, "main_input_name", "input_ids")
    found: list[Block] = []
    claimed: list[str] = []
    for path, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if any(path.startswith(c + ".") for c in claimed):
            continue
        kinds = {type(child) for child in mod}
        if len(kinds) != 1:
            continue
        widths = [_block_width(child) for child in mod]
        if any(w is None for w in widths):
            continue
        # a transformer block attends; conv front ends and MLP stacks are not areas
        if not any(
            "attention" in type(m).__name__.lower() or "attn" in type(m).__name__.lower()
            for m in mod[0].modules()
        ):
            continue
        stream = _stream_of(path, main_input)
        for i, child in enumerate(mod):
            found.append(Block(f"{path}.{i}", child, stream, int(widths[i])))
        claimed.append(path)
    if not found:
        found = discover_cnn_stages(model)
    if not found:
        raise TopoInputError(
            f"found no transformer block stacks and no CNN stages in this {model_type} model"
        )
    return found


_STAGE_LISTS = ("stages", "blocks", "layers")
_LAYER_NAME = re.compile(r"layer(\d+)$")


def _has_conv(mod: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in mod.modules())


def _cnn_head(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The head's 1 x 1 convolution after the last stage (timm EfficientNet / MobileNet:
    ``conv_head``, recorded after its norm + activation ``bn2`` when there is one): the
    features the classifier pools, and the widest layer of such a network."""
    modules = dict(model.named_modules())
    for path in modules:
        if path == "conv_head" or path.endswith(".conv_head"):
            prefix = path[: -len("conv_head")]
            norm = modules.get(f"{prefix}bn2")
            return (f"{prefix}bn2", norm) if norm is not None else (path, modules[path])
    return None


def discover_cnn_stages(model: nn.Module) -> list[Block]:
    """CNN stages as areas: ``layer1..N`` siblings, or a ``stages`` / ``blocks`` / ``layers``
    list whose every child holds a convolution. Widths come from a recorded forward pass."""
    candidates: list[tuple[str, nn.Module]] = []
    claimed: list[str] = []

    def free(path: str) -> bool:
        return not any(path == c or path.startswith(c + ".") for c in claimed)

    for path, mod in model.named_modules():
        if not free(path):
            continue
        # torchvision / timm ResNet: sibling stages named layer1, layer2, ...
        layers = sorted(
            (int(m.group(1)), name, child)
            for name, child in mod.named_children()
            if (m := _LAYER_NAME.match(name)) and _has_conv(child)
        )
        if len(layers) >= 2:
            prefix = f"{path}." if path else ""
            for _, name, child in layers:
                candidates.append((prefix + name, child))
                claimed.append(prefix + name)
            continue
        leaf = path.rsplit(".", 1)[-1]
        if (
            isinstance(mod, (nn.ModuleList, nn.Sequential))
            and leaf in _STAGE_LISTS
            and len(mod) >= 2
            and all(_has_conv(child) for child in mod)
        ):
            for i, child in enumerate(mod):
                candidates.append((f"{path}.{i}", child))
            claimed.append(path)
    if not candidates:
        return []
    head = _cnn_head(model)
    if head is not None and free(head[0]):
        candidates.append(head)
    widths = _probe_channels(model, [m for _, m in candidates])
    return [
        Block(name, mod, "vision", int(w), "nchw")
        for (name, mod), w in zip(candidates, widths)
        if w
    ]


def _last_out_channels(mod: nn.Module) -> int | None:
    width = None
    for m in mod.modules():
        if isinstance(m, nn.Conv2d):
            width = m.out_channels
    return width


def _probe_channels(model: nn.Module, modules: list[nn.Module], size: int = 64) -> list[int]:
    """Output channels of each module from one forward pass of a blank image (eval mode),
    or the last convolution's output channels where the pass fails."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    param = next(model.parameters(), None)
    fallback = [_last_out_channels(m) or 0 for m in modules]
    if first is None or param is None:
        return fallback
    seen: dict[int, int] = {}

    def make(k: int):
        def hook(_m, _i, out):
            out = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                seen[k] = int(out.shape[1])

        return hook

    handles = [m.register_forward_hook(make(k)) for k, m in enumerate(modules)]
    modes = {m: m.training for m in model.modules()}
    x = torch.zeros(1, first.in_channels, size, size, dtype=param.dtype, device=param.device)
    try:
        model.eval()
        with torch.no_grad():
            try:
                model(pixel_values=x)
            except TypeError:
                model(x)
    except Exception:  # noqa: BLE001 - an odd forward: fall back to the convolutions
        pass
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return [seen.get(k, fallback[k]) for k in range(len(modules))]


def default_stages(streams: Sequence[str], dual_encoder: bool) -> list[list[str]]:
    """Encoders side by side on top, the language stream below (Topo-Omni); CLIP: one stage."""
    if dual_encoder or len(streams) == 1:
        return [list(streams)]
    top = [s for s in streams if s != "text"]
    return [top, ["text"]] if "text" in streams else [top]


def select_blocks(blocks: list[Block], areas: Sequence[str] | None) -> list[Block]:
    """Keep the blocks named by ``areas``: full names, ``all``, or ``STREAM:i,j`` indices."""
    if not areas or list(areas) == ["all"]:
        return blocks
    by_name = {b.name: b for b in blocks}
    chosen: list[Block] = []
    for spec in areas:
        if spec in by_name:
            chosen.append(by_name[spec])
            continue
        stream, _, idx = spec.partition(":")
        members = [b for b in blocks if b.stream == stream]
        if not members:
            raise TopoInputError(
                f"unknown area {spec!r}; blocks are {', '.join(by_name)} "
                "(or use STREAM:i,j with streams "
                + ", ".join(sorted({b.stream for b in blocks}))
                + ")"
            )
        try:
            picks = [members[int(i)] for i in idx.split(",")] if idx else members
        except (ValueError, IndexError) as exc:
            raise TopoInputError(f"bad block index in {spec!r} ({len(members)} blocks)") from exc
        chosen.extend(picks)
    unique: dict[str, Block] = {}
    for b in chosen:
        unique.setdefault(b.name, b)
    return list(unique.values())
