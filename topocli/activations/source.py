"""Per-stimulus sheet activations kept for second passes (exemplars, discovery, held-out maps).

The statistics of a pass never need the activations again, but some analyses do: picking
exemplar stimuli, regrouping a pool level by level, a held-out correlation curve. An
:class:`ActivationSource` keeps them in memory when they fit, else reads them back from the
float16 activation cache, batch by batch, so memory stays flat in the number of stimuli.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from topocli.stats.suffstats import SufficientStats

IN_MEMORY_BYTES = 1 << 30
Transform = Callable[[Any], Any]


class ActivationSource:
    """Raw per-stimulus sheet activations: an in-memory array or a finished cache folder.

    Parameters
    ----------
    n_rows, n_units : int
    array : ndarray [N, U], optional
        Activations held in memory.
    folder : Path, optional
        A finished activation-cache folder (read shard by shard).
    cleanup : bool
        Delete ``folder`` on :meth:`close` (a temporary cache).
    """

    def __init__(
        self,
        n_rows: int,
        n_units: int,
        array: np.ndarray | None = None,
        folder: Path | None = None,
        cleanup: bool = False,
    ) -> None:
        if array is None and folder is None:
            raise ValueError("an activation source needs an array or a cache folder")
        self.n_rows = int(n_rows)
        self.n_units = int(n_units)
        self.array = array
        self.folder = folder
        self.cleanup = cleanup

    @classmethod
    def from_array(cls, x: np.ndarray) -> ActivationSource:
        """A source over activations already in memory [N, U]."""
        x = np.asarray(x, dtype=np.float32)
        return cls(x.shape[0], x.shape[1], array=x)

    @property
    def in_memory(self) -> bool:
        return self.array is not None

    def batches(self, rows_per_batch: int = 2048) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row indices, float32 activations [B, U])``."""
        if self.array is not None:
            for s in range(0, self.n_rows, rows_per_batch):
                rows = np.arange(s, min(s + rows_per_batch, self.n_rows))
                yield rows, self.array[s : s + rows_per_batch]
            return
        from topocli.activations.cache import read_cache

        for rows, acts in read_cache(self.folder):
            yield rows, acts.numpy()

    def close(self) -> None:
        """Remove a temporary cache folder (a no-op otherwise)."""
        if self.cleanup and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def apply_transform(x: np.ndarray, transform: Transform | None) -> np.ndarray:
    """``transform(x)`` as float32 (``x`` itself when there is no transform)."""
    return x if transform is None else np.asarray(transform(x), dtype=np.float32)


def grouped_stats(
    source: ActivationSource, groups: np.ndarray, n_groups: int, transform: Transform | None = None
) -> SufficientStats:
    """Statistics per group from a source in one pass (rows with group < 0 are left out)."""
    groups = np.asarray(groups, dtype=np.int64)
    stats = SufficientStats(n_groups, source.n_units)
    for rows, acts in source.batches():
        g = groups[rows]
        keep = g >= 0
        if keep.any():
            stats.update(apply_transform(acts[keep], transform), g[keep])
    return stats


def project(
    source: ActivationSource, weights: np.ndarray, transform: Transform | None = None
) -> np.ndarray:
    """``transform(acts) @ weights`` for every stimulus: [N, K] (one pass)."""
    w = np.asarray(weights, dtype=np.float64)
    out = np.full((source.n_rows, w.shape[1]), np.nan)
    for rows, acts in source.batches():
        out[rows] = apply_transform(acts, transform).astype(np.float64) @ w
    return out
