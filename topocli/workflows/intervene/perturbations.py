"""The four interventions as per-unit values, applied through the model's hook points.

Every intervention is a set of sheet units and one value per unit, applied with one hook API
(:meth:`topocli.models.topo_model.HookPoint.add_edit`): ``ablate`` and ``mean`` replace the units'
activation at every token, ``steer`` and ``stimulate`` add to it. A :class:`PerturbationSet`
stacks M perturbations along the batch dimension so that a target and all its control draws
share one forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from topocli.errors import TopoInputError
from topocli.models.topo_model import ColumnEdit
from topocli.workflows.intervene.reference import Reference
from topocli.workflows.intervene.targets import Selection, area_bounds

MODES = ("ablate", "mean", "steer", "stimulate")
REPLACE_MODES = ("ablate", "mean")


def perturbation_values(
    mode: str,
    strength: float,
    sel: Selection,
    ref: Reference | None,
    target_norm: float | None = None,
) -> np.ndarray:
    """The value per unit: replacement (ablate, mean) or addition (steer, stimulate).

    ``ref`` may be None for ablate (it needs no reference numbers). ``target_norm``: for a steer
    control, the control's direction is rescaled to this L2 norm (the target's), so the push has
    the same size at other units.
    """
    u = sel.units
    if mode == "ablate":
        return np.zeros(u.size)
    if mode == "mean":
        return ref.mean[u].astype(np.float64)
    if mode == "steer":
        d = strength * ref.direction[u] * sel.weights
        if target_norm is not None:
            norm = float(np.linalg.norm(d))
            d = d * (target_norm / norm) if norm > 0 else d
        return d
    if mode == "stimulate":
        return strength * ref.sd[u] * sel.weights
    raise TopoInputError(f"unknown --mode {mode!r}; choose one of {', '.join(MODES)}")


class PerturbationSet:
    """M perturbations of one kind, as dense per-area masks and values on the model's device.

    :meth:`applied` registers one edit per touched area; rows of the batch are perturbation-major
    (rows ``j*B .. (j+1)*B`` get perturbation ``j``), so M perturbations share one forward pass.
    """

    def __init__(
        self,
        model: Any,
        units: Sequence[np.ndarray],
        values: Sequence[np.ndarray],
        replace: bool,
    ) -> None:
        sheet = model.sheet
        self.model = model
        self.replace = bool(replace)
        self.n = len(units)
        self.areas: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        device = model.device
        for k in range(len(model.blocks)):
            lo, hi = area_bounds(sheet, k)
            mask = np.zeros((self.n, hi - lo), dtype=bool)
            vals = np.zeros((self.n, hi - lo), dtype=np.float32)
            for j, (u, v) in enumerate(zip(units, values)):
                u = np.asarray(u, dtype=np.int64)
                sel = (u >= lo) & (u < hi)
                mask[j, u[sel] - lo] = True
                vals[j, u[sel] - lo] = np.asarray(v, dtype=np.float64)[sel]
            if mask.any():
                self.areas[k] = (
                    torch.from_numpy(mask).to(device),
                    torch.from_numpy(vals).to(device),
                )

    @property
    def edited_areas(self) -> list[int]:
        """The areas (block indices) that some perturbation of the set edits."""
        return sorted(self.areas)

    @contextmanager
    def applied(self, start: int = 0, stop: int | None = None) -> Iterator[None]:
        """Edits for perturbations ``start:stop`` registered while the block runs."""
        stop = self.n if stop is None else stop
        with self.applied_rows(np.arange(start, stop)):
            yield

    @contextmanager
    def applied_rows(self, rows: Sequence[int] | np.ndarray) -> Iterator[None]:
        """Edits for the perturbations ``rows`` (in that order along the batch)."""
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        contiguous = index.numel() > 0 and bool(
            (index == torch.arange(int(index[0]), int(index[0]) + index.numel())).all()
        )
        removers = []
        try:
            for k, (mask, vals) in self.areas.items():
                if contiguous:  # a view: no copy of the masks
                    lo = int(index[0])
                    m, v = mask[lo : lo + index.numel()], vals[lo : lo + index.numel()]
                else:
                    i = index.to(mask.device)
                    m, v = mask[i], vals[i]
                if not bool(m.any()):
                    continue
                hook_point = self.model.hook_points[self.model.blocks[k].name]
                removers.append(hook_point.add_edit(make_edit(m, v, self.replace)))
            yield
        finally:
            for remove in removers:
                remove()


def make_edit(mask: torch.Tensor, values: torch.Tensor, replace: bool) -> ColumnEdit:
    """An edit ``Z -> Z'`` for M stacked perturbations: ``mask``/``values`` are [M, H].

    Units outside the mask keep their exact values (``torch.where``, no arithmetic on them).
    The edit also carries, per perturbation, the units it edits (its ``columns``, padded to the
    largest count with units it leaves alone) and the same edit on those columns only, so that
    the model's hook can skip the adaptor's two H x H products per token
    (:class:`topocli.models.topo_model.ColumnEdit`).
    """
    n_pert = mask.shape[0]

    def apply(z: torch.Tensor, m2: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        n_units = m2.shape[1]
        if z.shape[-1] != n_units or z.shape[0] % n_pert:
            raise RuntimeError(
                f"edit for {n_pert} perturbations x {n_units} units got activations "
                f"{tuple(z.shape)}"
            )
        zz = z.reshape(n_pert, z.shape[0] // n_pert, *z.shape[1:])
        view = (n_pert,) + (1,) * (z.ndim - 1) + (n_units,)
        m = m2.view(view)
        v = v2.view(view).to(device=z.device, dtype=z.dtype)
        new = v if replace else zz + v
        return torch.where(m, new, zz).reshape(z.shape)

    columns = edited_columns(mask)
    m_cols, v_cols = torch.gather(mask, 1, columns), torch.gather(values, 1, columns)
    return ColumnEdit(
        dense=lambda z: apply(z, mask, values),
        columns=columns,
        on_columns=lambda z_s: apply(z_s, m_cols, v_cols),
    )


def edited_columns(mask: torch.Tensor) -> torch.Tensor:
    """Per row of ``mask[M, H]``, its edited units in increasing order, then unedited ones.

    Returns ``[M, s]`` (``s`` = the largest count of a row, at least 1): distinct units per row,
    so that writing them back is well defined; the padding units are not edited.
    """
    width = max(1, int(mask.sum(1).max())) if mask.numel() else 1
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    return order[:, :width].contiguous()


@contextmanager
def perturbed(model: Any, units: np.ndarray, values: np.ndarray, mode: str) -> Iterator[None]:
    """One perturbation applied while the block runs (convenience for library users)."""
    pset = PerturbationSet(model, [units], [values], mode in REPLACE_MODES)
    with pset.applied():
        yield
