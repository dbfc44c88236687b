"""Finding a backbone's blocks: each recorded block is one area of the sheet.

Blocks are found generically: every ``nn.ModuleList`` whose children are transformer blocks
(same class, each with a normalisation layer and an attention module) is one *stream*
(``text``, ``vision`` or ``audio``, from its module path and the model type).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from topocli.errors import TopoInputError


@dataclass
class Block:
    """A recorded transformer block: its module path, stream and width (units)."""

    name: str
    module: nn.Module
    stream: str
    n_units: int


def _norm_width(block: nn.Module) -> int | None:
    for mod in block.modules():
        if "norm" in type(mod).__name__.lower():
            weight = getattr(mod, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.ndim == 1:
                return int(weight.shape[0])
    return None


def _stream_of(path: str, model_type: str) -> str:
    p = path.lower()
    if any(k in p for k in ("vision", "visual", "image")):
        return "vision"
    if any(k in p for k in ("audio", "speech", "acoustic")):
        return "audio"
    if "text" in p:
        return "text"
    if model_type in {"vit", "deit", "beit", "dinov2", "swin", "convnext", "siglip_vision_model"}:
        return "vision"
    if model_type in {"wav2vec2", "hubert", "wavlm", "whisper", "data2vec-audio", "unispeech"}:
        return "audio"
    return "text"


def discover_blocks(model: nn.Module) -> list[Block]:
    """Find the block stacks of any transformer: ModuleLists of same-class blocks with a norm.

    Nested lists inside an already-found block (e.g. experts) are skipped; encoder-decoder
    models should be passed their encoder.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", "") or ""
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
        widths = [_norm_width(child) for child in mod]
        if any(w is None for w in widths):
            continue
        # a transformer block attends; conv front ends and MLP stacks are not areas
        if not any(
            "attention" in type(m).__name__.lower() or "attn" in type(m).__name__.lower()
            for m in mod[0].modules()
        ):
            continue
        stream = _stream_of(path, model_type)
        for i, child in enumerate(mod):
            found.append(Block(f"{path}.{i}", child, stream, int(widths[i])))
        claimed.append(path)
    if not found:
        raise TopoInputError(f"found no transformer block stacks in this {model_type} model")
    return found


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
