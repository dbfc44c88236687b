"""GGUF (llama.cpp) -> a Hugging Face folder with safetensors, through transformers.

transformers reads a GGUF file with ``from_pretrained(folder, gguf_file=...)`` (it needs the
``gguf`` and ``accelerate`` packages: ``pip install 'topocli[models]'``) and de-quantises the
weights to float. The loaded model keeps a GGUF quantiser that refuses ``save_pretrained``, so
the weights move into a plain model of the same config, which is saved as safetensors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from topocli.errors import TopoInputError


def _need(module: str, package: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise TopoInputError(
            f"converting a GGUF file needs the package {package}: pip install {package} "
            "(or pip install 'topocli[models]')"
        )


def convert_gguf(gguf_path: Path, out_dir: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``out_dir`` (config, safetensors, tokenizer) from one GGUF file."""
    _need("gguf", "gguf")
    _need("accelerate", "accelerate")
    import transformers as tf

    gguf_path = Path(gguf_path)
    folder, name = gguf_path.parent, gguf_path.name
    loaded = tf.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    tokenizer = tf.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    state = loaded.state_dict()
    del loaded
    with torch.device("meta"):
        plain = tf.AutoModelForCausalLM.from_config(config, dtype=dtype)
    result = plain.load_state_dict(state, strict=False, assign=True)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise TopoInputError(
            f"GGUF weights do not fit {type(plain).__name__}: {len(missing)} missing, "
            f"{len(result.unexpected_keys)} unexpected keys",
            gguf_path,
        )
    if tied:
        plain.tie_weights()
    plain.config.architectures = [type(plain).__name__]
    out_dir = Path(out_dir)
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
