"""Read-outs of the model's behaviour: fidelity, LM loss and a probe, unperturbed and perturbed.

- ``fidelity``: cosine between each stimulus's final representation under the intervention and
  unperturbed;
- ``lm-loss``: mean next-token cross-entropy per stimulus (causal language models only);
- ``probe``: a classifier trained on the unperturbed final representations of the even half of
  the stimuli, applied to the odd half.

The stimuli are tokenised once (:func:`prepare_stimuli`); :func:`run_baseline` is the unperturbed
pass (final representations and losses only: the sheet activations of the reference come from the
activation pipeline), :func:`evaluate` the batched perturbed passes of one dose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from topocli.errors import TopoInputError
from topocli.workflows.intervene.perturbations import PerturbationSet

READOUTS = ("probe", "lm-loss", "fidelity")
CLASSIFIERS = ("logistic", "centroid")
# rows of one forward pass (perturbations x stimuli); logits of an LM are capped separately
MAX_ROWS_CPU = 256
MAX_ROWS_GPU = 2048
LOGIT_BUDGET = 1 << 26


def is_causal_lm(model: Any) -> bool:
    name = type(model.backbone).__name__
    return name.endswith("ForCausalLM") or name.endswith("LMHeadModel")


def check_readouts(model: Any, readouts: Sequence[str], modality: str, n_conditions: int) -> None:
    """A read-out the model or stimuli cannot give is bad input."""
    if "lm-loss" in readouts:
        if modality != "text":
            raise TopoInputError(f"--readout lm-loss needs text stimuli, these are {modality}")
        if not is_causal_lm(model):
            kind = model.source.get("model_type") or type(model.backbone).__name__
            raise TopoInputError(
                f"--readout lm-loss needs a causal language model with an LM head; this "
                f"{kind} model ({type(model.backbone).__name__}) has none (masked-token loss is "
                "not supported); use --readout fidelity or probe"
            )
    if "probe" in readouts and n_conditions < 2:
        raise TopoInputError("--readout probe needs stimuli of at least 2 conditions")


def _repeat(value: Any, times: int) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim >= 1 and times > 1:
        return value.repeat(times, *([1] * (value.ndim - 1)))
    return value


def token_losses(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Mean next-token cross-entropy per row over valid (token, next token) pairs; NaN if none."""
    pred = logits[:, :-1].float()
    target = input_ids[:, 1:]
    valid = (mask[:, 1:].bool() & mask[:, :-1].bool()).float()
    ce = torch.nn.functional.cross_entropy(
        pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none"
    ).view(target.shape)
    n = valid.sum(1)
    loss = (ce * valid).sum(1) / n.clamp_min(1.0)
    loss = torch.where(n > 0, loss, torch.full_like(loss, float("nan")))
    return loss.cpu().numpy().astype(np.float64)


@dataclass
class Prepared:
    """Prepared batches of the stimuli, reused by every perturbation."""

    batches: list[Any]
    n: int
    causal: bool
    want_final: bool
    want_loss: bool


def prepare_stimuli(
    model: Any,
    stim_set: Any,
    batch_size: int,
    readouts: Sequence[str],
    subset: np.ndarray | None = None,
) -> Prepared:
    """Tokenise / preprocess once (all stimuli, or the rows of ``subset``), in length order."""
    from topocli.models.inputs import batch_order, prepare_batch

    causal = is_causal_lm(model)
    ordered = np.concatenate(list(batch_order(stim_set, max(1, len(stim_set)))))
    if subset is not None:
        ordered = ordered[np.isin(ordered, subset)]
    batches = []
    for start in range(0, ordered.size, batch_size):
        rows = ordered[start : start + batch_size]
        batch = prepare_batch(model, [stim_set.stimuli[i] for i in rows], rows)
        if causal:
            batch.inputs["output_hidden_states"] = True
        batches.append(batch)
    want_final = "fidelity" in readouts or "probe" in readouts
    return Prepared(batches, len(stim_set), causal, want_final, "lm-loss" in readouts)


def _forward(model: Any, batch: Any, times: int, prep: Prepared) -> tuple[Any, Any]:
    from topocli.models.inputs import autocast_for, final_representation

    inputs = {k: _repeat(v, times) for k, v in batch.inputs.items()}
    masks = [_repeat(m, times) for m in batch.masks]
    with autocast_for(model):
        out = model.forward(inputs, batch.modality)
    final = final_representation(out, masks) if prep.want_final else None
    loss = None
    if prep.want_loss:
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(inputs["input_ids"])
        loss = token_losses(out.logits, inputs["input_ids"], mask)
    return final, loss


@dataclass
class Baseline:
    """The unperturbed model's outputs per stimulus."""

    final: np.ndarray | None
    loss: np.ndarray | None


def run_baseline(model: Any, prep: Prepared, progress: Any = None) -> Baseline:
    """Unperturbed final representations and LM losses (the read-outs' point of comparison).

    The same forward as a perturbed pass (:func:`evaluate`), with no edit registered.
    """
    final = loss = None
    task = progress.add_task("unperturbed", total=prep.n) if progress else None
    with torch.no_grad():
        for batch in prep.batches:
            f, batch_loss = _forward(model, batch, 1, prep)
            if f is not None:
                if final is None:
                    final = np.zeros((prep.n, f.shape[1]), dtype=np.float64)
                final[batch.indices] = f.cpu().numpy()
            if batch_loss is not None:
                if loss is None:
                    loss = np.full(prep.n, np.nan)
                loss[batch.indices] = batch_loss
            if progress:
                progress.advance(task, len(batch.indices))
    return Baseline(final, loss)


def _rows_limit(model: Any, batch: Any, prep: Prepared) -> int:
    limit = MAX_ROWS_CPU if model.device.type == "cpu" else MAX_ROWS_GPU
    if prep.want_loss:
        ids = batch.inputs["input_ids"]
        vocab = int(getattr(model.backbone.config, "vocab_size", 0) or 50000)
        limit = min(limit, max(1, LOGIT_BUDGET // max(1, ids.shape[1] * vocab)))
    return limit


@dataclass
class Outcome:
    """Per-perturbation, per-stimulus read-outs of one dose: arrays [M, N]."""

    cosine: np.ndarray | None = None
    loss: np.ndarray | None = None
    predicted: np.ndarray | None = None


def evaluate(
    model: Any,
    prep: Prepared,
    pset: PerturbationSet,
    base: Baseline,
    probe: Any = None,
    progress: Any = None,
    label: str = "perturbed",
) -> Outcome:
    """Every perturbation of ``pset`` on every prepared stimulus, batched; [M, N] arrays.

    Stimuli that were not prepared (a subset) are NaN (or -1 for predictions).
    """
    m_total = pset.n
    out = Outcome()
    need_cos = base.final is not None and prep.want_final
    if need_cos:
        out.cosine = np.full((m_total, prep.n), np.nan)
        ref = base.final / np.maximum(np.linalg.norm(base.final, axis=1, keepdims=True), 1e-30)
    if prep.want_loss:
        out.loss = np.full((m_total, prep.n), np.nan)
    if probe is not None:
        out.predicted = np.full((m_total, prep.n), -1, dtype=np.int64)
    total = sum(len(b.indices) for b in prep.batches) * m_total
    task = progress.add_task(label, total=total) if progress else None
    with torch.no_grad():
        for batch in prep.batches:
            b = len(batch.indices)
            chunk = max(1, _rows_limit(model, batch, prep) // b)
            for j0 in range(0, m_total, chunk):
                j1 = min(m_total, j0 + chunk)
                with pset.applied(j0, j1):
                    final, loss = _forward(model, batch, j1 - j0, prep)
                idx = batch.indices
                if final is not None:
                    f = final.cpu().numpy().astype(np.float64).reshape(j1 - j0, b, -1)
                    if need_cos:
                        fn = f / np.maximum(np.linalg.norm(f, axis=2, keepdims=True), 1e-30)
                        out.cosine[j0:j1, idx] = np.einsum("mbd,bd->mb", fn, ref[idx])
                    if probe is not None:
                        pred = probe.predict(f.reshape(-1, f.shape[-1])).reshape(j1 - j0, b)
                        out.predicted[j0:j1, idx] = pred
                if loss is not None:
                    out.loss[j0:j1, idx] = loss.reshape(j1 - j0, b)
                if progress:
                    progress.advance(task, b * (j1 - j0))
    return out


def fit_probe(features: np.ndarray, labels: np.ndarray, kind: str = "logistic", seed: int = 0):
    """Standardise, then logistic regression or nearest centroid (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind not in CLASSIFIERS:
        raise TopoInputError(
            f"unknown --probe-classifier {kind!r}; choose {', '.join(CLASSIFIERS)}"
        )
    if len(np.unique(labels)) < 2:
        raise TopoInputError("--readout probe needs at least 2 conditions in the even half")
    clf = (
        LogisticRegression(max_iter=5000, random_state=seed)
        if kind == "logistic"
        else NearestCentroid()
    )
    return make_pipeline(StandardScaler(), clf).fit(features, labels)
