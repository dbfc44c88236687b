"""``topo train``: build (or resume) a topographic model, train it, measure it on held-out data.

The steps: check every option and ``--out`` (before a model loads or anything is written), load
the training and held-out stimuli, build the model (or reload the checkpoint to resume), measure
the held-out correlation of unit responses against distance on the sheet and the distillation
fidelity, train (:func:`topocli.training.loop.train`), measure again, and write the report beside
the checkpoint (:mod:`topocli.workflows.train.report`). Held-out activations come from the one
activation pipeline (:func:`topocli.activations.extraction.extract`).

``--out`` policy: a new folder, an empty one, or (``--overwrite``) a checkpoint folder that
``topo train`` wrote (its topo.json passes :func:`topocli.models.checkpoint.read_meta` and it holds
only the files topo writes there); anything else is refused and left untouched. ``--resume``
continues a checkpoint only with the settings it was trained with
(:func:`topocli.training.loop.resume_differences`). SIGINT / SIGTERM save a checkpoint and stop
(:class:`topocli.training.loop.TrainingInterrupted`: one line, exit code 130 for SIGINT).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.models.topo_model import TopoModel
from topocli.stimuli.stimulus_set import StimulusSet
from topocli.training.distillation import distillation_fidelity
from topocli.training.loop import (
    LOG_FILE,
    STATE_FILE,
    TrainConfig,
    TrainingInterrupted,
    interrupted_message,
    train,
)
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


MIN_HELDOUT = 3
CURVES = ("before", "after")
REPORT_FILE = "report.html"
# every file ``topo train`` writes into a checkpoint folder: --overwrite replaces only these
TRAIN_OUTPUTS = frozenset(
    {"topo.json", "adaptors.safetensors", "sheet.safetensors", STATE_FILE, LOG_FILE, REPORT_FILE}
    | {"manifest.json", "summary.json"}
    | {f"corr_vs_distance_{name}.csv" for name in CURVES}
)
FIGURES_DIR = "figures"  # the report's figures as PNG / SVG files


def check_model_options(
    layout: str,
    mm_per_unit: float,
    width: int | None,
    mode: str,
    adaptor_noise: float,
    permute_seed: int | None,
) -> None:
    """One-line TopoInputError for a model-building option out of range (before any load)."""
    from topocli.models.topo_model import MODES
    from topocli.sheet import LAYOUTS

    if layout not in LAYOUTS:
        raise TopoInputError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if mode not in MODES:
        raise TopoInputError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    for option, value, positive in (
        ("--mm-per-unit", mm_per_unit, True),
        ("--adaptor-noise", adaptor_noise, False),
    ):
        v = float(value)
        if not math.isfinite(v) or (v <= 0 if positive else v < 0):
            raise TopoInputError(
                f"{option} must be a finite number {'> 0' if positive else '>= 0'}, got {value}"
            )
    if width is not None and width < 1:
        raise TopoInputError(f"--sheet-width must be an integer >= 1, got {width}")
    if permute_seed is not None and permute_seed < 0:
        raise TopoInputError(f"--permute-positions must be a seed >= 0, got {permute_seed}")


def foreign_checkpoint_reason(folder: Path) -> str | None:
    """Why ``folder`` is not a checkpoint folder ``topo train`` wrote (None when it is one)."""
    from topocli.models.checkpoint import read_meta

    if not (folder / "topo.json").is_file():
        return "is not a topo checkpoint folder (no topo.json)"
    try:
        read_meta(folder)
    except TopoInputError:
        return "has a topo.json that is not a topo checkpoint's"
    for p in sorted(folder.iterdir()):
        if p.name == FIGURES_DIR and p.is_dir() and not p.is_symlink():
            odd = [f for f in p.iterdir() if f.suffix not in (".png", ".svg") or not f.is_file()]
            if odd:
                return f"holds {FIGURES_DIR}/{odd[0].name}, which topo train did not write"
            continue
        if not _train_output(p.name) or p.is_symlink() or not p.is_file():
            return f"holds {p.name}, which topo train did not write"
    return None


def _train_output(name: str) -> bool:
    """A file topo train writes, or the temp file of an atomic write of one (``.NAME.*.tmp``)."""
    if name in TRAIN_OUTPUTS:
        return True
    return any(name.startswith(f".{o}.") and name.endswith(".tmp") for o in TRAIN_OUTPUTS)


def check_out(out: Path, overwrite: bool, resume: bool) -> dict | None:
    """The ``--out`` policy (see the module docstring); returns the checkpoint's meta on resume.

    Raises a one-line TopoInputError naming ``--out`` for a file, a folder topo did not write, a
    resume without a checkpoint, or ``--resume`` with ``--overwrite``.
    """
    from topocli.models.checkpoint import read_meta

    if resume and overwrite:
        raise TopoInputError(
            "--resume continues the checkpoint in --out; --overwrite would "
            "replace it: pass one of them"
        )
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise TopoInputError("--out is a file, not a folder; choose a folder", out)
    else:
        ancestor = out.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise TopoInputError(f"--out cannot be created: {ancestor} is a file", out)
    if resume:
        if not (out / "topo.json").is_file():
            raise TopoInputError("--resume needs an existing checkpoint folder as --out", out)
        return read_meta(out)
    try:
        occupied = out.is_dir() and any(out.iterdir())
    except OSError as exc:
        raise TopoInputError(f"--out cannot be read ({exc.strerror})", out) from exc
    if occupied:
        if not overwrite:
            raise TopoInputError(
                "--out exists and is not empty; pass --overwrite (to replace a checkpoint topo "
                "train wrote) or --resume",
                out,
            )
        reason = foreign_checkpoint_reason(out)
        if reason is not None:
            raise TopoInputError(
                f"--overwrite replaces only an empty folder or a checkpoint topo train wrote; "
                f"this folder {reason}; it is left untouched",
                out,
            )
    return None


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; returns the ones created, deepest first."""
    created = []
    p = folder
    while not p.exists():
        created.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TopoInputError(f"--out cannot be created ({exc.strerror})", folder) from exc
    return created


def _remove_empty(folders: list[Path]) -> None:
    for p in folders:
        with contextlib.suppress(OSError):
            p.rmdir()


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
    """The ``topo train`` command: build or resume, train, evaluate on held-out text, report.

    Every option and ``--out`` are checked first; nothing is created before they pass. A run
    that fails before its first checkpoint leaves no folder (nor the parents it created); one
    stopped by SIGINT / SIGTERM keeps its last checkpoint and raises
    :class:`~topocli.training.loop.TrainingInterrupted`.
    """
    if ctx.out is None:
        raise TopoInputError("topo train needs --out CHECKPOINT_FOLDER")
    out = Path(ctx.out)
    config.validate()
    check_model_options(layout, mm_per_unit, width, mode, adaptor_noise, permute_seed)
    if mode == "adaptor" and float(config.alpha) == 0.0:
        raise TopoInputError(
            "--alpha 0 in adaptor mode trains nothing: the student's output X W W^-1 = X does not "
            "depend on W, so only the spatial loss moves it; use --alpha > 0 or --mode direct"
        )
    meta = check_out(out, ctx.overwrite, resume)
    rank = int(os.environ.get("RANK", "0"))
    allow_outside = getattr(ctx, "allow_outside", False)
    from topocli.stimuli.stimulus_set import load_stimulus_set

    train_set = load_stimulus_set(data, allow_outside=allow_outside)
    config.data_hash = train_set.content_hash()
    if heldout is not None:
        held_set = load_stimulus_set(heldout, allow_outside=allow_outside)
    else:
        train_set, held_set = split_heldout(train_set)
    if len(held_set) < MIN_HELDOUT:
        where = "--heldout" if heldout is not None else "--data (every 10th stimulus)"
        raise TopoInputError(
            f"{where} gives {len(held_set)} held-out stimuli; the held-out evaluation needs at "
            f"least {MIN_HELDOUT}" + ("" if heldout is not None else "; pass --heldout"),
            heldout if heldout is not None else data,
        )
    if len(train_set) < config.batch_size:
        raise TopoInputError(
            f"{len(train_set)} training samples, fewer than one batch of --batch-size "
            f"{config.batch_size}",
            data,
        )
    config.extra = {
        **(config.extra or {}),
        "layout": layout,
        "mm_per_unit": float(mm_per_unit),
        "sheet_width": width,
        "areas": list(areas) if areas else None,
        "mode": mode,
        "adaptor_noise": float(adaptor_noise),
        "permute_positions": permute_seed,
        "dtype": ctx.dtype_name,
        "heldout": "separate" if heldout is not None else "every 10th of --data",
    }
    if resume:
        from topocli.training.loop import check_resume

        check_resume(meta, config, out)
    build = dict(
        layout=layout,
        mm_per_unit=mm_per_unit,
        width=width,
        areas=areas,
        mode=mode,
        adaptor_noise=adaptor_noise,
        permutation_seed=permute_seed,
    )
    if rank != 0:
        return _train_and_report(
            ctx, out, train_set, held_set, config, build, resume, meta, out_console
        )
    from topocli.reporting.results import FolderLock, remove_stale_siblings

    created = _make_parents(out.parent)
    lock = FolderLock(out)
    try:
        try:
            lock.acquire()
        except OSError as exc:
            raise TopoInputError(
                f"cannot write here ({exc.strerror}); choose another --out", out.parent
            ) from exc
        remove_stale_siblings(out)
        return _train_and_report(
            ctx, out, train_set, held_set, config, build, resume, meta, out_console
        )
    except BaseException:
        lock.release()  # the lock file sits in a parent that may be removed
        if not out.exists():
            _remove_empty(created)
        raise
    finally:
        lock.release()


def _write_manifest(ctx, out: Path, train_set, held_set, config, build, model, summary) -> None:
    """``manifest.json`` like every results folder: options, inputs, versions, every file."""
    from topocli.models.checkpoint import model_identity
    from topocli.reporting.results import manifest_record, write_folder_manifest

    parameters = {
        **{k: v for k, v in asdict(config).items() if k != "extra"},
        **build,
        "model": ctx.model_spec,
        "device": ctx.device_name,
        "dtype": ctx.dtype_name,
    }
    inputs = {"data": train_set.root, "heldout": held_set.root}
    extra = {"model": model_identity(model), "summary": summary}
    record = manifest_record("train", out, parameters, inputs, config.seed, extra)
    write_folder_manifest(out, record)


def _load_for_resume(ctx, out: Path, meta: dict, build: dict):
    """The checkpoint's model; ``--model``, when given, must be the checkpoint's base."""
    import torch

    from topocli.models.checkpoint import load_checkpoint
    from topocli.models.devices import resolve_device, resolve_dtype, seed_everything

    device = resolve_device(ctx.device_name)
    dtype = resolve_dtype(ctx.dtype_name)
    if device.type == "cpu" and dtype != torch.float32:
        raise TopoInputError(f"--dtype {ctx.dtype_name} is for GPUs; use float32 on CPU")
    if ctx.model_spec:
        wanted = ctx.load_model(**build)
        if wanted.source["weights_sha256"] != meta.get("weights_sha256"):
            raise TopoInputError(
                f"--model {ctx.model_spec} is not the base model of the checkpoint in --out "
                f"({meta.get('base_model')}); resume without --model",
                out,
            )
        if wanted.sheet.describe() != meta.get("sheet"):
            raise TopoInputError("--resume from a checkpoint with another sheet layout", out)
        del wanted
    seed_everything(ctx.seed)
    with ctx.status("loading checkpoint"):
        model = load_checkpoint(out, dtype=dtype, trust_remote_code=ctx.trust_remote_code)
        if model.mode == "direct":
            # the distillation teacher is the base model, not the trained blocks
            from topocli.models.checkpoint import identity_control

            model.keep_teacher(identity_control(model))
    return model.to(device)


def _train_and_report(
    ctx, out: Path, train_set, held_set, config: TrainConfig, build: dict, resume, meta, out_console
) -> Path:
    from topocli.models.registry import CONTROL_MODEL
    from topocli.training.spatial_loss import correlation_vs_distance

    if resume:
        model = _load_for_resume(ctx, out, meta, build)
    else:
        # the untrained embedded MiniLM is the default base; "minilm" would be the trained one
        ctx.model_spec = ctx.model_spec or CONTROL_MODEL
        model = ctx.load_model(**build, seed=config.seed)
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
    if result.interrupted:
        if rank == 0:  # the before-curve is already measured: keep it for the resumed run
            from topocli.reporting.results import atomic_write_text

            for name, c in curves.items():
                atomic_write_text(out / f"corr_vs_distance_{name}.csv", c.to_csv(index=False))
        raise TrainingInterrupted(
            interrupted_message(
                result.steps_done, config.steps, result.saved_step, result.signum, out
            ),
            result.steps_done,
            result.saved_step,
            result.signum,
        )
    if rank != 0:
        return out
    acts = heldout_activations(model, held_set, ctx.batch_size)
    curves["after"] = correlation_vs_distance(acts, model.sheet, seed=config.seed)
    fidelity = distillation_fidelity(model, held_set, ctx.batch_size)
    summary = {
        "base model": model.source.get("base_model"),
        "mode": model.mode,
        "steps": result.steps_done,
        "training samples": len(train_set),
        "held-out samples": len(held_set),
        "sheet": f"{model.sheet.layout} {model.sheet.grid_shape[0]} x "
        f"{model.sheet.grid_shape[1]}, {model.sheet.mm_per_unit:g} mm/unit",
        **summary_before,
        "fidelity after (cosine to base, held-out)": fidelity,
        **{k: v for k, v in asdict(config).items() if k not in ("extra",)},
    }
    from topocli.reporting.results import atomic_write_text

    for name, c in curves.items():
        atomic_write_text(out / f"corr_vs_distance_{name}.csv", c.to_csv(index=False))
    write_train_report(out, result.log, curves, summary)
    _write_manifest(ctx, out, train_set, held_set, config, build, model, summary)
    if not ctx.quiet:
        out_console.print(
            f"trained {result.steps_done} steps -> {out}; held-out fidelity {fidelity:.4f}"
        )
    return out
