"""Devices, dtypes and seeds: where and how a model runs."""

from __future__ import annotations

import torch

from topocli.errors import TopoInputError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TopoInputError("--device cuda asked for, but no CUDA device is available")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise TopoInputError(f"unknown device {device!r}") from exc


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise TopoInputError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def seed_everything(seed: int) -> None:
    """Seed torch's global generator (library code passes explicit numpy Generators)."""
    torch.manual_seed(seed)
