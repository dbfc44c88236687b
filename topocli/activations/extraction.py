"""Streaming extraction: stimuli -> batched forward passes -> pooled sheet activations.

Activations are never held for the whole stimulus set: each batch is pooled over its
non-padding tokens / frames, optionally transformed (fMRI-like smoothing), folded into
per-(condition, split) sufficient statistics and, when asked, written to a float16 on-disk cache
keyed by a content hash of (model, sheet, stimuli bytes, pooling). A later command with the same
key reads the cache instead of running the model. Under ``torchrun`` every rank takes every
``world_size``-th stimulus and the statistics are all-reduced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from topocli.errors import TopoInputError
from topocli.models.topo_model import TopoModel, topo_cache_dir
from topocli.stats.suffstats import SufficientStats
from topocli.stimuli.stimulus_set import Stimulus, StimulusSet, load_audio, load_image

MAX_TEXT_TOKENS = 512
CACHE_SHARD_BYTES = 1 << 26
Transform = Callable[[torch.Tensor], torch.Tensor]


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
        inputs = {"pixel_values": enc["pixel_values"].to(device, _float_dtype(model))}
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
        inputs = {}
        for key in ("input_values", "input_features"):
            if key in enc:
                inputs[key] = enc[key].to(device, _float_dtype(model))
        if "attention_mask" in enc and "input_values" in enc:
            sample_mask = enc["attention_mask"].to(device)
            inputs["attention_mask"] = sample_mask
            masks.append(_frame_mask(model, sample_mask))
    return Batch(indices, inputs, masks, modality)


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


def final_representation(output, masks: list) -> torch.Tensor:
    """One vector per stimulus from the model's final layer (embedding / last token)."""
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
        raise TopoInputError("cannot find a final representation in this model's output")
    mask = next((m for m in masks if m.shape == hidden.shape[:2]), None)
    if mask is None:
        return hidden.float().mean(1)
    m = mask.float().unsqueeze(-1)
    return (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1.0)


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def batch_order(stim_set: StimulusSet, batch_size: int) -> Iterator[np.ndarray]:
    """Row indices of this rank's stimuli, in batches (text sorted by length to cut padding)."""
    if batch_size < 1:
        raise TopoInputError(f"--batch-size must be >= 1, got {batch_size}")
    rank, world = _rank_world()
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


def iter_activations(
    model: TopoModel,
    stim_set: StimulusSet,
    batch_size: int = 32,
    pooling: str = "mean",
    with_final: bool = False,
    progress=None,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]:
    """Yield ``(row indices, sheet activations [B, U] float32, final reps or None)``."""
    task = progress.add_task("extracting", total=len(stim_set)) if progress else None
    model.eval()
    with torch.no_grad():
        for rows in batch_order(stim_set, batch_size):
            batch = prepare_batch(model, [stim_set.stimuli[i] for i in rows], rows)
            with autocast_for(model):
                out, acts = model.record(batch.inputs, batch.modality, pooling, batch.masks)
            final = final_representation(out, batch.masks) if with_final else None
            yield rows, acts.float(), final
            if progress:
                progress.advance(task, len(rows))


@dataclass
class Extraction:
    """What one pass over a stimulus set produced."""

    stats: SufficientStats
    cache_key: str | None
    from_cache: bool
    final: np.ndarray | None = None


def cache_key(model: TopoModel, stim_set: StimulusSet, pooling: str) -> str:
    from topocli.models.checkpoint import model_identity

    ident = model_identity(model)
    ident.pop("name", None)
    ident.pop("checkpoint", None)
    payload = json.dumps(
        {
            "model": ident,
            "stimuli": stim_set.content_hash(),
            "pooling": pooling,
            "max_tokens": MAX_TEXT_TOKENS,
            "version": 2,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def activation_cache_dir() -> Path:
    return topo_cache_dir() / "activations"


def extract(
    model: TopoModel,
    stim_set: StimulusSet,
    batch_size: int = 32,
    pooling: str = "mean",
    transform: Transform | None = None,
    use_cache: bool = False,
    with_final: bool = False,
    progress=None,
) -> Extraction:
    """Stream a stimulus set through the model into per-(condition, split) statistics.

    Parameters
    ----------
    transform : callable, optional
        Applied to every batch of activations before accumulation (e.g. sheet smoothing).
        Cached activations are raw, so a new transform reuses the cache.
    use_cache : bool
        Read / write the float16 activation cache (ignored under torch.distributed).
    with_final : bool
        Also keep the model's final representation per stimulus (small: one vector each).
    """
    groups = stim_set.group_index()
    stats = SufficientStats(stim_set.n_groups, model.sheet.n_units)
    _, world = _rank_world()
    use_cache = use_cache and world == 1 and not with_final
    key = cache_key(model, stim_set, pooling) if use_cache else None
    final = None
    finals: dict[int, np.ndarray] = {}

    def accumulate(rows: np.ndarray, acts: torch.Tensor) -> None:
        x = transform(acts) if transform is not None else acts
        stats.update(x, groups[rows])

    cached = _cache_path(key) if key else None
    if cached is not None and (cached / "done.json").is_file():
        for rows, acts in read_cache(cached):
            accumulate(rows, acts)
        return Extraction(stats, key, True)

    writer = _CacheWriter(key, model.sheet.n_units) if key else None
    try:
        for rows, acts, fin in iter_activations(
            model, stim_set, batch_size, pooling, with_final, progress
        ):
            if writer:
                writer.add(rows, acts)
                # the cache holds float16: accumulate the same rounded values, so a first run and
                # every later cached run give identical statistics
                acts = acts.to(torch.float16).float()
            accumulate(rows, acts)
            if fin is not None:
                for r, v in zip(rows, fin.cpu().numpy()):
                    finals[int(r)] = v
        if writer:
            writer.finish()
    except BaseException:
        if writer:
            writer.abort()
        raise
    if world > 1:
        stats.all_reduce()
    if with_final and finals:
        final = np.stack([finals[i] for i in sorted(finals)])
    return Extraction(stats, key, False, final)


def _cache_path(key: str | None) -> Path | None:
    return None if key is None else activation_cache_dir() / key


class _CacheWriter:
    """Float16 shards of ~64 MB written into a temp folder, renamed into place when complete."""

    def __init__(self, key: str, n_units: int) -> None:
        self.final = _cache_path(key)
        root = activation_cache_dir()
        root.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", dir=root))
        self.rows_per_shard = max(1, CACHE_SHARD_BYTES // (2 * n_units))
        self.rows: list[np.ndarray] = []
        self.acts: list[torch.Tensor] = []
        self.n_shards = 0
        self.n_rows = 0

    def add(self, rows: np.ndarray, acts: torch.Tensor) -> None:
        self.rows.append(rows)
        self.acts.append(acts.to("cpu", torch.float16))
        if sum(r.size for r in self.rows) >= self.rows_per_shard:
            self._flush()

    def _flush(self) -> None:
        from safetensors.torch import save_file

        if not self.rows:
            return
        rows = torch.from_numpy(np.concatenate(self.rows).astype(np.int64))
        sizes = torch.tensor([r.size for r in self.rows], dtype=torch.int64)
        save_file(
            {"rows": rows, "acts": torch.cat(self.acts).contiguous(), "batch_sizes": sizes},
            str(self.tmp / f"shard_{self.n_shards:05d}.safetensors"),
        )
        self.n_shards += 1
        self.n_rows += rows.numel()
        self.rows, self.acts = [], []

    def finish(self) -> None:
        self._flush()
        (self.tmp / "done.json").write_text(
            json.dumps({"shards": self.n_shards, "rows": self.n_rows})
        )
        if self.final.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)  # another run finished it first
            return
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def read_cache(folder: Path) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (rows, float32 activations) batch by batch, as they were extracted."""
    from safetensors.torch import load_file

    meta = json.loads((folder / "done.json").read_text())
    for i in range(meta["shards"]):
        shard = load_file(str(folder / f"shard_{i:05d}.safetensors"))
        rows, acts = shard["rows"].numpy(), shard["acts"].float()
        # replay the original batches, so the statistics merge in the same order as the first run
        start = 0
        for size in shard["batch_sizes"].tolist():
            yield rows[start : start + size], acts[start : start + size]
            start += size
