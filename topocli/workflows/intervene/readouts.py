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

READOUTS = ("probe", "lm-loss", "fidelity", "generation")
# read-outs that need a causal LM's next-token logits
LM_READOUTS = ("lm-loss", "generation")
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
    for name in [r for r in LM_READOUTS if r in readouts]:
        if modality != "text":
            raise TopoInputError(f"--readout {name} needs text stimuli, these are {modality}")
        if not is_causal_lm(model):
            kind = model.source.get("model_type") or type(model.backbone).__name__
            raise TopoInputError(
                f"--readout {name} needs a causal language model with an LM head; this "
                f"{kind} model ({type(model.backbone).__name__}) has none (masked-token loss is "
                "not supported); use --readout fidelity or probe"
            )
    if "probe" in readouts and n_conditions < 2:
        raise TopoInputError("--readout probe needs stimuli of at least 2 conditions")


def _repeat(value: Any, times: int) -> Any:
    from topocli.models.topo_model import Segments

    if isinstance(value, Segments) and times > 1:  # packed tokens / split crops of VLMs
        return Segments(value.counts.repeat(times), value.kind)
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
    generation_tokens: int = 0
    continuation: np.ndarray | None = None


def prepare_stimuli(
    model: Any,
    stim_set: Any,
    batch_size: int,
    readouts: Sequence[str],
    subset: np.ndarray | None = None,
    generation_tokens: int = 8,
) -> Prepared:
    """Tokenise / preprocess once (all stimuli, or the rows of ``subset``), in length order.

    ``generation_tokens``: greedy tokens per prompt when ``readouts`` has ``generation``.
    """
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
            # no key/value cache: nothing reads it, and a replayed prefix (PrefixReuse) would
            # leave its first layers unfilled
            batch.inputs["use_cache"] = False
        batches.append(batch)
    want_final = "fidelity" in readouts or "probe" in readouts
    n_gen = int(generation_tokens) if "generation" in readouts else 0
    return Prepared(batches, len(stim_set), causal, want_final, "lm-loss" in readouts, n_gen)


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
    continuation: np.ndarray | None = None
    continuation_loss: np.ndarray | None = None


def run_baseline(model: Any, prep: Prepared, progress: Any = None) -> Baseline:
    """Unperturbed final representations and LM losses (the read-outs' point of comparison).

    The same forward as a perturbed pass (:func:`evaluate`), with no edit registered.
    """
    final = loss = cont = cont_loss = None
    task = progress.add_task("unperturbed", total=prep.n) if progress else None
    with torch.no_grad():
        for batch in prep.batches:
            f, batch_loss = _forward(model, batch, 1, prep)
            if prep.generation_tokens:
                tokens = greedy_continuation(model, batch, 1, prep.generation_tokens)
                if cont is None:
                    cont = np.full((prep.n, prep.generation_tokens), -1, dtype=np.int64)
                    cont_loss = np.full(prep.n, np.nan)
                cont[batch.indices] = tokens.cpu().numpy()
                cont_loss[batch.indices] = continuation_losses(model, batch, 1, tokens)
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
    return Baseline(final, loss, cont, cont_loss)


def _rows_limit(model: Any, batch: Any, prep: Prepared) -> int:
    limit = MAX_ROWS_CPU if model.device.type == "cpu" else MAX_ROWS_GPU
    if prep.want_loss or prep.generation_tokens:
        width = batch.inputs["input_ids"].shape[1] + prep.generation_tokens
        vocab = int(getattr(model.backbone.config, "vocab_size", 0) or 50000)
        limit = min(limit, max(1, LOGIT_BUDGET // max(1, width * vocab)))
    return limit


def rows_per_forward(model: Any, batch: Any, prep: Prepared) -> int:
    """Perturbations of ``batch`` that one forward holds (rows cap / batch rows)."""
    return max(1, _rows_limit(model, batch, prep) // max(1, len(batch.indices)))


@dataclass
class Outcome:
    """Per-perturbation, per-stimulus read-outs of one dose: arrays [M, N]."""

    cosine: np.ndarray | None = None
    loss: np.ndarray | None = None
    predicted: np.ndarray | None = None
    agreement: np.ndarray | None = None
    continuation_loss: np.ndarray | None = None


def new_outcome(m_total: int, prep: Prepared, base: Baseline, probe: Any = None) -> Outcome:
    """Empty [M, N] read-out arrays (NaN, or -1 for predictions) for ``m_total`` perturbations."""
    out = Outcome()
    if base.final is not None and prep.want_final:
        out.cosine = np.full((m_total, prep.n), np.nan)
    if prep.want_loss:
        out.loss = np.full((m_total, prep.n), np.nan)
    if probe is not None:
        out.predicted = np.full((m_total, prep.n), -1, dtype=np.int64)
    if prep.generation_tokens:
        out.agreement = np.full((m_total, prep.n), np.nan)
        out.continuation_loss = np.full((m_total, prep.n), np.nan)
    return out


def evaluate(
    model: Any,
    prep: Prepared,
    pset: PerturbationSet,
    base: Baseline,
    probe: Any = None,
    progress: Any = None,
    label: str = "perturbed",
    rows: Sequence[int] | np.ndarray | None = None,
    out: Outcome | None = None,
    reuse: Any = None,
) -> Outcome:
    """Every perturbation of ``pset`` (or those of ``rows``) on every prepared stimulus, batched.

    Parameters
    ----------
    model, prep, pset, base, probe, progress, label
        As for the unperturbed pass; ``probe`` gives the predictions.
    rows : sequence of int, optional
        The perturbations to evaluate (default: all of ``pset``).
    out : Outcome, optional
        [M, N] arrays to fill (default: new ones, :func:`new_outcome`).
    reuse : topocli.models.prefix.PrefixReuse, optional
        Replays the unperturbed prefix (blocks up to the first edited one) of each batch.

    Returns
    -------
    Outcome
        Stimuli that were not prepared (a subset) are NaN (or -1 for predictions).
    """
    from contextlib import nullcontext

    todo = np.arange(pset.n) if rows is None else np.asarray(rows, dtype=np.int64)
    out = new_outcome(pset.n, prep, base, probe) if out is None else out
    need_cos = out.cosine is not None
    if need_cos:
        ref = base.final / np.maximum(np.linalg.norm(base.final, axis=1, keepdims=True), 1e-30)
    total = sum(len(b.indices) for b in prep.batches) * todo.size
    task = progress.add_task(label, total=total) if progress else None
    with torch.no_grad():
        for i_batch, batch in enumerate(prep.batches):
            b = len(batch.indices)
            chunk = rows_per_forward(model, batch, prep)
            for c0 in range(0, todo.size, chunk):
                sel = todo[c0 : c0 + chunk]
                n_sel = sel.size
                scope = reuse.pass_for(i_batch, b, n_sel) if reuse is not None else nullcontext()
                with pset.applied_rows(sel):
                    with scope:
                        final, loss = _forward(model, batch, n_sel, prep)
                    if prep.generation_tokens:
                        # not replayed: the generated tokens differ between perturbations
                        _generation_outcome(model, batch, sel, prep, out)
                idx = batch.indices
                if final is not None:
                    f = final.cpu().numpy().astype(np.float64).reshape(n_sel, b, -1)
                    if need_cos:
                        fn = f / np.maximum(np.linalg.norm(f, axis=2, keepdims=True), 1e-30)
                        cos = np.einsum("mbd,bd->mb", fn, ref[idx])
                        out.cosine[np.ix_(sel, idx)] = cos
                    if probe is not None:
                        pred = probe.predict(f.reshape(-1, f.shape[-1])).reshape(n_sel, b)
                        out.predicted[np.ix_(sel, idx)] = pred
                if loss is not None:
                    out.loss[np.ix_(sel, idx)] = loss.reshape(n_sel, b)
                if progress:
                    progress.advance(task, b * n_sel)
    return out


def _last_real(mask: torch.Tensor) -> torch.Tensor:
    """Column of the last real token per row (right or left padding)."""
    cols = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), cols, torch.full_like(cols, -1)).max(1).values


def _lm_inputs(batch: Any, times: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    ids = _repeat(batch.inputs["input_ids"], times)
    mask = batch.inputs.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else _repeat(mask, times)
    rest = {
        k: _repeat(v, times)
        for k, v in batch.inputs.items()
        if k not in ("input_ids", "attention_mask", "output_hidden_states", "token_type_ids")
    }
    return ids, mask, rest


def _appended(ids: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor):
    """``tokens`` [R, G] written right after each row's last real token (columns added)."""
    rows, g = tokens.shape
    pad = torch.zeros(rows, g, dtype=ids.dtype, device=ids.device)
    ids = torch.cat([ids, pad], 1)
    mask = torch.cat([mask, torch.zeros_like(pad, dtype=mask.dtype)], 1)
    at = _last_real(mask[:, : ids.shape[1] - g]) + 1
    cols = at[:, None] + torch.arange(g, device=ids.device)[None, :]
    r = torch.arange(rows, device=ids.device)[:, None]
    ids[r, cols] = tokens.to(ids.dtype)
    mask[r, cols] = 1
    return ids, mask, at


def greedy_continuation(model: Any, batch: Any, times: int, steps: int) -> torch.Tensor:
    """Greedy next tokens [times * B, steps] after each prompt (no key/value cache).

    Each step runs the whole sequence with the token of the previous step written right after
    the last real token, so right-padded rows stay contiguous (positions unchanged).
    """
    from topocli.models.inputs import autocast_for

    ids, mask, rest = _lm_inputs(batch, times)
    rows = torch.arange(ids.shape[0], device=ids.device)
    out = torch.zeros(ids.shape[0], steps, dtype=torch.long, device=ids.device)
    for s in range(steps):
        last = _last_real(mask)
        with autocast_for(model):
            logits = model.forward(
                {"input_ids": ids, "attention_mask": mask, **rest}, "text"
            ).logits
        out[:, s] = logits[rows, last].float().argmax(-1)
        ids, mask, _ = _appended(ids, mask, out[:, s : s + 1])
    return out


def continuation_losses(model: Any, batch: Any, times: int, tokens: torch.Tensor) -> np.ndarray:
    """Mean cross-entropy per row of ``tokens`` [times * B, G] read after each prompt."""
    from topocli.models.inputs import autocast_for

    ids, mask, rest = _lm_inputs(batch, times)
    g = tokens.shape[1]
    ids, mask, at = _appended(ids, mask, tokens)
    with autocast_for(model):
        logits = model.forward({"input_ids": ids, "attention_mask": mask, **rest}, "text").logits
    # the token at column at + s is predicted by the logits at column at + s - 1
    cols = (at - 1)[:, None] + torch.arange(g, device=ids.device)[None, :]
    r = torch.arange(ids.shape[0], device=ids.device)[:, None]
    pred = logits[r, cols].float()
    ce = torch.nn.functional.cross_entropy(
        pred.reshape(-1, pred.shape[-1]), tokens.reshape(-1).to(pred.device), reduction="none"
    )
    return ce.view(-1, g).mean(1).cpu().numpy().astype(np.float64)


def _generation_outcome(
    model: Any, batch: Any, sel: np.ndarray, prep: Prepared, out: Outcome
) -> None:
    """Token agreement with the unperturbed continuation, and that continuation's loss."""
    n_sel, b, idx = sel.size, len(batch.indices), batch.indices
    base = torch.as_tensor(prep.continuation[idx], device=model.device)
    tokens = greedy_continuation(model, batch, n_sel, prep.generation_tokens)
    same = (tokens.view(n_sel, b, -1) == base[None]).float().mean(2).cpu().numpy()
    out.agreement[np.ix_(sel, idx)] = same
    loss = continuation_losses(model, batch, n_sel, _repeat(base, n_sel))
    out.continuation_loss[np.ix_(sel, idx)] = loss.reshape(n_sel, b)


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
