"""The training loop: spatial-smoothness fine-tuning of any Hugging Face model on one sheet.

Loss per step: ``task + alpha * spatial``.

* task: self-distillation against the frozen base model, so any model trains without labels:
  KL(teacher || student) on next-token logits for causal language models, ``1 - cosine`` of the
  pooled final representation for encoders. The teacher is the same backbone run with every hook
  point bypassed (adaptor mode), which is exactly the base model.
* spatial: :func:`topocli.training.spatial_loss.spatial_loss` on the pooled sheet activations of the
  batch (``B >= 3`` samples), centres drawn by a seeded generator each step.

Adaptor mode trains only the adaptor matrices W (Topo-Omni); direct mode fine-tunes the recorded
blocks (TopoLM-style). Data order, centre sampling and every other random choice are functions of
the seed and the step, and the optimizer, scheduler and generator states are saved with every
checkpoint, so ``--resume`` reaches bit-identical weights on CPU. Under ``torchrun`` /
``accelerate launch`` each rank takes a slice of the global batch; sheet activations are
all-gathered so the spatial loss sees the whole global batch, and gradients are averaged.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from topocli.errors import TopoInputError, TopoInterrupted
from topocli.models.inputs import Batch, prepare_batch
from topocli.models.topo_model import TopoModel
from topocli.stimuli.stimulus_set import StimulusSet
from topocli.training.distillation import task_loss
from topocli.training.spatial_loss import (
    NeighbourhoodPool,
    build_neighbourhood_pool,
    spatial_loss,
)

STATE_FILE = "trainer_state.safetensors"


LOG_FILE = "train_log.csv"


@dataclass
class TrainConfig:
    """Every training option; stored in the checkpoint's topo.json."""

    alpha: float = 20.0
    radius_mm: float = 5.0
    neighbourhoods: int = 32
    steps: int = 500
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.0
    precision: str = "float32"
    save_every: int = 100
    seed: int = 0
    max_tokens: int = 128
    data_hash: str = ""
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """One-line TopoInputError for any option out of range, naming the option.

        Called at the boundary (``run_train``, and :func:`train` for library use) before a model
        loads or anything is written.
        """
        if _integer(self.batch_size) is None or self.batch_size < 3:
            raise TopoInputError(
                f"--batch-size {self.batch_size} is too small: correlations between units need "
                "at least 3 samples per batch"
            )
        for name in ("steps", "grad_accum", "save_every", "neighbourhoods", "max_tokens"):
            _check_int(f"--{name.replace('_', '-')}", getattr(self, name), 1)
        _check_int("--warmup", self.warmup, 0)
        _check_int("--seed", self.seed, 0, 2**63 - 1)
        _check_float("--lr", self.lr, positive=True)
        _check_float("--alpha", self.alpha)
        _check_float("--radius-mm", self.radius_mm, positive=True)
        _check_float("weight decay", self.weight_decay)
        if self.precision not in PRECISIONS:
            raise TopoInputError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )


PRECISIONS = ("float32", "bfloat16", "float16")


def _integer(value) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        as_int = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return as_int if as_int == value else None


def _check_int(option: str, value, low: int, high: int | None = None) -> None:
    v = _integer(value)
    if v is None or v < low or (high is not None and v > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise TopoInputError(f"{option} must be an integer {bound}, got {value}")


def _check_float(option: str, value, positive: bool = False) -> None:
    """A finite number, > 0 with ``positive``, else >= 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or (v <= 0 if positive else v < 0):
        raise TopoInputError(
            f"{option} must be a finite number {'> 0' if positive else '>= 0'}, got {value}"
        )


# settings a resume may change; every other recorded setting must equal the checkpoint's
RESUME_MAY_CHANGE = ("steps", "save_every")
_LABELS = {
    "data_hash": "--data content",
    "weight_decay": "weight decay",
    "heldout": "--heldout",
}


class TrainingInterrupted(TopoInterrupted):
    """SIGINT / SIGTERM stopped training after a checkpoint was saved.

    The CLI prints the message (where training stopped, which checkpoint was kept) on one line
    and exits with 128 + the signal number (130 for Ctrl-C).
    """

    def __init__(self, message: str, step: int, saved_step: int, signum: int = 2) -> None:
        super().__init__(message, signum)
        self.step = step
        self.saved_step = saved_step


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, bool) or isinstance(b, bool):
            return a is b
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _show(key: str, value) -> str:
    if value is None:
        return "default"
    if key == "data_hash":
        return f"sha256 {str(value)[:12]}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def resume_differences(
    stored: dict | None, config: TrainConfig, meta: dict | None = None
) -> list[str]:
    """The settings of ``config`` that differ from a checkpoint's stored training config.

    Resume policy: ``--resume`` continues the run that wrote the checkpoint, so every setting
    that shapes the weights must equal the checkpoint's: the training data's content hash,
    alpha, radius, neighbourhoods, lr, warm-up, weight decay, batch size, gradient accumulation,
    seed, precision, max tokens, and the model options that ``topo train`` records in
    ``extra`` (layout, mm per unit, sheet width, areas, mode, adaptor noise, position
    permutation, dtype, where the held-out set comes from). A resume with any of them changed
    is refused, listing each difference. Only :data:`RESUME_MAY_CHANGE` may change: ``--steps``
    (train longer; the cosine decay is re-planned over the new total from the resumed step on,
    and a total below the checkpoint's step is refused by :func:`check_resume`) and
    ``--save-every``. A setting the checkpoint does not record (an older checkpoint, an empty
    data hash from library use) is not compared; for an older checkpoint, mode, layout, mm per
    unit and position permutation are read from its topo.json (``meta``) instead. ``--areas``
    naming exactly the checkpoint's areas equals the default that chose them.
    """
    stored = stored or {}
    diffs = []
    mine = asdict(config)
    for key, value in mine.items():
        if key in RESUME_MAY_CHANGE or key == "extra" or key not in stored:
            continue
        old = stored[key]
        if key == "data_hash" and not (old and value):
            continue
        if not _same(value, old):
            diffs.append((key, value, old))
    old_extra = {**_recorded_in_meta(meta), **(stored.get("extra") or {})}
    for key, value in (config.extra or {}).items():
        if key not in old_extra or _same(value, old_extra[key]):
            continue
        if key == "areas" and meta and _same(value, meta.get("areas")):
            continue  # the areas the checkpoint's default (or its own --areas) chose
        diffs.append((key, value, old_extra[key]))
    return [
        f"{_LABELS.get(k, '--' + k.replace('_', '-'))} {_show(k, new)} (checkpoint {_show(k, old)})"
        for k, new, old in diffs
    ]


def _recorded_in_meta(meta: dict | None) -> dict:
    """The model options a checkpoint's topo.json shows (for checkpoints without ``extra``)."""
    if not meta:
        return {}
    sheet = meta.get("sheet") if isinstance(meta.get("sheet"), dict) else {}
    found = {"mode": meta.get("mode")}
    found.update(
        {
            "layout": sheet.get("layout"),
            "mm_per_unit": sheet.get("mm_per_unit"),
            "permute_positions": sheet.get("permutation_seed"),
        }
        if sheet
        else {}
    )
    return {k: v for k, v in found.items() if k == "permute_positions" or v is not None}


def check_resume(meta: dict, config: TrainConfig, out: Path) -> int:
    """Refuse a resume that would not continue the checkpoint's run; returns its step.

    See :func:`resume_differences` for the policy.
    """
    stored = meta.get("training")
    if not isinstance(stored, dict) or not (Path(out) / STATE_FILE).is_file():
        raise TopoInputError(
            f"--resume needs a training checkpoint (topo.json with its training settings and "
            f"{STATE_FILE}); this one was not written by topo train",
            out,
        )
    diffs = resume_differences(stored, config, meta)
    if diffs:
        allowed = " and ".join(f"--{k.replace('_', '-')}" for k in RESUME_MAY_CHANGE)
        raise TopoInputError(
            f"--resume with settings that differ from the checkpoint's: {'; '.join(diffs)}. "
            f"Resume with the checkpoint's settings (only {allowed} may change) or train into "
            "a new --out",
            out,
        )
    done = _integer(stored.get("step")) or 0
    if config.steps < done:
        raise TopoInputError(
            f"--steps {config.steps} is below the checkpoint's step {done}; pass --steps >= "
            f"{done} to resume (a larger value trains longer)",
            out,
        )
    return done


def init_distributed() -> tuple[int, int]:
    """Join the process group that torchrun / accelerate launch describe in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def _gather_rows(x: torch.Tensor, world: int) -> torch.Tensor:
    """All-gather the batch dimension with gradients flowing back to each rank's own rows."""
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def _average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    if world == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def batch_rows(n_items: int, step: int, batch_size: int, seed: int) -> np.ndarray:
    """Rows of the global batch at ``step``: epochs are seeded permutations, so resumable."""
    per_epoch = max(1, n_items // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_items)
    return perm[k * batch_size : (k + 1) * batch_size]


def _save_state(path: Path, step: int, optimizer, scheduler, generator, log: list[dict]) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {"generator": generator.get_state()}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for key, value in st.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"opt.{pid}.{key}"] = t.detach().cpu().contiguous()
    meta = {
        "step": str(step),
        "param_groups": json.dumps(opt["param_groups"]),
        "scheduler": json.dumps(scheduler.state_dict()),
    }
    save_file(tensors, str(path), metadata=meta)
    pd.DataFrame(log).to_csv(path.with_name(LOG_FILE), index=False)


def _load_state(folder: Path, optimizer, scheduler, generator) -> tuple[int, list[dict]]:
    """The trainer state of a checkpoint; a truncated or corrupt file is one TopoInputError."""
    from safetensors import SafetensorError, safe_open

    path = folder / STATE_FILE
    if not path.is_file():
        raise TopoInputError(f"no {STATE_FILE}: not a resumable training checkpoint", folder)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        generator.set_state(tensors.pop("generator"))
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict(
            {"state": state, "param_groups": json.loads(meta["param_groups"])}
        )
        scheduler.load_state_dict(json.loads(meta["scheduler"]))
        step = int(meta["step"])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise TopoInputError(
            f"unreadable, truncated or foreign trainer state ({_one_line(exc)}); the checkpoint "
            "cannot be resumed",
            path,
        ) from exc
    log_path = folder / LOG_FILE
    try:
        log = pd.read_csv(log_path).to_dict("records") if log_path.is_file() else []
    except (OSError, ValueError) as exc:  # pandas' parser errors are ValueErrors
        raise TopoInputError(f"unreadable training log ({_one_line(exc)})", log_path) from exc
    return step, log


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _kept(last_saved: int) -> str:
    if last_saved == 0:
        return "no checkpoint was written"
    return f"the last good checkpoint (step {last_saved}) is kept"


class _StopFlag:
    """SIGINT/SIGTERM ask the loop to save and stop after the current step.

    A second signal stops at once (KeyboardInterrupt): the checkpoint being written is
    discarded and the last complete one is kept.
    """

    def __init__(self) -> None:
        self.raised: int | None = None
        self._old: dict = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, _frame) -> None:
        if self.raised is not None:
            raise KeyboardInterrupt
        self.raised = signum

    def agreed(self, world: int, device: torch.device) -> bool:
        """Whether any process was asked to stop (all ranks stop at the same step)."""
        flag = self.raised is not None
        if world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


@dataclass
class TrainResult:
    steps_done: int
    interrupted: bool
    log: list[dict]
    saved_step: int = 0
    signum: int | None = None


def trainable_setup(model: TopoModel) -> list[torch.nn.Parameter]:
    """Adaptor mode: only W. Direct mode: the recorded blocks' own parameters."""
    if model.mode == "adaptor":
        params = [a.weight for a in model.adaptors]
    else:
        # the teacher is the base model: keep the blocks' weights before they train
        model.keep_teacher()
        params = []
        for b in model.blocks:
            for p in b.module.parameters():
                p.requires_grad_(True)
                params.append(p)
    for p in params:
        p.requires_grad_(True)
    return params


def step_losses(
    model: TopoModel,
    batch: Batch,
    pool: NeighbourhoodPool,
    n_neighbourhoods: int,
    generator: torch.Generator,
    world: int = 1,
    spatial: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The task and spatial losses of one (micro-)batch: the forward half of a training step.

    The frozen teacher (every hook point bypassed) runs without gradients (not at all when the
    output is the backbone's by construction: adaptor mode, fast path), the student records
    its pooled sheet activations, and the spatial loss sees the activations of the whole global
    batch (all-gathered across ``world`` processes).

    Parameters
    ----------
    model : TopoModel
    batch : Batch
        A prepared batch (:func:`topocli.models.inputs.prepare_batch`).
    pool : NeighbourhoodPool
    n_neighbourhoods : int
        Neighbourhood centres drawn from ``generator``.
    generator : torch.Generator
    world : int
        Processes sharing the global batch.
    spatial : bool
        False skips the spatial loss (and draws no centres): the benchmark's baseline step.

    Returns
    -------
    task : torch.Tensor
        Scalar self-distillation loss.
    spatial : torch.Tensor or None
        Scalar spatial loss, None when ``spatial`` is False.
    """
    if model.output_is_the_backbones():
        # the student's output is the teacher's by construction: the teacher pass (half of
        # the step) would only confirm a task loss of exactly 0
        _, acts = model.record(batch.inputs, batch.modality, "mean", batch.masks)
        t_loss = acts.new_zeros(())
    else:
        with torch.no_grad(), model.bypass():
            teacher = model.forward(batch.inputs, batch.modality)
        student, acts = model.record(batch.inputs, batch.modality, "mean", batch.masks)
        t_loss = task_loss(student, teacher, batch.masks)
    if not spatial:
        return t_loss, None
    return t_loss, spatial_loss(_gather_rows(acts, world), pool, n_neighbourhoods, generator)


def train(
    model: TopoModel,
    data: StimulusSet,
    out: Path,
    config: TrainConfig,
    resume: bool = False,
    progress=None,
    on_checkpoint=None,
) -> TrainResult:
    """Run (or resume) training and write checkpoints into ``out``."""
    from topocli.models.checkpoint import read_meta, save_checkpoint

    config.validate()
    rank, world = init_distributed()
    if config.batch_size % world:
        raise TopoInputError(
            f"--batch-size {config.batch_size} must divide among {world} processes"
        )
    if len(data) < config.batch_size:
        raise TopoInputError(
            f"{len(data)} training samples, fewer than one batch of {config.batch_size}", data.root
        )
    pool = build_neighbourhood_pool(model.sheet, config.radius_mm)
    params = trainable_setup(model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.warmup, config.steps))
    generator = torch.Generator().manual_seed(config.seed)
    start, log = 0, []
    if resume:
        meta = read_meta(out)
        if meta.get("weights_sha256") != model.source.get("weights_sha256"):
            raise TopoInputError("--resume from a checkpoint of another base model", out)
        if meta.get("sheet") != model.sheet.describe():
            raise TopoInputError("--resume from a checkpoint with another sheet layout", out)
        check_resume(meta, config, out)
        start, log = _load_state(out, optimizer, scheduler, generator)
    model.train(False)  # dropout off: the task is distillation, and resume stays exact
    local = config.batch_size // world
    task = progress.add_task("training", total=config.steps, completed=start) if progress else None
    step = start
    last_saved = start
    interrupted = False
    try:
        with _StopFlag() as stop:
            while step < config.steps:
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                task_sum = spatial_sum = 0.0
                for micro in range(config.grad_accum):
                    rows = batch_rows(
                        len(data), step * config.grad_accum + micro, config.batch_size, config.seed
                    )
                    mine = rows[rank * local : (rank + 1) * local]
                    batch = prepare_batch(model, [data.stimuli[i] for i in mine], mine)
                    t_loss, s_loss = step_losses(
                        model, batch, pool, config.neighbourhoods, generator, world
                    )
                    loss = (t_loss + config.alpha * s_loss) / config.grad_accum
                    if loss.requires_grad:  # adaptor mode at alpha 0: nothing depends on W
                        loss.backward()
                    task_sum += t_loss.item() / config.grad_accum
                    spatial_sum += s_loss.item() / config.grad_accum
                if not (math.isfinite(task_sum) and math.isfinite(spatial_sum)):
                    raise TopoInputError(
                        f"loss became NaN/inf at step {step + 1}; {_kept(last_saved)}; "
                        "try a lower --lr",
                        out,
                    )
                _average_gradients(params, world)
                optimizer.step()
                scheduler.step()
                step += 1
                elapsed = time.perf_counter() - t0
                log.append(
                    {
                        "step": step,
                        "task_loss": task_sum,
                        "spatial_loss": spatial_sum,
                        "total_loss": task_sum + config.alpha * spatial_sum,
                        "lr": optimizer.param_groups[0]["lr"],
                        "samples_per_s": config.batch_size * config.grad_accum / elapsed,
                    }
                )
                if progress:
                    progress.update(
                        task,
                        advance=1,
                        description=(
                            f"training task {task_sum:.4f} spatial {spatial_sum:.4f} "
                            f"{log[-1]['samples_per_s']:.0f}/s"
                        ),
                    )
                stopping = stop.agreed(world, params[0].device)
                if step % config.save_every == 0 or step == config.steps or stopping:
                    if not all(bool(torch.isfinite(p).all()) for p in params):
                        raise TopoInputError(
                            f"the weights became NaN/inf at step {step}; {_kept(last_saved)}; "
                            "try a lower --lr or --alpha",
                            out,
                        )
                    if rank == 0:
                        _checkpoint(
                            model,
                            out,
                            config,
                            step,
                            optimizer,
                            scheduler,
                            generator,
                            log,
                            save_checkpoint,
                        )
                    last_saved = step
                    if rank == 0 and on_checkpoint:
                        on_checkpoint(step)
                if stopping:
                    interrupted = True
                    break
    except KeyboardInterrupt:  # a second signal: stop at once, mid-step or mid-save
        # a save that finished just before the signal, but after the loop counted it, counts
        saved = step if rank == 0 and _saved_step(out) == step else last_saved
        raise TrainingInterrupted(
            interrupted_message(step, config.steps, saved, signal.SIGINT, out),
            step,
            saved,
            signal.SIGINT,
        ) from None
    signum = (stop.raised or signal.SIGINT) if interrupted else None
    return TrainResult(step, interrupted, log, last_saved, signum)


def interrupted_message(step: int, total: int, saved: int, signum: int, out: Path) -> str:
    """One line: where a signal stopped training and which checkpoint was kept."""
    kept = (
        f"checkpoint at step {saved} kept in {out}; continue with --resume"
        if saved
        else "no checkpoint was written"
    )
    return f"stopped at step {step} of {total} ({signal.Signals(signum).name}); {kept}"


def _saved_step(out: Path) -> int | None:
    """The step of the checkpoint now in ``out``, None if there is none."""
    try:
        return int(json.loads((Path(out) / "topo.json").read_text())["training"]["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _checkpoint(model, out, config, step, optimizer, scheduler, generator, log, save_fn) -> None:
    """Save the model and the trainer state into one checkpoint, written atomically.

    The trainer state is written straight into the checkpoint's temp folder, so a kill leaves
    nothing behind but that folder (removed by the next run, see ``save_checkpoint``).
    """

    def write_state(folder: Path) -> None:
        _save_state(folder / STATE_FILE, step, optimizer, scheduler, generator, log)

    training = {**asdict(config), "step": step}
    save_fn(model, out, training=training, write_extra=write_state)
