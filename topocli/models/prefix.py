"""Reuse of the unperturbed prefix of a forward pass: blocks before the first edit do no work.

An edit registered at area ``k`` changes nothing upstream of it: every block that runs before
block ``k`` sees the same input in a perturbed pass as in the unperturbed one, and block ``k``
itself computes the same raw output (the edit is applied by its hook, *after* the block's
forward). :class:`PrefixReuse` records, in the first pass of each batch, the raw output of every
block that runs up to and including the first edited one (``forward`` only, before the topo
hook), and in later passes of that batch replaces those blocks' ``forward`` by a function that
returns the recorded output (repeated along the batch for stacked perturbations). The topo hooks
still run on it, so edits, adaptors and recording behave exactly as before.

Nothing here is model specific: the prefix is found from the order in which the blocks run.
Reuse is refused (the full forward runs) when a block of the prefix runs more than once in one
forward (weights shared across depth, e.g. ALBERT), or when an edit sits on a block of the
prefix other than the first edited one (asserted at every replay).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

# recorded outputs above this many bytes per batch are not kept (the full forward runs)
DEFAULT_BUDGET_BYTES = 2 << 30


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif hasattr(value, "values") and hasattr(value, "keys"):
        for v in value.values():
            yield from _tensors(v)


def nbytes(value: Any) -> int:
    """Bytes held by the tensors of a (nested) block output."""
    return sum(t.element_size() * t.nelement() for t in _tensors(value))


def first_rows(value: Any, rows: int, batch: int) -> Any:
    """The first ``rows`` of every batch-major tensor (first dim ``batch``) of a block output."""
    return _map_batch(value, batch, lambda t: t[:rows].clone())


def repeat_rows(value: Any, times: int, batch: int) -> Any:
    """Every batch-major tensor repeated ``times`` along dim 0; a fresh container each call
    (the topo hook may write into a dict-like output)."""
    if times == 1:
        return _map_batch(value, batch, lambda t: t)
    return _map_batch(value, batch, lambda t: t.repeat(times, *([1] * (t.ndim - 1))))


def _map_batch(value: Any, batch: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value) if value.ndim >= 1 and value.shape[0] == batch else value
    if isinstance(value, tuple):
        items = [_map_batch(v, batch, fn) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_map_batch(v, batch, fn) for v in value]
    if hasattr(value, "keys") and hasattr(value, "values"):
        out = type(value)(**{k: _map_batch(value[k], batch, fn) for k in value.keys()})
        return out
    return value


class PrefixReuse:
    """Record, then replay, the blocks that run up to the first edited block.

    Parameters
    ----------
    model : TopoModel
        Its ``blocks`` (module, name) and ``hook_points`` are used; nothing else.
    edited : sequence of int
        The areas (block indices) that any perturbation of this set edits.
    budget_bytes : int
        Largest recorded output per batch; above it the batch runs in full.

    Notes
    -----
    Use :meth:`pass_for` around every forward of a batch: the first call for a key records
    (a normal forward, with the edits), later calls replay. ``rows`` is the number of real rows of
    the batch (the forward may stack ``times`` copies of it).
    """

    def __init__(
        self, model: Any, edited: Sequence[int], budget_bytes: int = DEFAULT_BUDGET_BYTES
    ) -> None:
        self.model = model
        self.edited = sorted({int(k) for k in edited})
        self.budget = int(budget_bytes)
        self.cache: dict[Any, dict[int, Any] | None] = {}
        self.reason: str | None = None if self.edited else "no edited area"
        self.replayed = 0

    @property
    def skipped_blocks(self) -> list[int]:
        """Blocks whose forward is replayed (those of the last recorded batch)."""
        for rec in reversed(list(self.cache.values())):
            if rec:
                return sorted(rec)
        return []

    @contextmanager
    def pass_for(self, key: Any, rows: int, times: int) -> Iterator[None]:
        """Record (first pass of ``key``) or replay (later passes) around one forward."""
        if not self.edited:
            yield
            return
        if key not in self.cache:
            with self._recording(key, rows, times):
                yield
            return
        recorded = self.cache[key]
        if not recorded:
            yield
            return
        with self._replaying(recorded, rows, times):
            yield
        self.replayed += 1

    # -- recording ------------------------------------------------------------------
    @contextmanager
    def _recording(self, key: Any, rows: int, times: int) -> Iterator[None]:
        blocks = self.model.blocks
        edited = set(self.edited)
        order: list[int] = []
        outputs: dict[int, Any] = {}
        state = {"open": True}
        originals = {}

        def wrap(k: int, forward: Callable) -> Callable:
            def recorded_forward(*args, **kwargs):
                out = forward(*args, **kwargs)
                order.append(k)
                if state["open"]:
                    outputs[k] = first_rows(out, rows, rows * times)
                    if k in edited:  # the first edited block: the prefix ends here
                        state["open"] = False
                return out

            return recorded_forward

        for k, block in enumerate(blocks):
            originals[k] = block.module.__dict__.get("forward")
            block.module.forward = wrap(k, block.module.forward)
        try:
            yield
        finally:
            for k, block in enumerate(blocks):
                if originals[k] is None:
                    del block.module.forward
                else:
                    block.module.forward = originals[k]
        self.cache[key] = self._usable(order, outputs)

    def _usable(self, order: list[int], outputs: dict[int, Any]) -> dict[int, Any] | None:
        """The recorded prefix, or None (with the reason) when it cannot be replayed."""
        if not outputs or not (set(outputs) & set(self.edited)):
            self.reason = "no edited block ran in this pass"
            return None
        counts = {k: order.count(k) for k in outputs}
        if any(n != 1 for n in counts.values()):
            self.reason = "a block of the prefix runs more than once per forward (shared weights)"
            return None
        if sum(nbytes(v) for v in outputs.values()) > self.budget:
            self.reason = f"the prefix's outputs exceed {self.budget} bytes per batch"
            return None
        return outputs

    # -- replaying ------------------------------------------------------------------
    @contextmanager
    def _replaying(self, recorded: dict[int, Any], rows: int, times: int) -> Iterator[None]:
        blocks = self.model.blocks
        first = next(k for k in recorded if k in self.edited)
        for k in recorded:
            # valid only if nothing upstream of the first edited block is changed
            edits = self.model.hook_points[blocks[k].name].edits
            assert k == first or not edits, (
                f"prefix reuse: block {blocks[k].name} runs before the first edited block "
                f"{blocks[first].name} but has {len(edits)} edit(s)"
            )
        originals = {}

        def replay(k: int) -> Callable:
            def cached_forward(*_args, **_kwargs):
                return repeat_rows(recorded[k], times, rows)

            return cached_forward

        for k in recorded:
            module = blocks[k].module
            originals[k] = module.__dict__.get("forward")
            module.forward = replay(k)
        try:
            yield
        finally:
            for k in recorded:
                module = blocks[k].module
                if originals[k] is None:
                    del module.forward
                else:
                    module.forward = originals[k]
