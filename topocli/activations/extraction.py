"""The one activation pipeline: stimuli -> batched forward passes -> pooled sheet activations
-> per-(condition, split) sufficient statistics.

Every command that runs stimuli through a model calls :func:`extract`. Activations are never
held for the whole stimulus set unless a second pass needs them (``keep_activations``): each
batch is pooled over its non-padding tokens / frames, optionally transformed (fMRI-like
smoothing), folded into per-(condition, split) sufficient statistics and, when asked, written
to the float16 activation cache (:mod:`topocli.activations.cache`). A later command with the same
cache key (whichever command it is) replays the cache instead of running the model; a first run
accumulates the same float16-rounded values it caches, so first and cached runs give identical
statistics. Under ``torchrun`` every rank takes every ``world_size``-th stimulus and the
statistics are all-reduced.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from topocli.activations.cache import (
    CacheCorrupt,
    CacheWriter,
    activation_cache_dir,
    cache_key,
    cache_path,
    is_complete,
    load_final,
    read_cache,
    save_final,
)
from topocli.activations.source import IN_MEMORY_BYTES, ActivationSource
from topocli.errors import TopoInputError, warn
from topocli.models.inputs import (
    MAX_TEXT_TOKENS,
    Batch,
    autocast_for,
    batch_order,
    final_representation,
    prepare_batch,
    rank_world,
)
from topocli.models.topo_model import TopoModel
from topocli.stats.suffstats import SufficientStats
from topocli.stimuli.stimulus_set import StimulusSet

__all__ = [
    "MAX_TEXT_TOKENS",
    "POOLINGS",
    "Batch",
    "Extraction",
    "activation_cache_dir",
    "autocast_for",
    "batch_order",
    "cache_key",
    "check_pooling",
    "extract",
    "final_representation",
    "iter_activations",
    "prepare_batch",
    "read_cache",
]

POOLINGS = ("mean", "last")
Transform = Callable[[torch.Tensor], torch.Tensor]


def check_pooling(pooling: str) -> str:
    """One-line TopoInputError unless ``pooling`` is one of :data:`POOLINGS`."""
    if pooling not in POOLINGS:
        raise TopoInputError(f"--pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    return pooling


def iter_activations(
    model: TopoModel,
    stim_set: StimulusSet,
    batch_size: int = 32,
    pooling: str = "mean",
    with_final: bool = False,
    progress=None,
    shard: bool = True,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]:
    """Yield ``(row indices, sheet activations [B, U] float32, final reps or None)``.

    Under ``torch.distributed`` each rank takes every ``world_size``-th stimulus, unless
    ``shard`` is False.
    """
    task = progress.add_task("extracting", total=len(stim_set)) if progress else None
    model.eval()
    with torch.no_grad():
        for rows in batch_order(stim_set, batch_size, shard):
            batch = prepare_batch(model, [stim_set.stimuli[i] for i in rows], rows)
            with autocast_for(model):
                out, acts = model.record(batch.inputs, batch.modality, pooling, batch.masks)
            final = final_representation(out, batch.masks) if with_final else None
            yield rows, acts.float(), final
            if progress:
                progress.advance(task, len(rows))


@dataclass
class Extraction:
    """What one pass over a stimulus set produced.

    Attributes
    ----------
    stats : SufficientStats
        Groups ``2 * condition + split`` of the stimulus set (of the transformed activations).
    cache_key : str or None
        The activation-cache entry the pass read or wrote (None: cache off).
    from_cache : bool
        The model did not run: the cache was replayed.
    final : ndarray [N, D] or None
        The model's final representation per stimulus (``with_final``).
    source : ActivationSource or None
        The raw per-stimulus activations (``keep_activations``); :meth:`close` removes a
        temporary on-disk copy.
    raw_stats : SufficientStats or None
        With ``also_raw`` and a transform: the statistics of the untransformed activations (the
        unsmoothed map that every measure of topography uses); without a transform, ``stats``.
    """

    stats: SufficientStats
    cache_key: str | None
    from_cache: bool
    final: np.ndarray | None = None
    source: ActivationSource | None = None
    raw_stats: SufficientStats | None = None

    def close(self) -> None:
        if self.source is not None:
            self.source.close()

    def __enter__(self) -> Extraction:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def extract(
    model: TopoModel,
    stim_set: StimulusSet,
    batch_size: int = 32,
    pooling: str = "mean",
    transform: Transform | None = None,
    use_cache: bool = False,
    with_final: bool = False,
    progress=None,
    keep_activations: bool = False,
    memory_bytes: int = IN_MEMORY_BYTES,
    shard: bool = True,
    also_raw: bool = False,
    rectify: bool = False,
) -> Extraction:
    """Stream a stimulus set through the model into per-(condition, split) statistics.

    Parameters
    ----------
    model : TopoModel
    stim_set : StimulusSet
    batch_size : int
        Stimuli per forward pass.
    pooling : {"mean", "last"}
        Over the non-padding tokens / frames of each stimulus.
    transform : callable, optional
        Applied to every batch of activations before accumulation (e.g. sheet smoothing).
        Cached and kept activations are raw, so another transform reuses them.
    use_cache : bool
        Read / write the float16 activation cache (ignored under torch.distributed).
    with_final : bool
        Also return the model's final representation per stimulus (cached beside the
        activations).
    progress : rich Progress, optional
    keep_activations : bool
        Also return the raw per-stimulus activations as an :class:`ActivationSource`: in
        memory when ``N x U x 4`` bytes fit ``memory_bytes``, else read back from the
        activation cache (a temporary entry when ``use_cache`` is off).
    memory_bytes : int
    shard : bool
        Under ``torch.distributed``, split the stimuli over the ranks and all-reduce the
        statistics (default). False: this process runs every stimulus on its own (an
        evaluation on one rank; nothing is exchanged).
    also_raw : bool
        Also accumulate the untransformed activations (``Extraction.raw_stats``).
    rectify : bool
        Accumulate statistics of absolute activations ``|a|`` (llm-localization's convention),
        before any transform; the raw statistics are of ``|a|`` too. Cached and kept
        activations stay signed.

    Returns
    -------
    Extraction
    """
    check_pooling(pooling)
    n, n_units = len(stim_set), int(model.sheet.n_units)
    groups = stim_set.group_index()
    stats = SufficientStats(stim_set.n_groups, n_units)
    raw = (
        SufficientStats(stim_set.n_groups, n_units) if also_raw and transform is not None else None
    )
    _, world = rank_world() if shard else (0, 1)
    if world > 1 and (keep_activations or with_final):
        raise TopoInputError(
            "this analysis needs every stimulus's activations in one process; run it without "
            "torchrun (the statistics of localize shard across ranks)"
        )
    use_cache = use_cache and world == 1
    key = cache_key(model, stim_set, pooling) if use_cache else None
    folder = cache_path(key) if key else None
    done = is_complete(folder)
    in_memory = keep_activations and n * n_units * 4 <= memory_bytes
    kept = np.empty((n, n_units), dtype=np.float32) if in_memory else None

    def accumulate(rows: np.ndarray, acts: torch.Tensor) -> None:
        if kept is not None:
            kept[rows] = acts.detach().cpu().numpy()
        if rectify:
            acts = acts.abs()
        stats.update(transform(acts) if transform is not None else acts, groups[rows])
        if raw is not None:
            raw.update(acts, groups[rows])

    if done and (not with_final or load_final(folder) is not None):
        try:
            for rows, acts in read_cache(folder):
                accumulate(rows, acts)
        except CacheCorrupt as exc:
            warn(
                f"the activation cache {folder} is damaged ({exc}); dropped it, running the "
                "model again"
            )
            shutil.rmtree(folder, ignore_errors=True)
            stats = SufficientStats(stim_set.n_groups, n_units)  # what accumulate() adds to
            raw = SufficientStats(stim_set.n_groups, n_units) if raw is not None else None
            done = False
        else:
            source = None
            if keep_activations:
                source = ActivationSource(
                    n, n_units, array=kept, folder=None if in_memory else folder
                )
            final = load_final(folder) if with_final else None
            return Extraction(stats, key, True, final, source, _raw(raw, stats, also_raw))

    writer, temporary = None, False
    if key is not None and not done:
        writer = CacheWriter(key, n_units)
    elif key is None and keep_activations and not in_memory:
        writer, temporary = CacheWriter(f"tmp-{uuid.uuid4().hex}", n_units), True
    # what is cached is float16: accumulate the same rounded values, so a first run and every
    # later cached run give identical statistics
    round16 = key is not None or temporary
    finals: np.ndarray | None = None
    try:
        for rows, acts, fin in iter_activations(
            model, stim_set, batch_size, pooling, with_final, progress, shard
        ):
            if writer is not None:
                writer.add(rows, acts)
            if round16:
                acts = acts.to(torch.float16).float()
            accumulate(rows, acts)
            if fin is not None:
                f = fin.detach().float().cpu().numpy()
                if finals is None:
                    finals = np.zeros((n, f.shape[1]), dtype=np.float32)
                finals[rows] = f
        if writer is not None:
            writer.finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if world > 1:
        stats.all_reduce()
        if raw is not None:
            raw.all_reduce()
    if finals is not None and folder is not None and folder.is_dir():
        save_final(folder, finals)
    source = None
    if keep_activations:
        if in_memory:
            source = ActivationSource(n, n_units, array=kept)
        else:
            where = writer.final if writer is not None else folder
            source = ActivationSource(n, n_units, folder=where, cleanup=temporary)
    return Extraction(stats, key, False, finals, source, _raw(raw, stats, also_raw))


def _raw(raw: SufficientStats | None, stats: SufficientStats, asked: bool):
    if not asked:
        return None
    return raw if raw is not None else stats
