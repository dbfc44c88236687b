"""Streaming sufficient statistics per group: count, mean and sum of squared deviations.

Every statistic of the toolkit (Welch t, weighted contrasts, ANOVA, category-vs-rest) needs only
``(n, mean, M2)`` per condition and unit, so activations are reduced batch by batch and never
kept. :class:`SufficientStats` holds, for ``G`` groups (conditions, or condition x split cells)
and ``U`` units, float64 arrays

- ``count`` [G]: number of stimuli seen per group,
- ``mean`` [G, U]: running mean (0 for a group not seen yet),
- ``m2`` [G, U]: running sum of squared deviations from the mean.

A batch is reduced per group with an exact two-pass formula in float64 (on the tensor's own
device for a GPU tensor, in cache-sized column blocks on the CPU) and merged with Chan et al.'s
parallel update::

    n = na + nb,  d = mb - ma,  mean = ma + d * nb / n,  M2 = M2a + M2b + d^2 * na * nb / n

so memory is O(G x U) whatever the number of stimuli, states merge exactly (up to rounding)
in any order, and :meth:`SufficientStats.all_reduce` gives every ``torch.distributed`` rank
what one process would have computed on all the data.

Files are safetensors (no pickle): tensors ``count``, ``mean``, ``m2`` and string metadata.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from topocli.errors import TopoInputError

SUFFSTATS_FORMAT = "topo.suffstats"
SUFFSTATS_VERSION = "1"

# Target size of one float64 work block on the CPU (elements): 2^18 * 8 B = 2 MiB, i.e. L2-sized.
_CPU_BLOCK_ELEMS = 1 << 18
# On an accelerator the batch is reduced in larger blocks (64 Mi elements = 512 MiB float64).
_DEVICE_BLOCK_ELEMS = 1 << 26
# Column chunk (elements per rank and array) for all_gather in all_reduce.
_GATHER_CHUNK_ELEMS = 1 << 22


def cpu_threads() -> int:
    """Number of CPU threads for block-parallel reductions (the process's CPU affinity)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


def chan_merge(
    na: np.ndarray,
    mean_a: np.ndarray,
    m2_a: np.ndarray,
    nb: np.ndarray,
    mean_b: np.ndarray,
    m2_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge two sets of moments with Chan et al.'s parallel formula (float64, broadcasting).

    Parameters
    ----------
    na, nb : ndarray
        Counts, broadcastable against the means (e.g. shape [G, 1] for means [G, U]).
    mean_a, mean_b : ndarray
        Means of the two parts.
    m2_a, m2_b : ndarray
        Sums of squared deviations of the two parts.

    Returns
    -------
    n, mean, m2 : ndarray
        Moments of the union. A part with count 0 contributes nothing (its mean is ignored).
    """
    na = np.asarray(na, dtype=np.float64)
    nb = np.asarray(nb, dtype=np.float64)
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        wb = np.where(n > 0, nb / n, 0.0)
    delta = np.where(nb > 0, mean_b - mean_a, 0.0)
    mean = mean_a + delta * wb
    m2 = m2_a + np.where(nb > 0, m2_b, 0.0) + delta * delta * (na * wb)
    return n, mean, m2


def _group_layout(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct groups (sorted) [P], each row's index into them [B], and row counts [P]."""
    present, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return present, inverse.reshape(-1), counts


def _segment_matrix(inverse: np.ndarray, n_present: int) -> Any:
    """Sparse [P, B] 0/1 matrix: ``M @ x`` sums the rows of x per group.

    A CSR product is one pass over the data in C (``np.add.reduceat`` along axis 0 is ~15x
    slower), and needs no sorting or gathering of the rows.
    """
    from scipy.sparse import csr_matrix

    n_rows = inverse.size
    return csr_matrix((np.ones(n_rows), (inverse, np.arange(n_rows))), shape=(n_present, n_rows))


def _block_moments_numpy(
    xb: np.ndarray, seg: Any, inverse: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group mean and M2 [P, W] of a [B, W] block, exact two-pass in float64.

    ``seg`` is the :func:`_segment_matrix` (None when the batch holds one group) and
    ``inverse`` each row's group index.
    """
    xb = xb.astype(np.float64, copy=True)
    if seg is None:
        mean = xb.sum(axis=0, keepdims=True)
        mean /= counts[0]
        xb -= mean
        np.square(xb, out=xb)
        return mean, xb.sum(axis=0, keepdims=True)
    mean = np.asarray(seg @ xb)
    mean /= counts[:, None]
    xb -= mean[inverse]
    np.square(xb, out=xb)
    return mean, np.asarray(seg @ xb)


def _batch_moments_torch(x: Any, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group count, mean and M2 of a torch batch, reduced on its device in float64.

    Parameters
    ----------
    x : torch.Tensor
        Activations [B, U] on any device, any float dtype.
    groups : ndarray
        Integer group per row [B].

    Returns
    -------
    present : ndarray
        Distinct groups in the batch (sorted), [P].
    mean, m2 : ndarray
        float64 CPU arrays [P, U].
    """
    import torch

    x = x.detach()
    present, inverse, counts = _group_layout(groups)
    n_rows, n_units = x.shape
    seg = torch.as_tensor(inverse, device=x.device)
    cnt = torch.as_tensor(counts, dtype=torch.float64, device=x.device)[:, None]
    # A one-hot [P, B] matrix product sums rows per group: deterministic on GPUs (index_add_
    # uses atomics, so its float64 sums would change in the last bits from run to run).
    onehot = (seg[None, :] == torch.arange(present.size, device=x.device)[:, None]).double()
    mean = np.empty((present.size, n_units))
    m2 = np.empty((present.size, n_units))
    width = max(1, _DEVICE_BLOCK_ELEMS // max(n_rows, 1))
    for c0 in range(0, n_units, width):
        xb = x[:, c0 : c0 + width].to(torch.float64, copy=True)  # never modify the input
        mu = (onehot @ xb) / cnt
        xb -= mu[seg]
        xb.square_()
        mean[:, c0 : c0 + width] = mu.cpu().numpy()
        m2[:, c0 : c0 + width] = (onehot @ xb).cpu().numpy()
    return present, mean, m2


class SufficientStats:
    """Per-group streaming count, mean and M2 over ``n_units`` units (float64, CPU).

    Parameters
    ----------
    n_groups : int
        Number of groups (conditions, categories, condition x split cells).
    n_units : int
        Number of units (sheet size).

    Attributes
    ----------
    count : ndarray, float64 [G]
    mean : ndarray, float64 [G, U]
    m2 : ndarray, float64 [G, U]
    metadata : dict[str, str]
        Free-form string metadata saved with :meth:`save` (e.g. group names as JSON).

    Examples
    --------
    >>> s = SufficientStats(2, 3)
    >>> s.update(np.ones((4, 3), np.float32), np.array([0, 0, 1, 1]))
    >>> s.count.tolist()
    [2.0, 2.0]
    """

    def __init__(self, n_groups: int, n_units: int) -> None:
        if int(n_groups) < 1 or int(n_units) < 0:
            raise ValueError(f"need n_groups >= 1 and n_units >= 0, got {n_groups}, {n_units}")
        self.count = np.zeros(int(n_groups), dtype=np.float64)
        self.mean = np.zeros((int(n_groups), int(n_units)), dtype=np.float64)
        self.m2 = np.zeros((int(n_groups), int(n_units)), dtype=np.float64)
        self.metadata: dict[str, str] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> SufficientStats:
        """Build from existing moments (copied to float64); shapes [G], [G, U], [G, U]."""
        count = np.asarray(count, dtype=np.float64)
        mean = np.asarray(mean, dtype=np.float64)
        m2 = np.asarray(m2, dtype=np.float64)
        if count.ndim != 1 or mean.ndim != 2 or mean.shape != m2.shape:
            raise ValueError(
                f"need count [G], mean [G, U], m2 [G, U]; got {count.shape}, {mean.shape}, "
                f"{m2.shape}"
            )
        if mean.shape[0] != count.shape[0]:
            raise ValueError(f"count has {count.shape[0]} groups but mean has {mean.shape[0]}")
        out = cls(count.shape[0], mean.shape[1])
        out.count[:] = count
        out.mean[:] = mean
        out.m2[:] = m2
        return out

    @classmethod
    def from_data(cls, x: Any, groups: Any, n_groups: int | None = None) -> SufficientStats:
        """Statistics of one batch ``x`` [B, U] with integer ``groups`` [B]."""
        g = np.asarray(groups)
        n_groups = int(g.max()) + 1 if n_groups is None else n_groups
        out = cls(n_groups, int(x.shape[1]))
        out.update(x, g)
        return out

    def copy(self) -> SufficientStats:
        """A deep copy."""
        out = SufficientStats.from_arrays(self.count, self.mean, self.m2)
        out.metadata = dict(self.metadata)
        return out

    # ------------------------------------------------------------------ shape
    @property
    def n_groups(self) -> int:
        """Number of groups G."""
        return int(self.count.shape[0])

    @property
    def n_units(self) -> int:
        """Number of units U."""
        return int(self.mean.shape[1])

    def __repr__(self) -> str:
        return (
            f"SufficientStats(n_groups={self.n_groups}, n_units={self.n_units}, "
            f"n_seen={int(self.count.sum())})"
        )

    # ------------------------------------------------------------------ updates
    def _check_batch(self, x: Any, groups: Any) -> np.ndarray:
        if len(x.shape) != 2 or int(x.shape[1]) != self.n_units:
            raise ValueError(f"x must be [B, {self.n_units}], got {tuple(x.shape)}")
        g = np.asarray(groups)
        if g.ndim == 0:
            g = np.full(int(x.shape[0]), int(g))
        if g.shape != (int(x.shape[0]),):
            raise ValueError(f"groups must be [{int(x.shape[0])}], got {g.shape}")
        if g.size and not np.issubdtype(g.dtype, np.integer):
            if not np.all(np.mod(g, 1) == 0):
                raise ValueError("groups must be integers")
        g = g.astype(np.int64, copy=False)
        if g.size and (g.min() < 0 or g.max() >= self.n_groups):
            raise ValueError(f"groups must lie in [0, {self.n_groups}), got {g.min()}..{g.max()}")
        return g

    def update(self, x: Any, groups: Any) -> None:
        """Add a batch of responses.

        Parameters
        ----------
        x : ndarray or torch.Tensor
            Responses [B, U], any float dtype. A tensor on an accelerator is reduced there in
            float64 and only the per-group moments [P, U] travel to the CPU.
        groups : array_like of int
            Group of each row [B] (or one int for the whole batch). Rows need not be sorted.
        """
        g = self._check_batch(x, groups)
        if g.size == 0:
            return
        if _is_torch(x):
            if x.device.type == "cpu":
                x = x.detach()
                if x.dtype.is_floating_point and x.element_size() < 4:
                    x = x.float()  # numpy has no bfloat16
                self._update_numpy(x.numpy(), g)
            else:
                present, mean, m2 = _batch_moments_torch(x, g)
                counts = np.bincount(g, minlength=self.n_groups)[present]
                self._merge_rows(present, counts.astype(np.float64), mean, m2, 0)
                self.count[present] += counts
            return
        self._update_numpy(np.asarray(x), g)

    def _update_numpy(self, x: np.ndarray, g: np.ndarray) -> None:
        if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"x must be numeric, got dtype {x.dtype}")
        present, inverse, counts = _group_layout(g)
        fcounts = counts.astype(np.float64)
        seg = None if present.size == 1 else _segment_matrix(inverse, present.size)
        n_rows, n_units = x.shape
        width = max(64, _CPU_BLOCK_ELEMS // max(n_rows, 1))
        blocks = [(c0, min(c0 + width, n_units)) for c0 in range(0, n_units, width)]

        def work(block: tuple[int, int]) -> None:
            c0, c1 = block
            mean, m2 = _block_moments_numpy(x[:, c0:c1], seg, inverse, fcounts)
            self._merge_rows(present, fcounts, mean, m2, c0)

        n_threads = min(cpu_threads(), len(blocks))
        if n_threads > 1:
            # Disjoint column blocks: threads never write the same memory. numpy releases the
            # GIL inside its loops, so the blocks run in parallel.
            step = -(-len(blocks) // n_threads)
            chunks = [blocks[i : i + step] for i in range(0, len(blocks), step)]
            with ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(lambda bs: [work(b) for b in bs], chunks))
        else:
            for b in blocks:
                work(b)
        self.count[present] += fcounts

    def _merge_rows(
        self,
        present: np.ndarray,
        counts: np.ndarray,
        mean: np.ndarray,
        m2: np.ndarray,
        c0: int,
    ) -> None:
        """Chan-merge batch moments [P, W] of groups ``present`` into columns c0:c0+W.

        ``mean`` and ``m2`` are scratch buffers owned by the caller (overwritten). Same formula
        as :func:`chan_merge`, written in place to keep the number of passes low.
        """
        c1 = c0 + mean.shape[1]
        na = self.count[present]
        contiguous = present.size == present[-1] - present[0] + 1
        rows = slice(int(present[0]), int(present[-1]) + 1) if contiguous else present
        if not np.any(na):  # first data for all these groups: plain copy
            self.mean[rows, c0:c1] = mean
            self.m2[rows, c0:c1] = m2
            return
        n = na + counts
        wb = (counts / n)[:, None]
        coef = (na * counts / n)[:, None]
        cur_mean = self.mean[rows, c0:c1]  # a view for a slice, a copy for fancy rows
        delta = mean
        delta -= cur_mean
        sq = delta * delta
        sq *= coef
        sq += m2
        delta *= wb
        if contiguous:
            self.m2[rows, c0:c1] += sq
            cur_mean += delta
        else:  # rows are distinct: explicit gather, add, scatter (much faster than a[i, s] +=)
            cur_m2 = self.m2[rows, c0:c1]
            cur_m2 += sq
            self.m2[rows, c0:c1] = cur_m2
            cur_mean += delta
            self.mean[rows, c0:c1] = cur_mean

    def merge(self, other: SufficientStats) -> SufficientStats:
        """Add another state's data into this one (in place); returns ``self``."""
        if (other.n_groups, other.n_units) != (self.n_groups, self.n_units):
            raise ValueError(
                f"cannot merge stats of shape ({other.n_groups}, {other.n_units}) into "
                f"({self.n_groups}, {self.n_units})"
            )
        n, mean, m2 = chan_merge(
            self.count[:, None], self.mean, self.m2, other.count[:, None], other.mean, other.m2
        )
        self.count = n[:, 0].copy()
        self.mean = mean
        self.m2 = m2
        return self

    # ------------------------------------------------------------------ read-outs
    def variance(self, ddof: int = 1) -> np.ndarray:
        """Per-group variance [G, U] = M2 / (n - ddof); NaN where count < 2 (or <= ddof)."""
        n = self.count[:, None] - ddof
        with np.errstate(invalid="ignore", divide="ignore"):
            var = self.m2 / n
        var[np.broadcast_to((self.count[:, None] < 2) | (n <= 0), var.shape)] = np.nan
        return var

    def pooled(self, group_ids: Sequence[int] | np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Moments of the union of groups: ``(n, mean [U], m2 [U])``.

        Computed as the total over the selected groups without copying them:
        ``mean = sum n_k mean_k / n`` and ``M2 = sum M2_k + sum n_k (mean_k - mean)^2``.
        """
        ids = np.unique(np.asarray(group_ids, dtype=np.int64))
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_groups):
            raise ValueError(f"group ids must lie in [0, {self.n_groups})")
        w = np.zeros(self.n_groups)
        w[ids] = self.count[ids]
        return pooled_moments(w, self.mean, self.m2)

    def total(self) -> tuple[float, np.ndarray, np.ndarray]:
        """Moments of all groups together: ``(n, mean [U], m2 [U])``."""
        return pooled_moments(self.count, self.mean, self.m2)

    # ------------------------------------------------------------------ comparison
    def allclose(self, other: SufficientStats, rtol: float = 1e-10, atol: float = 1e-12) -> bool:
        """True when shapes match and count, mean, m2 agree within tolerances."""
        if (other.n_groups, other.n_units) != (self.n_groups, self.n_units):
            return False
        return bool(
            np.array_equal(self.count, other.count)
            and np.allclose(self.mean, other.mean, rtol=rtol, atol=atol)
            and np.allclose(self.m2, other.m2, rtol=rtol, atol=atol)
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SufficientStats):
            return NotImplemented
        return (
            np.array_equal(self.count, other.count)
            and np.array_equal(self.mean, other.mean)
            and np.array_equal(self.m2, other.m2)
        )

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ distributed
    def all_reduce(self, group: Any = None) -> SufficientStats:
        """Merge the states of all ``torch.distributed`` ranks in place (every rank gets it).

        Each rank's ``(count, mean, m2)`` is all-gathered (in column chunks, so the extra memory
        is bounded) and merged in rank order in float64 with Chan's formula, so all ranks hold
        bit-identical results equal (to rounding) to one process having seen all the data. A
        no-op when torch.distributed is not initialised or has one rank. Returns ``self``.
        """
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        world = dist.get_world_size(group)
        if world == 1:
            return self
        backend = str(dist.get_backend(group)).lower()
        device = torch.device("cpu")
        if "nccl" in backend:
            device = torch.device("cuda", torch.cuda.current_device())

        def gather(a: np.ndarray) -> list[np.ndarray]:
            t = torch.from_numpy(np.ascontiguousarray(a)).to(device)
            parts = [torch.empty_like(t) for _ in range(world)]
            dist.all_gather(parts, t, group=group)
            return [p.cpu().numpy() for p in parts]

        shapes = gather(np.array([self.n_groups, self.n_units], dtype=np.int64))
        if any(not np.array_equal(s, shapes[0]) for s in shapes):
            shown = [s.tolist() for s in shapes]
            raise ValueError(f"ranks hold stats of different shapes: {shown}")
        counts = gather(self.count)
        width = max(1, _GATHER_CHUNK_ELEMS // max(self.n_groups, 1))
        new_mean = np.empty_like(self.mean)
        new_m2 = np.empty_like(self.m2)
        for c0 in range(0, max(self.n_units, 1), width):
            c1 = min(c0 + width, self.n_units)
            means = gather(self.mean[:, c0:c1])
            m2s = gather(self.m2[:, c0:c1])
            n, mu, m2 = counts[0][:, None], means[0], m2s[0]
            for r in range(1, world):
                n, mu, m2 = chan_merge(n, mu, m2, counts[r][:, None], means[r], m2s[r])
            new_mean[:, c0:c1] = mu
            new_m2[:, c0:c1] = m2
        self.count = np.sum(counts, axis=0, dtype=np.float64)
        self.mean = new_mean
        self.m2 = new_m2
        return self

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write a safetensors file atomically (temp file, then rename)."""
        from safetensors.numpy import save_file

        path = Path(path)
        meta = {**self.metadata, **(metadata or {})}
        meta.update({"format": SUFFSTATS_FORMAT, "version": SUFFSTATS_VERSION})
        tensors = {
            "count": np.ascontiguousarray(self.count),
            "mean": np.ascontiguousarray(self.mean),
            "m2": np.ascontiguousarray(self.m2),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={str(k): str(v) for k, v in meta.items()})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> SufficientStats:
        """Read a file written by :meth:`save`; a bad file raises ``TopoInputError``."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise TopoInputError("sufficient-statistics file not found", path)
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = dict(f.metadata() or {})
                keys = set(f.keys())
                if not {"count", "mean", "m2"} <= keys:
                    raise TopoInputError(
                        f"not a sufficient-statistics file (tensors {sorted(keys)})", path
                    )
                arrays = {k: f.get_tensor(k) for k in ("count", "mean", "m2")}
        except TopoInputError:
            raise
        except Exception as exc:  # safetensors raises several error types on corrupt files
            raise TopoInputError(f"cannot read sufficient statistics: {exc}", path) from exc
        if meta.get("format") != SUFFSTATS_FORMAT:
            found = meta.get("format")
            raise TopoInputError(f"not a {SUFFSTATS_FORMAT} file (format={found})", path)
        try:
            out = cls.from_arrays(arrays["count"], arrays["mean"], arrays["m2"])
        except ValueError as exc:
            raise TopoInputError(str(exc), path) from exc
        out.metadata = {k: v for k, v in meta.items() if k not in ("format", "version")}
        return out


def pooled_moments(
    weights: np.ndarray, mean: np.ndarray, m2: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Moments of the union of groups with counts ``weights`` [G] (0 = group left out).

    Returns ``(n, mean [U], m2 [U])``; mean and m2 are 0 when n == 0. Works in column chunks so
    the temporary memory stays about 32 MiB whatever G and U.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = float(w.sum())
    n_groups, n_units = mean.shape
    out_mean = np.zeros(n_units)
    out_m2 = np.zeros(n_units)
    if n == 0:
        return 0.0, out_mean, out_m2
    keep = np.flatnonzero(w > 0)
    wk = w[keep]
    width = max(1, (1 << 22) // max(keep.size, 1))
    for c0 in range(0, n_units, width):
        mk = mean[keep, c0 : c0 + width]
        mu = wk @ mk / n
        dev = mk - mu
        out_mean[c0 : c0 + width] = mu
        out_m2[c0 : c0 + width] = m2[keep, c0 : c0 + width].sum(axis=0) + wk @ (dev * dev)
    return n, out_mean, out_m2


def _is_torch(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "device") and hasattr(x, "detach")
