"""Self-distillation: the task loss that lets any model train without labels.

The teacher is the same backbone with every hook point bypassed (adaptor mode), which is exactly
the base model: KL(teacher || student) on next-token logits for causal language models,
``1 - cosine`` of the pooled final representation for encoders.
"""

from __future__ import annotations

import torch

from topocli.models.inputs import batch_order, final_representation, prepare_batch
from topocli.models.topo_model import TopoModel
from topocli.stimuli.stimulus_set import StimulusSet


def task_loss(student_out, teacher_out, masks: list) -> torch.Tensor:
    """Self-distillation: KL on logits (language models) or 1 - cosine of final embeddings."""
    logits = getattr(student_out, "logits", None)
    if logits is not None and getattr(teacher_out, "logits", None) is not None:
        t_logp = torch.log_softmax(teacher_out.logits.float(), dim=-1)
        s_logp = torch.log_softmax(logits.float(), dim=-1)
        kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # [B, T]
        mask = next((m for m in masks if m.shape == kl.shape), None)
        if mask is None:
            return kl.mean()
        m = mask.float()
        return (kl * m).sum() / m.sum().clamp_min(1.0)
    s = final_representation(student_out, masks)
    t = final_representation(teacher_out, masks)
    return (1 - torch.nn.functional.cosine_similarity(s, t, dim=-1)).mean()


def distillation_fidelity(model: TopoModel, data: StimulusSet, batch_size: int) -> float:
    """Mean cosine between the model's and the base model's final representations."""
    sims = []
    with torch.no_grad():
        for rows in batch_order(data, batch_size):
            batch = prepare_batch(model, [data.stimuli[i] for i in rows], rows)
            with model.bypass():
                base = final_representation(
                    model.forward(batch.inputs, batch.modality), batch.masks
                )
            with model.exact():
                out, _ = model.record(batch.inputs, batch.modality, "mean", batch.masks)
            mine = final_representation(out, batch.masks)
            sims.append(torch.nn.functional.cosine_similarity(mine, base, dim=-1).cpu())
    return float(torch.cat(sims).mean())
