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

from topocli.errors import TopoInputError
from topocli.models.inputs import prepare_batch
from topocli.models.topo_model import TopoModel
from topocli.stimuli.stimulus_set import StimulusSet
from topocli.training.distillation import task_loss
from topocli.training.spatial_loss import build_neighbourhood_pool, spatial_loss

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
        if self.batch_size < 3:
            raise TopoInputError(
                f"--batch-size {self.batch_size} is too small: correlations between units need "
                "at least 3 samples per batch"
            )
        for name in ("steps", "grad_accum", "save_every", "neighbourhoods"):
            if getattr(self, name) < 1:
                raise TopoInputError(f"--{name.replace('_', '-')} must be >= 1")
        if self.lr <= 0 or self.alpha < 0 or self.warmup < 0:
            raise TopoInputError("--lr must be > 0, --alpha >= 0, --warmup >= 0")
        if self.precision not in ("float32", "bfloat16", "float16"):
            raise TopoInputError(f"unknown --precision {self.precision!r}")


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
    from safetensors import safe_open

    path = folder / STATE_FILE
    if not path.is_file():
        raise TopoInputError(f"no {STATE_FILE}: not a resumable training checkpoint", folder)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    generator.set_state(tensors.pop("generator"))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    scheduler.load_state_dict(json.loads(meta["scheduler"]))
    log_path = folder / LOG_FILE
    log = pd.read_csv(log_path).to_dict("records") if log_path.is_file() else []
    return int(meta["step"]), log


class _StopFlag:
    """SIGINT/SIGTERM ask the loop to save and stop after the current step."""

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
        self.raised = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


@dataclass
class TrainResult:
    steps_done: int
    interrupted: bool
    log: list[dict]


def trainable_setup(model: TopoModel) -> list[torch.nn.Parameter]:
    """Adaptor mode: only W. Direct mode: the recorded blocks' own parameters."""
    if model.mode == "adaptor":
        params = [a.weight for a in model.adaptors]
    else:
        params = []
        for b in model.blocks:
            for p in b.module.parameters():
                p.requires_grad_(True)
                params.append(p)
    for p in params:
        p.requires_grad_(True)
    return params


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
        start, log = _load_state(out, optimizer, scheduler, generator)
    model.train(False)  # dropout off: the task is distillation, and resume stays exact
    local = config.batch_size // world
    task = progress.add_task("training", total=config.steps, completed=start) if progress else None
    step = start
    last_saved = start
    interrupted = False
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
                with torch.no_grad(), model.bypass():
                    teacher = model.forward(batch.inputs, batch.modality)
                student, acts = model.record(batch.inputs, batch.modality, "mean", batch.masks)
                t_loss = task_loss(student, teacher, batch.masks)
                s_loss = spatial_loss(
                    _gather_rows(acts, world), pool, config.neighbourhoods, generator
                )
                loss = (t_loss + config.alpha * s_loss) / config.grad_accum
                loss.backward()
                task_sum += t_loss.item() / config.grad_accum
                spatial_sum += s_loss.item() / config.grad_accum
            if not (math.isfinite(task_sum) and math.isfinite(spatial_sum)):
                raise TopoInputError(
                    f"loss became NaN/inf at step {step + 1}; the last good checkpoint "
                    f"(step {last_saved}) is kept; try a lower --lr",
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
            stopping = stop.raised is not None
            if step % config.save_every == 0 or step == config.steps or stopping:
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
    return TrainResult(step, interrupted, log)


def _checkpoint(model, out, config, step, optimizer, scheduler, generator, log, save_fn) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / STATE_FILE
        _save_state(state, step, optimizer, scheduler, generator, log)
        training = {**asdict(config), "step": step}
        save_fn(
            model,
            out,
            training=training,
            extra_state={STATE_FILE: state, LOG_FILE: state.with_name(LOG_FILE)},
        )
