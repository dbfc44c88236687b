"""Checkpoints: a trained topographic model as a small, safe, self-describing folder.

A checkpoint is a folder::

    topo.json            format version, base model (id or path, revision, weights sha256),
                         mode, recorded areas, sheet summary, training config
    adaptors.safetensors adaptor matrices by area name (adaptor mode), or the trained block
                         parameters by parameter name (direct mode)
    sheet.safetensors    unit -> area, (row, col); mm per unit in its metadata

No pickle anywhere. Loading checks the base weights' sha256, so a checkpoint never silently runs
on a different backbone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from topocli.errors import TopoInputError
from topocli.models.backbones import EMBEDDED_BASE, embedded_base_path
from topocli.models.topo_model import TopoModel, build_topo_model
from topocli.sheet import Sheet

FORMAT_VERSION = 1


def _base_location(base: str) -> str | Path:
    return embedded_base_path() if base == EMBEDDED_BASE else base


def save_checkpoint(
    model: TopoModel, out: str | Path, training: dict | None = None, extra_state: dict | None = None
) -> Path:
    """Write a checkpoint folder atomically (temp folder, then rename over ``out``)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        meta = checkpoint_meta(model, training)
        (tmp / "topo.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if model.mode == "adaptor":
            tensors = model.adaptor_state()
        else:
            trained = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
            tensors = {
                n: p.detach().cpu().contiguous()
                for n, p in model.backbone.named_parameters()
                if n in trained
            }
        save_file(tensors, str(tmp / "adaptors.safetensors"))
        model.sheet.save(tmp / "sheet.safetensors")
        for name, path in (extra_state or {}).items():
            shutil.copy2(path, tmp / name)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    from topocli.reporting.results import replace_folder

    if out.exists():
        replace_folder(tmp, out)  # a kill between saves never leaves no checkpoint
    else:
        os.replace(tmp, out)


def checkpoint_meta(model: TopoModel, training: dict | None = None) -> dict:
    src = model.source
    return {
        "format_version": FORMAT_VERSION,
        "kind": "topo-checkpoint",
        "base_model": src.get("base_model"),
        "revision": src.get("revision"),
        "weights_sha256": src.get("weights_sha256"),
        "model_type": src.get("model_type"),
        "mode": model.mode,
        "areas": [b.name for b in model.blocks],
        "adaptor_noise": model.adaptor_noise,
        "seed": src.get("seed", 0),
        "trust_remote_code": bool(src.get("trust_remote_code", False)),
        "sheet": model.sheet.describe(),
        "training": training,
    }


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "topo.json").is_file()


def read_meta(folder: str | Path) -> dict:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "topo.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TopoInputError(f"unreadable topo.json ({exc})", folder) from exc
    if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != "topo-checkpoint":
        raise TopoInputError(
            f"unsupported checkpoint format {meta.get('format_version')!r}", folder / "topo.json"
        )
    return meta


def load_checkpoint(
    folder: str | Path, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False
) -> TopoModel:
    """Rebuild a TopoModel from a checkpoint folder, checking the base weights' hash."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("trust_remote_code") and not trust_remote_code:
        # only the person running the command may let a model's own code run, never a file
        raise TopoInputError(
            "this checkpoint's base model runs its own Python code; pass --trust-remote-code "
            "to allow it (only if you trust it)",
            folder / "topo.json",
        )
    sheet = Sheet.load(folder / "sheet.safetensors")
    base = meta["base_model"]
    model = build_topo_model(
        _base_location(base),
        mode=meta["mode"],
        areas=meta["areas"],
        adaptor_noise=0.0,
        seed=meta.get("seed", 0),
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        sheet=sheet,
        sheet_source=folder / "sheet.safetensors",
    )
    if model.source["weights_sha256"] != meta["weights_sha256"]:
        raise TopoInputError(
            f"base model {base!r} has weights sha256 {model.source['weights_sha256'][:12]}..., "
            f"but this checkpoint was made on {str(meta['weights_sha256'])[:12]}...; "
            "load it with the same base weights",
            folder,
        )
    model.source["base_model"] = base
    try:
        state = load_file(str(folder / "adaptors.safetensors"))
    except (OSError, ValueError) as exc:
        raise TopoInputError(f"unreadable adaptors.safetensors ({exc})", folder) from exc
    if meta["mode"] == "adaptor":
        model.load_adaptor_state(state, folder / "adaptors.safetensors")
    else:
        params = dict(model.backbone.named_parameters())
        for name, tensor in state.items():
            if name not in params or params[name].shape != tensor.shape:
                raise TopoInputError(f"trained parameter {name!r} does not fit the model", folder)
            with torch.no_grad():
                params[name].copy_(tensor.to(params[name]))
    model.source["checkpoint"] = str(folder)
    model.source["training"] = meta.get("training")
    return model


def model_identity(model: TopoModel) -> dict:
    """What a results manifest records about the model (enough to reload it)."""
    src = model.source
    return {
        "name": src.get("name"),
        "checkpoint": src.get("checkpoint"),
        "base_model": src.get("base_model"),
        "weights_sha256": src.get("weights_sha256"),
        "mode": model.mode,
        "areas": [b.name for b in model.blocks],
        "sheet": model.sheet.describe(),
        "adaptor_sha256": adaptor_fingerprint(model),
    }


def adaptor_fingerprint(model: TopoModel) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, w in model.adaptor_state().items():
        h.update(name.encode())
        h.update(w.float().numpy().tobytes())
    return h.hexdigest()
