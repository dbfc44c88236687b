"""What every command shares once its options are parsed: the model to load, the output folder,
the consoles and progress bars (rich, on stderr so that stdout stays clean for pipes)."""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console

from topocli.errors import TopoInputError

# piped output (batch jobs, logs) gets wide tables instead of rich's 80-column default
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


class Context:
    """Resolved options shared by every command (model, device, batch size, seed, output)."""

    def __init__(
        self,
        model=None,
        device="cpu",
        dtype="float32",
        batch_size=32,
        seed=0,
        out=None,
        overwrite=False,
        quiet=False,
        trust_remote_code=False,
        allow_pickle=False,
        allow_outside=False,
        random_init=None,
    ):
        self.model_spec = model
        self.device_name = device
        self.dtype_name = dtype
        self.batch_size = batch_size
        self.seed = seed
        self.out = out
        self.overwrite = overwrite
        self.quiet = quiet
        self.trust_remote_code = trust_remote_code
        self.allow_pickle = allow_pickle
        self.allow_outside = allow_outside
        self.random_init = random_init

    def load_model(self, modality: str | None = None, **build_options):
        """Seed everything, resolve ``--model`` offline and move it to ``--device``.

        With no ``--model``, the shipped default of the stimuli's ``modality``
        (:func:`topocli.models.registry.default_model`); ``model_spec`` then names it, so that
        the results folder records the model that ran.
        """
        import torch

        from topocli.models.devices import resolve_device, resolve_dtype, seed_everything
        from topocli.models.registry import default_model, resolve_model

        if self.model_spec in (None, ""):
            self.model_spec = default_model(modality)

        seed_everything(self.seed)
        device = resolve_device(self.device_name)
        dtype = resolve_dtype(self.dtype_name)
        if device.type == "cpu" and dtype != torch.float32:
            raise TopoInputError(f"--dtype {self.dtype_name} is for GPUs; use float32 on CPU")
        with self.status("loading model"):
            model = resolve_model(
                self.model_spec,
                dtype=dtype,
                trust_remote_code=self.trust_remote_code,
                allow_pickle=self.allow_pickle,
                random_init=self.random_init,
                **build_options,
            )
        return model.to(device)

    def status(self, text: str):
        return nullcontext() if self.quiet else err.status(text)

    def progress(self):
        """A rich progress bar on stderr (a no-op with ``--quiet``)."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self.quiet:
            return nullcontext()
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )

    def require_out(self, default: str) -> Path:
        return self.out if self.out is not None else Path(default)


def offline_environment() -> None:
    """No hub access ever; set before anything imports huggingface_hub or transformers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def quiet_transformers() -> None:
    """No transformers progress bars or warnings on the terminal (imported only when a command
    loads a model: importing transformers costs about a second, ``--help`` never pays it)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
