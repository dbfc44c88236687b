"""The content-hashed activation cache: raw pooled sheet activations as float16 shards.

A cache entry is a folder ``<cache dir>/activations/<key>/`` whose key hashes the model identity
(base weights, mode, areas, sheet, adaptor weights), the stimuli's bytes, the pooling and the
text truncation; so any command that runs the same stimuli through the same model finds it.
Shards of about 64 MB hold the rows and activations of the original batches, replayed in the
same order so that the statistics merge bit for bit as in the first run. An entry is written in
a temp folder and renamed into place when complete (``done.json`` last): a killed run leaves no
half entry that a later run could mistake for a finished one. ``done.json`` records every
shard's sha256; a shard that no longer matches (a damaged disk, a truncated copy) raises
:class:`CacheCorrupt`, and the pipeline drops the entry and runs the model again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from topocli.models.backbones import topo_cache_dir
from topocli.models.inputs import MAX_TEXT_TOKENS
from topocli.models.topo_model import TopoModel
from topocli.stimuli.stimulus_set import StimulusSet

CACHE_SHARD_BYTES = 1 << 26
CACHE_VERSION = 3  # 3: shards carry their sha256 in done.json
DONE_FILE = "done.json"
FINAL_FILE = "final.safetensors"


def cache_key(model: TopoModel, stim_set: StimulusSet, pooling: str) -> str:
    """Content hash of (model identity, stimuli bytes, pooling, token limit, cache version)."""
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
            "version": CACHE_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def activation_cache_dir() -> Path:
    """Root folder of the activation cache (``$TOPO_CACHE_DIR/activations``)."""
    return topo_cache_dir() / "activations"


def cache_path(key: str) -> Path:
    """The folder of cache entry ``key``."""
    return activation_cache_dir() / key


def is_complete(folder: Path | None) -> bool:
    """Whether ``folder`` is a finished cache entry."""
    return folder is not None and (folder / DONE_FILE).is_file()


class CacheCorrupt(Exception):
    """A cache entry whose shards do not match the checksums it was written with."""


class CacheWriter:
    """Float16 shards of ~64 MB written into a temp folder, renamed into place when complete.

    Parameters
    ----------
    key : str
        The entry's name (see :func:`cache_key`).
    n_units : int
        Activations per row.
    """

    def __init__(self, key: str, n_units: int) -> None:
        self.final = cache_path(key)
        root = activation_cache_dir()
        root.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", dir=root))
        self.rows_per_shard = max(1, CACHE_SHARD_BYTES // (2 * max(n_units, 1)))
        self.rows: list[np.ndarray] = []
        self.acts: list[torch.Tensor] = []
        self.n_shards = 0
        self.n_rows = 0
        self.digests: list[str] = []

    def add(self, rows: np.ndarray, acts: torch.Tensor) -> None:
        """Append one batch (its row indices and activations [B, U])."""
        self.rows.append(rows)
        self.acts.append(acts.to("cpu", torch.float16))
        if sum(r.size for r in self.rows) >= self.rows_per_shard:
            self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        rows = torch.from_numpy(np.concatenate(self.rows).astype(np.int64))
        sizes = torch.tensor([r.size for r in self.rows], dtype=torch.int64)
        from safetensors.torch import save

        data = save({"rows": rows, "acts": torch.cat(self.acts).contiguous(), "batch_sizes": sizes})
        (self.tmp / f"shard_{self.n_shards:05d}.safetensors").write_bytes(data)
        self.digests.append(hashlib.sha256(data).hexdigest())
        self.n_shards += 1
        self.n_rows += rows.numel()
        self.rows, self.acts = [], []

    def finish(self) -> None:
        """Write the last shard and ``done.json``, then move the entry into place."""
        self._flush()
        (self.tmp / DONE_FILE).write_text(
            json.dumps({"shards": self.n_shards, "rows": self.n_rows, "sha256": self.digests})
        )
        if self.final.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)  # another run finished it first
            return
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        """Remove the unfinished entry."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def read_cache(folder: Path) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (rows, float32 activations) batch by batch, as they were extracted.

    Raises
    ------
    CacheCorrupt
        A shard is missing, unreadable or differs from the sha256 recorded for it.
    """
    from safetensors.torch import load

    try:
        meta = json.loads((folder / DONE_FILE).read_text())
        digests = list(meta["sha256"])
        n_shards = int(meta["shards"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheCorrupt(f"unreadable {DONE_FILE} ({exc})") from exc
    if len(digests) != n_shards:
        raise CacheCorrupt(f"{DONE_FILE} lists {len(digests)} checksums for {n_shards} shards")
    for i in range(n_shards):
        name = f"shard_{i:05d}.safetensors"
        try:
            data = (folder / name).read_bytes()
        except OSError as exc:
            raise CacheCorrupt(f"{name} is unreadable ({exc.strerror})") from exc
        if hashlib.sha256(data).hexdigest() != digests[i]:
            raise CacheCorrupt(f"{name} does not match its checksum")
        shard = load(data)
        rows, acts = shard["rows"].numpy(), shard["acts"].float()
        # replay the original batches, so the statistics merge in the same order as the first run
        start = 0
        for size in shard["batch_sizes"].tolist():
            yield rows[start : start + size], acts[start : start + size]
            start += size


def save_final(folder: Path, final: np.ndarray) -> None:
    """Store the stimuli's final representations [N, D] beside a cache entry (atomically)."""
    from safetensors.numpy import save_file

    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".final.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({"final": np.ascontiguousarray(final, dtype=np.float32)}, tmp)
        os.replace(tmp, folder / FINAL_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_final(folder: Path) -> np.ndarray | None:
    """The final representations stored beside a cache entry, or None."""
    from safetensors.numpy import load_file

    path = folder / FINAL_FILE
    return load_file(str(path))["final"] if path.is_file() else None
