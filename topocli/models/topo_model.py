"""TopoModel: a Hugging Face backbone plus a sheet, read and changed through named hook points.

CNN stages (layout ``nchw``) are areas too: their units are channels, ``W`` mixes channels (a
1x1 convolution), edits see ``Z`` channels-last and pooling averages over the H x W positions.

Blocks are found by :mod:`topocli.models.blocks`, backbones loaded by
:mod:`topocli.models.backbones`. Each recorded block is an *area* of the sheet. After a recorded
block runs, its hook point does, in order:

1. ``Z = X W`` (adaptor mode; ``W`` starts as identity + small seeded noise) or ``Z = X``
   (direct mode): ``Z`` is the sheet activation of that area;
2. every registered *edit* may change ``Z`` (interventions live here and only here);
3. when recording, ``Z`` is pooled over non-padding tokens / frames into one vector per stimulus;
4. the block passes on ``X_hat = Z W^+`` (adaptor) or ``Z`` (direct).

Without edits and without gradients, ``X_hat = X W W^+`` equals ``X`` (W is invertible), so the
hook passes ``X`` on untouched and, pooling being linear, pools ``X`` before projecting it with
``W``: recording costs one small matmul per stimulus instead of two per token.

An edit that says which units it changes (a :class:`ColumnEdit`, as intervene's are) is applied
on those columns only, by the same identity: ``X_hat = X + (Z'_S - Z_S) W^+_S`` with
``Z_S = X W[:, S]``, two ``B x T x H x |S|`` products instead of two ``B x T x H x H``; with
identity adaptors it is ``X`` with the columns ``S`` replaced. ``TopoModel.exact()`` and
``HookPoint.column_edits = False`` keep the literal (dense) path.

With identity adaptors (noise 0) and no edits, outputs are bit-identical to the base model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from topocli.errors import TopoInputError
from topocli.models.backbones import (
    EncoderOnly,
    load_backbone,
    randomly_initialise,
    recordable_module,
    resolve_base,
    revision_of,
    select_inputs,
    weights_fingerprint,
)
from topocli.models.blocks import Block, default_stages, discover_blocks, select_blocks
from topocli.sheet import AreaSpec, Sheet

MODES = ("adaptor", "direct")


POOLINGS = ("mean", "last")


DEFAULT_ADAPTOR_NOISE = 1e-3


Edit = Callable[[torch.Tensor], torch.Tensor]


# what the image / audio towers of multimodal models take (the rest belongs to the LM)
IMAGE_FEATURE_INPUTS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "image_sizes")
AUDIO_FEATURE_INPUTS = ("input_features", "is_longer", "attention_mask", "feature_attention_mask")


class Adaptor(nn.Module):
    """Cortical adaptor ``Z = X W``, ``X_hat = Z W^+`` (Topo-Omni)."""

    def __init__(self, width: int, noise: float = 0.0, generator: torch.Generator | None = None):
        super().__init__()
        w = torch.eye(width)
        if noise:
            w = w + noise * torch.randn(width, width, generator=generator)
        self.weight = nn.Parameter(w)
        self.exact_identity = not noise
        self._identity_version = self.weight._version
        self._pinv: tuple[int, torch.Tensor] | None = None

    def passes_through(self) -> bool:
        """True when Z = X exactly and no gradient is wanted: the hook may skip the matmuls."""
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return False
        # any in-place update (an optimizer step) bumps _version and ends the pass-through
        return self.exact_identity and self.weight._version == self._identity_version

    def set_weight(self, w: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(w.to(self.weight))
        self.exact_identity = bool(torch.equal(w.cpu(), torch.eye(w.shape[0], dtype=w.dtype)))
        self._identity_version = self.weight._version
        self._pinv = None

    def pinv(self) -> torch.Tensor:
        """W^+: the inverse for an invertible W (LU, ~6x cheaper than an SVD with gradients),
        the SVD pseudo-inverse when W is singular."""
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return _pseudo_inverse(self.weight.float())
        key = self.weight._version
        if self._pinv is None or self._pinv[0] != key or self._pinv[1].device != self.weight.device:
            self._pinv = (key, _pseudo_inverse(self.weight.detach().float()))
        return self._pinv[1]


def _pseudo_inverse(w: torch.Tensor) -> torch.Tensor:
    inverse, info = torch.linalg.inv_ex(w)
    if int(info) == 0 and torch.isfinite(inverse).all():
        return inverse
    return torch.linalg.pinv(w)


class Segments:
    """Which rows of a packed or split batch belong to each stimulus, for pooling.

    ``kind="tokens"``: a block sees the tokens of every stimulus packed on one axis with no
    batch axis (Qwen2-VL's vision patches, the Omni audio tower's frames), ``counts[i]`` of them
    stimulus ``i``'s. ``kind="rows"``: a block sees several rows per stimulus (Idefics3's image
    crops), ``counts[i]`` of them stimulus ``i``'s; their pooled vectors are averaged.
    """

    def __init__(self, counts: torch.Tensor, kind: str) -> None:
        if kind not in ("tokens", "rows"):
            raise ValueError(f"unknown segment kind {kind!r}")
        self.counts = counts.long().flatten()
        self.kind = kind
        self.total = int(self.counts.sum())

    @property
    def shape(self) -> tuple[int]:
        """1-D: never equal to a ``[batch, tokens]`` mask's shape, where masks are matched."""
        return (self.total,)

    def index(self, device: torch.device) -> torch.Tensor:
        """The stimulus of each row: ``[0]*counts[0] + [1]*counts[1] + ...``."""
        ids = torch.arange(self.counts.numel(), device=device)
        return ids.repeat_interleave(self.counts.to(device))

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of the rows of each stimulus: ``[total, U] -> [n_items, U]``."""
        out = torch.zeros(self.counts.numel(), x.shape[-1], dtype=x.dtype, device=x.device)
        out = out.index_add(0, self.index(x.device), x)
        return out / self.counts.to(x.device, x.dtype).clamp_min(1).unsqueeze(-1)

    def last(self, x: torch.Tensor) -> torch.Tensor:
        """The last row of each stimulus."""
        ends = self.counts.to(x.device).cumsum(0) - 1
        return x[ends.clamp_min(0)]


@dataclass(frozen=True)
class ColumnEdit:
    """An edit that changes only a few units (columns of ``Z``) of each group of rows.

    The batch axis is cut into ``columns.shape[0]`` equal consecutive groups (intervene stacks
    one perturbation per group); group ``g`` changes at most the units ``columns[g]`` (distinct
    within a group; padding with units the edit leaves unchanged is allowed). Calling the edit
    applies it to the whole ``Z`` (the dense path); ``on_columns(z_s)`` applies it to
    ``z_s[..., c] = Z[..., columns[g, c]]`` (rows of group ``g``), so that the hook can skip the
    adaptor's two H x H products per token (see :func:`_edited_columns`).

    Parameters
    ----------
    dense : callable
        ``Z -> Z'`` on all units.
    columns : Tensor, shape (G, s), int64
        The units each group may change.
    on_columns : callable
        ``z_s -> z_s'`` with ``z_s`` of shape ``Z.shape[:-1] + (s,)``.
    """

    dense: Edit
    columns: torch.Tensor
    on_columns: Edit

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.dense(z)


@dataclass
class HookPoint:
    """The one place where an area's sheet activation ``Z`` is read or changed.

    ``column_edits``: a single :class:`ColumnEdit` is applied on its columns only (False: every
    edit takes the dense path ``Z = X W``, edit, ``Z' W^+``; for tests and benchmarks).
    """

    name: str
    area: int
    n_units: int
    edits: list[Edit] = field(default_factory=list)
    column_edits: bool = True

    def add_edit(self, fn: Edit) -> Callable[[], None]:
        """Register ``fn(Z) -> Z``; returns a function that removes it."""
        self.edits.append(fn)
        return lambda: self.edits.remove(fn) if fn in self.edits else None


def _column_edit(hook_point: HookPoint, width: int, identity: bool) -> ColumnEdit | None:
    """The hook point's edit when it is one :class:`ColumnEdit` worth applying on its columns.

    With an adaptor the column path costs ``2 H s`` multiply-adds per token against the dense
    ``2 H^2``; above ``s = H / 2`` the gathers are not worth it. Without one (identity, direct)
    it is a gather and a scatter, never more than the dense ``torch.where``.
    """
    edits = hook_point.edits
    if not hook_point.column_edits or len(edits) != 1 or not isinstance(edits[0], ColumnEdit):
        return None
    edit = edits[0]
    if edit.columns.ndim != 2 or not (identity or 2 * edit.columns.shape[1] <= width):
        return None
    return edit


def _edited_columns(
    x: torch.Tensor, edit: ColumnEdit, adaptor: Adaptor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X_hat, Z'_S)`` for a column edit: ``X_hat = X + (Z'_S - Z_S) W^+_S``.

    ``Z_S = X W[:, S]`` and ``W^+_S`` (rows ``S`` of ``W^+``, cached with ``W^+``) are per group
    of rows; without an adaptor (``W = I``) ``X_hat`` is ``X`` with the columns ``S`` replaced
    (a scatter: the same bits as the dense ``torch.where``).
    """
    shape = x.shape
    groups, s = edit.columns.shape
    if shape[0] % groups:
        raise RuntimeError(
            f"column edit for {groups} groups of rows got activations {tuple(shape)}"
        )
    xg = x.reshape(groups, -1, shape[-1])
    idx = edit.columns.to(x.device)
    wide = idx[:, None, :].expand(-1, xg.shape[1], -1)
    if adaptor is None:
        z_s = torch.gather(xg, 2, wide)
    else:
        w_s = adaptor.weight[:, idx].to(x.dtype).permute(1, 0, 2)  # [G, H, s]
        z_s = torch.bmm(xg, w_s)
    new = edit.on_columns(z_s.reshape(*shape[:-1], s)).reshape(groups, -1, s)
    if adaptor is None:
        x_hat = xg.scatter(2, wide, new)
    else:
        x_hat = torch.baddbmm(xg, new - z_s, adaptor.pinv()[idx].to(x.dtype))  # [G, s, H]
    return x_hat.reshape(shape), new.reshape(*shape[:-1], s)


def _with_columns(pooled: torch.Tensor, pooled_cols: torch.Tensor, columns: torch.Tensor):
    """``pooled[P, H]`` with the columns of each group replaced by ``pooled_cols[P, s]``.

    Pooling is linear and acts per column, so pooling ``Z'`` equals pooling ``Z`` and then
    writing the pooled edited columns in.
    """
    groups = columns.shape[0]
    if pooled.shape[0] % groups:
        raise RuntimeError(f"column edit for {groups} groups pooled {pooled.shape[0]} rows")
    index = columns.to(pooled.device).repeat_interleave(pooled.shape[0] // groups, 0)
    return pooled.scatter(1, index, pooled_cols.to(pooled.dtype))


def _split_output(output):
    if isinstance(output, torch.Tensor):
        return output, lambda h: h
    if isinstance(output, tuple):
        return output[0], lambda h: (h, *output[1:])
    if hasattr(output, "keys"):
        key = next(iter(output.keys()))

        def put(h):
            output[key] = h
            return output

        return output[key], put
    raise TypeError(f"cannot read block output of type {type(output)}")


def _channels_last(x: torch.Tensor, put):
    """[B, C, H, W] as a [B, H, W, C] view, and a ``put`` taking channels-last back to NCHW."""
    if x.ndim != 4:
        raise TypeError(f"a CNN stage gave activations of shape {tuple(x.shape)}, not NCHW")
    return x.permute(0, 2, 3, 1), lambda h: put(h.permute(0, 3, 1, 2))


class TopoModel(nn.Module):
    """A backbone with a sheet and hook points on its recorded blocks."""

    def __init__(
        self,
        backbone: nn.Module,
        blocks: list[Block],
        sheet: Sheet,
        mode: str = "adaptor",
        adaptor_noise: float = DEFAULT_ADAPTOR_NOISE,
        seed: int = 0,
        processors: dict | None = None,
        source: dict | None = None,
        sheet_source: str | Path | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise TopoInputError(f"unknown mode {mode!r}; choose one of {MODES}")
        sheet.validate([AreaSpec(b.name, b.n_units, b.stream) for b in blocks], sheet_source)
        self.backbone = backbone
        self.blocks = blocks
        self.sheet = sheet
        self.mode = mode
        self.adaptor_noise = adaptor_noise if mode == "adaptor" else 0.0
        self.processors = processors or {}
        self.source = source or {}
        gen = torch.Generator().manual_seed(seed)
        self.adaptors = nn.ModuleList(
            [Adaptor(b.n_units, self.adaptor_noise, gen) for b in blocks]
            if mode == "adaptor"
            else []
        )
        self.hook_points = {b.name: HookPoint(b.name, k, b.n_units) for k, b in enumerate(blocks)}
        self._recording = False
        self._bypass = False
        self.fast_path = True
        self._pooling = "mean"
        self._masks: list[torch.Tensor] = []
        self._records: dict[int, torch.Tensor] = {}
        self._handles = [
            b.module.register_forward_hook(self._make_hook(k)) for k, b in enumerate(blocks)
        ]
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    # -- hooks -----------------------------------------------------------------------
    def _make_hook(self, k: int):
        hook_point = self.hook_points[self.blocks[k].name]

        nchw = self.blocks[k].layout == "nchw"

        def hook(_module, _inputs, output):
            if self._bypass:
                return output
            x, put = _split_output(output)
            if nchw:
                # a CNN stage: units are channels; Z = X W mixes channels (a 1x1 convolution),
                # seen channels-last [B, H, W, C] so that edits index units on the last axis
                x, put = _channels_last(x, put)
            adaptor = self.adaptors[k] if self.mode == "adaptor" else None
            identity = adaptor is None or adaptor.passes_through()
            if self.fast_path and not hook_point.edits:
                # W is invertible, so X_hat = X W W^+ = X: pass X on untouched, and since pooling
                # is linear, pool first and project after (B x H x H instead of B x T x H x H).
                # Also while W trains: the student's output does not depend on W, so W's
                # gradient comes only through the recorded pool(X) W (the spatial loss); the
                # inverse and the backward through the frozen backbone were wasted work
                # (tests/test_train.py::test_the_adaptor_gradient_reaches_w_only_through_the_
                # recorded_z; 3.4-7.9x faster steps, docs/performance.md)
                if self._recording:
                    pooled = self._pool(x)
                    self._records[k] = pooled if identity else pooled @ adaptor.weight.float()
                return output
            column_edit = _column_edit(hook_point, x.shape[-1], identity)
            if column_edit is not None and (identity or self.fast_path):
                # X_hat = X + (Z'_S - Z_S) W^+_S: only the edited columns S are projected
                # (B x T x H x |S| twice instead of B x T x H x H twice); units outside S keep
                # X W W^+ = X, as on the unedited fast path
                x_hat, z_cols = _edited_columns(x, column_edit, None if identity else adaptor)
                if self._recording:
                    pooled = self._pool(x)
                    pooled = pooled if identity else pooled @ adaptor.weight.float()
                    self._records[k] = _with_columns(
                        pooled, self._pool(z_cols), column_edit.columns
                    )
                return put(x_hat)
            z = x if identity else x @ adaptor.weight.to(x.dtype)
            for edit in hook_point.edits:
                z = edit(z)
            if self._recording:
                self._records[k] = self._pool(z)
            if identity:
                return put(z) if hook_point.edits else output
            return put(z @ adaptor.pinv().to(z.dtype))

        return hook

    def _pool(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 2:  # packed tokens with no batch axis (e.g. Qwen2-VL's vision patches)
            packed = self._segments("tokens", z.shape[0])
            if packed is not None:
                flat = z.float()
                return packed.last(flat) if self._pooling == "last" else packed.mean(flat)
            z = z.unsqueeze(0)
        pooled = self._pool_rows(z)
        # several rows per stimulus (image crops): one vector per stimulus
        crops = self._segments("rows", pooled.shape[0])
        return crops.mean(pooled) if crops is not None else pooled

    def _segments(self, kind: str, total: int) -> Segments | None:
        return next(
            (m for m in self._masks if isinstance(m, Segments) and m.kind == kind and
             m.total == total),
            None,
        )

    def _pool_rows(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 4:  # a CNN stage, channels-last: positions H x W are the tokens
            z = z.flatten(1, 2)
        mask = next(
            (m for m in self._masks if isinstance(m, torch.Tensor) and m.shape == z.shape[:2]),
            None,
        )
        if mask is None:
            mask = torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)
        mask = mask.to(z.device)
        if self._pooling == "last":
            last = mask.long().cumsum(1).argmax(1)
            return z[torch.arange(z.shape[0], device=z.device), last].float()
        m = mask.to(torch.float32).unsqueeze(-1)
        return (z.float() * m).sum(1) / m.sum(1).clamp_min(1.0)

    def keep_teacher(self, base: TopoModel | None = None) -> None:
        """Remember the recorded blocks' base weights: direct-mode training changes them, and
        :meth:`bypass` must still run the base model (the distillation teacher).

        ``base``: a model with the same blocks holding the base weights (to resume a trained
        checkpoint); by default the blocks' weights as they are now. Kept once: a second call
        keeps the first teacher."""
        if getattr(self, "_teacher", None):
            return
        source = base if base is not None else self
        self._teacher = {
            name: p.detach().clone().to(self.device)
            for b in source.blocks
            for name, p in b.module.named_parameters(prefix=b.name)
        }

    @contextmanager
    def bypass(self):
        """Run the bare backbone: no adaptors, no edits, no recording (the frozen teacher).

        After :meth:`keep_teacher` (direct-mode training), the recorded blocks run with their
        kept weights too, swapped in for the duration (no copy)."""
        previous, self._bypass = self._bypass, True
        swapped = self._swap_teacher()
        try:
            yield
        finally:
            self._swap_teacher(swapped)
            self._bypass = previous

    def _swap_teacher(self, params: list | None = None) -> list:
        teacher = getattr(self, "_teacher", None)
        if not teacher:
            return []
        if params is None:
            params = [
                (p, teacher[name])
                for b in self.blocks
                for name, p in b.module.named_parameters(prefix=b.name)
            ]
        with torch.no_grad():
            for p, kept in params:
                if kept.device != p.device:  # the model moved after the teacher was kept
                    kept.data = kept.data.to(p.device)
                p.data, kept.data = kept.data, p.data
        return params

    def output_is_the_backbones(self) -> bool:
        """True when the forward output equals the bare backbone's by construction.

        Adaptor mode on the fast path with no edits passes X on untouched (X W W^+ = X), so the
        network's output cannot differ from the frozen teacher's: a training step needs no
        teacher pass and its self-distillation loss is exactly 0.
        """
        return (
            self.mode == "adaptor"
            and self.fast_path
            and not any(h.edits for h in self.hook_points.values())
        )

    @contextmanager
    def exact(self):
        """Compute ``X_hat = Z W^+`` literally (no pass-through), e.g. to measure fidelity."""
        previous, self.fast_path = self.fast_path, False
        try:
            yield
        finally:
            self.fast_path = previous

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- running ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def modalities(self) -> set[str]:
        return set(self.processors)

    def forward(self, inputs: dict, modality: str):
        """Run the backbone on prepared inputs of one modality; returns its raw output."""
        fwd = self.backbone
        if modality == "text" and hasattr(fwd, "get_text_features"):
            return fwd.get_text_features(**select_inputs(inputs, ("input_ids", "attention_mask")))
        if modality == "text" and getattr(fwd, "main_input_name", "") == "pixel_values":
            # an image-first VLM (BLIP-2) needs pixels in its forward: text runs its LM alone
            language_model = getattr(fwd, "language_model", None)
            if language_model is not None:
                return language_model(**inputs)
        if modality == "image" and hasattr(fwd, "get_image_features"):
            return fwd.get_image_features(**select_inputs(inputs, IMAGE_FEATURE_INPUTS))
        if modality == "audio" and hasattr(fwd, "get_audio_features"):
            return fwd.get_audio_features(**select_inputs(inputs, AUDIO_FEATURE_INPUTS))
        return fwd(**inputs)

    def record(
        self, inputs: dict, modality: str, pooling: str = "mean", masks: Sequence = ()
    ) -> tuple[object, torch.Tensor]:
        """Forward pass that returns (backbone output, pooled sheet activations [B, U]).

        Areas that do not run for this modality (e.g. a vision tower on text) are zero.
        """
        if pooling not in POOLINGS:
            raise TopoInputError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        self._recording, self._pooling, self._masks, self._records = True, pooling, list(masks), {}
        try:
            out = self.forward(inputs, modality)
        finally:
            self._recording = False
        records = self._records
        self._records = {}
        batch = next(iter(records.values())).shape[0] if records else 0
        if not records:
            raise TopoInputError(f"no recorded area ran for {modality} input")
        _check_widths(self.blocks, records)
        parts = [
            records[k] if k in records else torch.zeros(batch, b.n_units, device=self.device)
            for k, b in enumerate(self.blocks)
        ]
        return out, torch.cat(parts, dim=1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def adaptor_state(self) -> dict[str, torch.Tensor]:
        return {
            b.name: a.weight.detach().cpu().contiguous() for b, a in zip(self.blocks, self.adaptors)
        }

    def load_adaptor_state(self, state: dict[str, torch.Tensor], source: str | Path) -> None:
        for b, a in zip(self.blocks, self.adaptors):
            if b.name not in state:
                raise TopoInputError(f"adaptor weights for {b.name!r} are missing", source)
            w = state[b.name]
            if tuple(w.shape) != tuple(a.weight.shape):
                raise TopoInputError(
                    f"adaptor {b.name!r} is {tuple(w.shape)}, model needs {tuple(a.weight.shape)}",
                    source,
                )
            a.set_weight(w)


def _check_widths(blocks: list[Block], records: dict[int, torch.Tensor]) -> None:
    """One line naming the area whose recorded width is not the sheet's (never a matmul error)."""
    for k, rec in records.items():
        if rec.shape[-1] != blocks[k].n_units:
            raise TopoInputError(
                f"area {blocks[k].name} gave {rec.shape[-1]} units per token, but the sheet "
                f"gives it {blocks[k].n_units}: this block's width was misread (pass --areas "
                "to record other blocks, and report the model family)"
            )


def build_topo_model(
    base: str | Path,
    layout: str = "stacked",
    mm_per_unit: float = 1.0,
    width: int | None = None,
    areas: Sequence[str] | None = None,
    mode: str = "adaptor",
    adaptor_noise: float = DEFAULT_ADAPTOR_NOISE,
    permutation_seed: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    sheet: Sheet | None = None,
    sheet_source: str | Path | None = None,
    allow_pickle: bool = False,
    random_init: int | None = None,
) -> TopoModel:
    """Load a base model and give it a sheet (new, or a saved one to validate).

    ``random_init``: re-initialise the backbone's weights with this seed (the untrained control
    of issue 16, see :func:`~topocli.models.backbones.randomly_initialise`); the seed is part of
    the model's identity, so its caches and results never pass for the trained model's.
    """
    path = resolve_base(base)
    backbone, processors, fmt = load_backbone(path, dtype, trust_remote_code, allow_pickle)
    if random_init is not None:
        randomly_initialise(backbone, random_init)
    recordable = recordable_module(backbone)
    blocks = select_blocks(discover_blocks(recordable), areas)
    specs = [AreaSpec(b.name, b.n_units, b.stream) for b in blocks]
    if sheet is None:
        streams = list(dict.fromkeys(b.stream for b in blocks))
        dual = hasattr(backbone, "get_text_features") and hasattr(backbone, "get_image_features")
        sheet = Sheet.build(
            specs, layout, mm_per_unit, width, default_stages(streams, dual), permutation_seed
        )
    source = {
        "base_model": str(base),
        "base_path": str(path),
        "revision": revision_of(path),
        "weights_sha256": weights_fingerprint(path),
        "model_type": getattr(backbone.config, "model_type", type(backbone).__name__),
        "adaptor_noise": adaptor_noise if mode == "adaptor" else 0.0,
        "seed": seed,
        "trust_remote_code": trust_remote_code,
        "weights_format": fmt,
    }
    if random_init is not None:
        source["random_init"] = int(random_init)
    wrapper_model = backbone if recordable is backbone else EncoderOnly(backbone, recordable)
    return TopoModel(
        wrapper_model, blocks, sheet, mode, adaptor_noise, seed, processors, source, sheet_source
    )
