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
from collections.abc import Callable
from pathlib import Path

import torch

from topocli.errors import TopoInputError
from topocli.models.backbones import EMBEDDED_BASE, embedded_base_path
from topocli.models.topo_model import TopoModel, build_topo_model
from topocli.sheet import Sheet

FORMAT_VERSION = 1
ADAPTORS_FILE = "adaptors.safetensors"
SHEET_FILE = "sheet.safetensors"


def _base_location(base: str) -> str | Path:
    """Where a checkpoint's base model is on this machine (packaged ones by name)."""
    if base == EMBEDDED_BASE:
        return embedded_base_path()
    if base.startswith("package:"):
        from topocli.models.packaged import PACKAGED, ensure_converted

        if base.removeprefix("package:") in PACKAGED:
            return ensure_converted(base.removeprefix("package:"))
    return base


def save_checkpoint(
    model: TopoModel,
    out: str | Path,
    training: dict | None = None,
    extra_state: dict | None = None,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (temp folder, then rename over ``out``).

    The temp folder beside ``out`` is named ``.NAME.tmp-PID-START-RANDOM`` (this process's id
    and start time); one left by a killed process is removed by the next save (and by the next
    ``topo train`` on ``out``), one of a process that still runs is left alone.
    ``extra_state`` copies files into the checkpoint (name -> path); ``write_extra(folder)``
    writes more files straight into it.
    """
    from safetensors.torch import save_file

    from topocli.reporting.results import apply_umask, remove_stale_siblings, temp_sibling

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(out)
    tmp = temp_sibling(out, "tmp")
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
        save_file(tensors, str(tmp / ADAPTORS_FILE))
        model.sheet.save(tmp / SHEET_FILE)
        for name, path in (extra_state or {}).items():
            shutil.copy2(path, tmp / name)
        if write_extra is not None:
            write_extra(tmp)
        apply_umask(tmp)
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
        "random_init": src.get("random_init"),
        "sheet": model.sheet.describe(),
        "training": training,
    }


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "topo.json").is_file()


REQUIRED_META = ("base_model", "weights_sha256", "mode", "areas")


def read_meta(folder: str | Path) -> dict:
    """A checkpoint's topo.json, checked: kind ``topo-checkpoint``, this format version."""
    folder = Path(folder)
    path = folder / "topo.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TopoInputError(f"unreadable topo.json ({exc})", folder) from exc
    if not isinstance(meta, dict):
        raise TopoInputError("not a topo checkpoint file", path)
    if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != "topo-checkpoint":
        raise TopoInputError(f"unsupported checkpoint format {meta.get('format_version')!r}", path)
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise TopoInputError(f"checkpoint description lacks {', '.join(missing)}", path)
    return meta


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a missing, truncated or corrupt file is one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise TopoInputError("missing from the checkpoint", path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise TopoInputError(
            f"unreadable, truncated or corrupt safetensors file ({' '.join(str(exc).split())})",
            path,
        ) from exc
    except BaseException as exc:  # a panic in the Rust reader (pyo3's PanicException)
        if type(exc).__name__ != "PanicException":
            raise
        raise TopoInputError("corrupt safetensors file (its reader failed)", path) from exc


def load_checkpoint(
    folder: str | Path,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> TopoModel:
    """Rebuild a TopoModel from a checkpoint folder, checking the base weights' hash."""
    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("trust_remote_code") and not trust_remote_code:
        # only the person running the command may let a model's own code run, never a file
        raise TopoInputError(
            "this checkpoint's base model runs its own Python code; pass --trust-remote-code "
            "to allow it (only if you trust it)",
            folder / "topo.json",
        )
    sheet = Sheet.load(folder / SHEET_FILE)
    state = read_tensors(folder / ADAPTORS_FILE)  # a corrupt file is refused before the backbone
    base = meta["base_model"]
    model = build_topo_model(
        _base_location(base),
        mode=meta["mode"],
        areas=meta["areas"],
        adaptor_noise=0.0,
        seed=meta.get("seed", 0),
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
        sheet=sheet,
        sheet_source=folder / SHEET_FILE,
        random_init=meta.get("random_init"),
    )
    if model.source["weights_sha256"] != meta["weights_sha256"]:
        raise TopoInputError(
            f"base model {base!r} has weights sha256 {model.source['weights_sha256'][:12]}..., "
            f"but this checkpoint was made on {str(meta['weights_sha256'])[:12]}...; "
            "load it with the same base weights",
            folder,
        )
    model.source["base_model"] = base
    if meta["mode"] == "adaptor":
        model.load_adaptor_state(state, folder / ADAPTORS_FILE)
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
    ident = {
        "name": src.get("name"),
        "checkpoint": src.get("checkpoint"),
        "base_model": src.get("base_model"),
        "weights_sha256": src.get("weights_sha256"),
        "mode": model.mode,
        "areas": [b.name for b in model.blocks],
        "sheet": model.sheet.describe(),
        "adaptor_sha256": adaptor_fingerprint(model),
        # pickle weights are loaded only with --allow-pickle (torch.load weights_only=True)
        "weights_format": src.get("weights_format", "safetensors"),
    }
    if src.get("random_init") is not None:
        # a re-initialised copy of the base: same files, other weights (issue 16's control)
        ident["random_init"] = int(src["random_init"])
    if model.mode == "adaptor" and all(_is_identity(a.weight) for a in model.adaptors):
        # W = I everywhere: the non-topographic control, whatever folder it was saved in
        ident["identity_adaptors"] = True
    return ident


def _is_identity(w: torch.Tensor) -> bool:
    w = w.detach()
    return bool(torch.equal(w, torch.eye(w.shape[0], dtype=w.dtype, device=w.device)))


def adaptor_fingerprint(model: TopoModel) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, w in model.adaptor_state().items():
        h.update(name.encode())
        h.update(w.float().numpy().tobytes())
    return h.hexdigest()


def untrained_copy(folder: str | Path, seed: int, dtype: torch.dtype = torch.float32,
                   trust_remote_code: bool = False, allow_pickle: bool = False) -> TopoModel:
    """A checkpoint's architecture, areas and sheet with every weight untrained: the backbone
    re-initialised with ``seed`` and identity adaptors (``--random-init`` on a checkpoint)."""
    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("trust_remote_code") and not trust_remote_code:
        raise TopoInputError(
            "this checkpoint's base model runs its own Python code; pass --trust-remote-code "
            "to allow it (only if you trust it)",
            folder / "topo.json",
        )
    model = build_topo_model(
        _base_location(meta["base_model"]),
        mode=meta["mode"],
        areas=meta["areas"],
        adaptor_noise=0.0,
        seed=meta.get("seed", 0),
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
        sheet=Sheet.load(folder / SHEET_FILE),
        sheet_source=folder / SHEET_FILE,
        random_init=seed,
    )
    model.source["base_model"] = meta["base_model"]
    return model


def identity_control(model: TopoModel) -> TopoModel | None:
    """The model's non-topographic control: the same base, areas and sheet, untrained.

    Adaptor mode: identity adaptors (W = I, so the sheet reads the base units as they are);
    direct mode: the base model's own (untrained) blocks. None when ``model`` is already a
    control (an adaptor model that no training touched).
    """
    src = model.source
    if model.mode == "adaptor" and not src.get("checkpoint"):
        return None
    base = src.get("base_path") or _base_location(str(src.get("base_model")))
    control = build_topo_model(
        base,
        mode=model.mode,
        areas=[b.name for b in model.blocks],
        adaptor_noise=0.0,
        seed=int(src.get("seed", 0)),
        dtype=next(model.backbone.parameters()).dtype,
        trust_remote_code=bool(src.get("trust_remote_code", False)),
        sheet=model.sheet,
        allow_pickle=src.get("weights_format") == "pickle",
        random_init=src.get("random_init"),
    )
    control.source["base_model"] = src.get("base_model")
    name = src.get("name") or Path(str(src.get("checkpoint") or "model")).name
    control.source["name"] = f"{name}-control" if name != "minilm" else "minilm-control"
    return control.to(model.device)
