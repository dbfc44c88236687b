"""``topo train``: build (or resume) a topographic model, train it, measure it on held-out data.

The steps: load the training and held-out stimuli, build the model (or reload the checkpoint to
resume), measure the held-out correlation of unit responses against distance on the sheet and
the distillation fidelity, train (:func:`topocli.training.loop.train`), measure again, and write
the report beside the checkpoint (:mod:`topocli.workflows.train.report`). Held-out activations
come from the one activation pipeline (:func:`topocli.activations.extraction.extract`).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.models.topo_model import TopoModel
from topocli.stimuli.stimulus_set import StimulusSet
from topocli.training.distillation import distillation_fidelity
from topocli.training.loop import TrainConfig, train
from topocli.workflows.train.report import write_train_report


def heldout_activations(model: TopoModel, data: StimulusSet, batch_size: int) -> np.ndarray:
    """Pooled sheet activations [N, U] of a (small) held-out set, through the pipeline.

    Evaluated by this process alone (rank 0 under torchrun), on every held-out stimulus.
    """
    from topocli.activations.extraction import extract

    acts = np.empty((len(data), model.sheet.n_units), dtype=np.float32)
    with extract(model, data, batch_size, keep_activations=True, shard=False) as ext:
        for rows, batch in ext.source.batches():
            acts[rows] = batch
    return acts


def split_heldout(data: StimulusSet, every: int = 10) -> tuple[StimulusSet, StimulusSet]:
    """Every ``every``-th stimulus is held out (deterministic)."""
    keep = [s for i, s in enumerate(data.stimuli) if i % every != every - 1]
    held = [s for i, s in enumerate(data.stimuli) if i % every == every - 1]
    return (
        StimulusSet(data.root, keep, data.conditions),
        StimulusSet(data.root, held, data.conditions),
    )


def run_train(
    ctx,
    data: Path,
    heldout: Path | None,
    config: TrainConfig,
    layout: str,
    mm_per_unit: float,
    width: int | None,
    areas: list[str] | None,
    mode: str,
    adaptor_noise: float,
    permute_seed: int | None,
    resume: bool,
    out_console,
) -> Path:
    """The ``topo train`` command: build or resume, train, evaluate on held-out text, report."""
    from topocli.models.checkpoint import is_checkpoint, load_checkpoint
    from topocli.models.devices import resolve_device
    from topocli.models.registry import CONTROL_MODEL
    from topocli.stimuli.stimulus_set import load_stimulus_set
    from topocli.training.spatial_loss import correlation_vs_distance

    if ctx.out is None:
        raise TopoInputError("topo train needs --out CHECKPOINT_FOLDER")
    # the untrained embedded MiniLM is the default base; "minilm" would be the trained one
    ctx.model_spec = ctx.model_spec or CONTROL_MODEL
    out = Path(ctx.out)
    config.validate()
    train_set = load_stimulus_set(data)
    config.data_hash = train_set.content_hash()
    if heldout is not None:
        held_set = load_stimulus_set(heldout)
    else:
        train_set, held_set = split_heldout(train_set)
    if resume:
        if not is_checkpoint(out):
            raise TopoInputError("--resume needs an existing checkpoint folder", out)
        model = load_checkpoint(out).to(resolve_device(ctx.device_name))
        base_sha = model.source["weights_sha256"]
        if ctx.model_spec:
            wanted = ctx.load_model(
                layout=layout, mm_per_unit=mm_per_unit, width=width, areas=areas, mode=mode
            )
            if wanted.source["weights_sha256"] != base_sha:
                raise TopoInputError("--resume from a checkpoint of another model", out)
            if wanted.sheet.describe() != model.sheet.describe():
                raise TopoInputError("--resume from a checkpoint with another sheet layout", out)
    else:
        if out.exists() and any(out.iterdir()) and not ctx.overwrite:
            raise TopoInputError("exists and is not empty; pass --overwrite or --resume", out)
        model = ctx.load_model(
            layout=layout,
            mm_per_unit=mm_per_unit,
            width=width,
            areas=areas,
            mode=mode,
            adaptor_noise=adaptor_noise,
            permutation_seed=permute_seed,
            seed=config.seed,
        )
    if "text" in model.processors:
        model.processors["text"].model_max_length = config.max_tokens
    summary_before = {}
    rank = int(os.environ.get("RANK", "0"))
    curves: dict[str, pd.DataFrame] = {}
    if rank == 0 and not resume:
        acts = heldout_activations(model, held_set, ctx.batch_size)
        curves["before"] = correlation_vs_distance(acts, model.sheet, seed=config.seed)
        summary_before["fidelity before"] = distillation_fidelity(model, held_set, ctx.batch_size)
    progress = ctx.progress()
    with progress as p:
        result = train(model, train_set, out, config, resume=resume, progress=p)
    if rank != 0:
        return out
    acts = heldout_activations(model, held_set, ctx.batch_size)
    curves["after"] = correlation_vs_distance(acts, model.sheet, seed=config.seed)
    fidelity = distillation_fidelity(model, held_set, ctx.batch_size)
    summary = {
        "base model": model.source.get("base_model"),
        "mode": model.mode,
        "steps": result.steps_done,
        "interrupted": result.interrupted,
        "training samples": len(train_set),
        "held-out samples": len(held_set),
        "sheet": f"{model.sheet.layout} {model.sheet.grid_shape[0]} x "
        f"{model.sheet.grid_shape[1]}, {model.sheet.mm_per_unit:g} mm/unit",
        **summary_before,
        "fidelity after (cosine to base, held-out)": fidelity,
        **{k: v for k, v in asdict(config).items() if k not in ("extra",)},
    }
    for name, c in curves.items():
        c.to_csv(out / f"corr_vs_distance_{name}.csv", index=False)
    write_train_report(out, result.log, curves, summary)
    if not ctx.quiet:
        out_console.print(
            f"{'stopped' if result.interrupted else 'trained'} {result.steps_done} steps -> {out}; "
            f"held-out fidelity {fidelity:.4f}"
        )
    return out
