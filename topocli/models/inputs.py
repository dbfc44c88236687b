"""Model inputs of one batch of stimuli, and the model's final representation of it.

The model's own tokenizer, image processor or feature extractor prepares every batch; pooling
masks mark the tokens / frames that hold a stimulus (not padding). Batches of text are ordered by
length to cut padding; under ``torchrun`` each rank takes every ``world_size``-th stimulus.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from topocli.errors import TopoInputError
from topocli.models.topo_model import Segments, TopoModel
from topocli.stimuli.stimulus_set import Stimulus, StimulusSet, load_audio, load_image

MAX_TEXT_TOKENS = 512


@dataclass
class Batch:
    """One prepared batch: model inputs, pooling masks and the stimuli's row indices."""

    indices: np.ndarray
    inputs: dict
    masks: list
    modality: str


def prepare_batch(model: TopoModel, stimuli: list[Stimulus], indices: np.ndarray) -> Batch:
    """Run the model's own tokenizer / image processor / feature extractor on a batch."""
    modality = stimuli[0].modality
    proc = model.processors.get(modality)
    if proc is None:
        have = ", ".join(sorted(model.processors)) or "none"
        where = stimuli[0].path.parent if stimuli[0].path is not None else None
        raise TopoInputError(f"{modality} stimuli, but this model takes {have}", where)
    device = model.device
    masks: list[torch.Tensor] = []
    if modality == "text":
        limit = min(
            int(getattr(proc, "model_max_length", MAX_TEXT_TOKENS) or 0) or MAX_TEXT_TOKENS,
            MAX_TEXT_TOKENS,
        )
        enc = proc(
            [s.text for s in stimuli],
            padding=True,
            truncation=True,
            max_length=limit,
            return_tensors="pt",
        )
        inputs = {
            k: v.to(device)
            for k, v in enc.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        masks.append(enc["attention_mask"].bool().to(device))
    elif modality == "image":
        images = [load_image(s.path) for s in stimuli]
        enc = proc(images=images, return_tensors="pt")
        pixels = enc.get("pixel_values")
        if isinstance(pixels, torch.Tensor) and pixels.ndim == 5 and pixels.shape[0] != len(images):
            # Idefics3 / SmolVLM read a flat list as the images of one sample: one per sample
            enc = proc(images=[[im] for im in images], return_tensors="pt")
        inputs = _model_inputs(enc, IMAGE_INPUTS, model)
        masks.extend(_image_segments(inputs))
    else:
        rate = int(getattr(proc, "sampling_rate", 16000))
        waves = [load_audio(s.path, rate) for s in stimuli]
        # Whisper-style extractors need their fixed window; others pad to the longest clip
        padding = "max_length" if hasattr(proc, "nb_max_frames") else True
        enc = proc(
            waves,
            sampling_rate=rate,
            return_tensors="pt",
            padding=padding,
            return_attention_mask=True,
        )
        inputs = _model_inputs(enc, AUDIO_INPUTS, model)
        if "attention_mask" in enc and "input_values" in enc:
            sample_mask = enc["attention_mask"].to(device)
            inputs["attention_mask"] = sample_mask
            masks.append(_frame_mask(model, sample_mask))
        elif "attention_mask" in enc and "input_features" in enc and _takes_feature_mask(model):
            # the Omni thinker's audio tower packs the clips' frames with no batch axis: it
            # takes the mel mask, and its blocks see ceil(L / 2) frames per clip of L mel frames
            mel_mask = enc["attention_mask"].to(device)
            inputs["feature_attention_mask"] = mel_mask
            frames = (mel_mask.long().sum(-1) - 1) // 2 + 1
            masks.append(Segments(frames, "tokens"))
            # its output is pooled by 2 once more after the blocks: the final representation
            masks.append(Segments((frames - 2) // 2 + 1, "tokens"))
        elif "attention_mask" in enc and "input_features" in enc:
            # Whisper: the 30 s window is padded; pool only the encoder frames of the clip
            masks.append(_whisper_frame_mask(model, enc["attention_mask"].to(device)))
    return Batch(indices, inputs, masks, modality)


# what a processor returns that the model needs beside the pixels / samples: the patch grid of
# packed vision tokens (Qwen2-VL), the crop mask of split images (Idefics3), CLAP's fusion flag
IMAGE_INPUTS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "image_sizes")
AUDIO_INPUTS = ("input_values", "input_features", "is_longer", "feature_attention_mask")


def _model_inputs(enc, keys: tuple[str, ...], model: TopoModel) -> dict:
    """The processor outputs named in ``keys``, on the model's device; float ones in its dtype."""
    out = {}
    for key in keys:
        value = enc.get(key) if hasattr(enc, "get") else None
        if not isinstance(value, torch.Tensor):
            continue
        dtype = _float_dtype(model) if value.is_floating_point() else None
        out[key] = value.to(model.device, dtype)
    return out


def _takes_feature_mask(model: TopoModel) -> bool:
    import inspect

    fn = getattr(model.backbone, "get_audio_features", None)
    return fn is not None and "feature_attention_mask" in inspect.signature(fn).parameters


def _image_segments(inputs: dict) -> list[Segments]:
    """How the vision tower's rows map onto the stimuli, where not one row per image.

    Packed patches (``image_grid_thw``: t x h x w patches per image, no batch axis) and split
    images (``[B, crops, C, H, W]``: Idefics3 / SmolVLM keep the crops that are not all zero
    padding, as its forward does) are pooled per stimulus, not per patch sequence or crop.
    """
    out = []
    grid = inputs.get("image_grid_thw")
    if grid is not None:
        out.append(Segments(grid.prod(-1), "tokens"))
    pixels = inputs.get("pixel_values")
    if pixels is not None and pixels.ndim == 5:
        real = (pixels != 0).flatten(2).any(-1)
        counts = real.sum(1)
        if int(counts.sum()) == 0:  # no real crop at all: the model keeps the first
            counts[0] = 1
        out.append(Segments(counts, "rows"))
    return out


def _float_dtype(model: TopoModel) -> torch.dtype:
    return next(model.backbone.parameters()).dtype


def _frame_mask(model: TopoModel, sample_mask: torch.Tensor) -> torch.Tensor:
    """Valid encoder frames from valid input samples (wav2vec2-style conv front end)."""
    fn = getattr(model.backbone, "_get_feat_extract_output_lengths", None)
    if fn is None:
        return sample_mask.bool()
    lengths = fn(sample_mask.sum(-1)).long()
    n_frames = int(fn(torch.tensor(sample_mask.shape[1])).item())
    return torch.arange(n_frames, device=sample_mask.device)[None, :] < lengths[:, None]


def _whisper_frame_mask(model: TopoModel, mel_mask: torch.Tensor) -> torch.Tensor:
    """Encoder frames that hold the clip: each is 2 mel frames (conv2 has stride 2), 20 ms.

    ``mel_mask`` marks the 10 ms mel frames of the clip (the feature extractor's
    ``attention_mask``); frame ``j`` of the encoder sees mel frames ``2j-1 .. 2j+1``, so a clip
    of ``L`` mel frames fills ``ceil(L / 2)`` encoder frames of the ``n_mel / 2`` in the window.
    """
    config = getattr(model.backbone, "config", None)
    n_frames = int(getattr(config, "max_source_positions", 0) or (mel_mask.shape[1] + 1) // 2)
    lengths = (mel_mask.long().sum(-1) + 1) // 2
    return torch.arange(n_frames, device=mel_mask.device)[None, :] < lengths[:, None]


def final_representation(output, masks: list) -> torch.Tensor:
    """One vector per stimulus from the model's final layer (embedding / last token).

    Packed outputs (``[tokens, D]``, no batch axis) and split images (several rows per
    stimulus) are pooled per stimulus by the batch's :class:`Segments`.
    """
    rep = _final_rows(output, [m for m in masks if not isinstance(m, Segments)], masks)
    crops = next(
        (m for m in masks if isinstance(m, Segments) and m.kind == "rows" and m.total == len(rep)),
        None,
    )
    return crops.mean(rep) if crops is not None else rep


def _packed_mean(hidden: torch.Tensor, masks: list) -> torch.Tensor | None:
    packed = next(
        (
            m
            for m in masks
            if isinstance(m, Segments) and m.kind == "tokens" and m.total == hidden.shape[0]
        ),
        None,
    )
    return packed.mean(hidden.float()) if packed is not None else None


def _final_rows(output, masks: list, segments: list) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output.float()
    for key in ("text_embeds", "image_embeds", "pooler_output"):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor) and value.ndim == 2 and key != "pooler_output":
            return value.float()
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None and getattr(output, "hidden_states", None) is not None:
        hidden = output.hidden_states[-1]
        mask = next((m for m in masks if m.shape == hidden.shape[:2]), None)
        if mask is None:
            return hidden[:, -1].float()
        last = mask.long().cumsum(1).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    if hidden is None:
        pooled = getattr(output, "pooler_output", None)
        if pooled is not None:
            return pooled.float()
        logits = getattr(output, "logits", None)
        if isinstance(logits, torch.Tensor) and logits.ndim == 3:
            # a causal LM without hidden states: its next-token logits at the last real token
            mask = next((m for m in masks if m.shape == logits.shape[:2]), None)
            if mask is None:
                return logits[:, -1].float()
            last = mask.long().cumsum(1).argmax(1)
            return logits[torch.arange(logits.shape[0], device=logits.device), last].float()
        raise TopoInputError("cannot find a final representation in this model's output")
    if hidden.ndim == 4:  # a CNN's feature map [B, C, H, W]: the mean over space
        return hidden.float().mean((2, 3))
    if hidden.ndim == 2:  # packed tokens of every stimulus (Qwen2-VL patches, Omni audio)
        pooled = _packed_mean(hidden, segments)
        if pooled is None:
            raise TopoInputError(
                "cannot tell which rows of this model's packed output belong to which stimulus"
            )
        return pooled
    mask = next((m for m in masks if m.shape == hidden.shape[:2]), None)
    if mask is None:
        return hidden.float().mean(1)
    m = mask.float().unsqueeze(-1)
    return (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1.0)


def rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def batch_order(stim_set: StimulusSet, batch_size: int, shard: bool = True) -> Iterator[np.ndarray]:
    """Row indices of this rank's stimuli, in batches (text sorted by length to cut padding).

    With ``shard=False`` every process takes every stimulus (an evaluation on one rank).
    """
    if batch_size < 1:
        raise TopoInputError(f"--batch-size must be >= 1, got {batch_size}")
    rank, world = rank_world() if shard else (0, 1)
    rows = np.arange(len(stim_set))[rank::world]
    if stim_set.modality == "text":
        lengths = np.array([len(stim_set.stimuli[i].text or "") for i in rows])
        rows = rows[np.argsort(lengths, kind="stable")]
    for start in range(0, rows.size, batch_size):
        yield rows[start : start + batch_size]


def autocast_for(model: TopoModel):
    dtype = _float_dtype(model)
    if model.device.type == "cuda" and dtype != torch.float32:
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()
