"""CTranslate2 ``model.bin``: a reader, a writer (for tests) and the Whisper -> transformers map.

The binary layout (ctranslate2/specs/model_spec.py, ``ModelSpec._serialize``), little endian::

    u32 binary_version (<= 6)  str spec_name  u32 spec_revision  u32 n_variables
    n_variables x [str name, u8 rank, rank x u32 dim, u8 dtype, u32 n_bytes, n_bytes data]
    u32 n_aliases  n_aliases x [str alias, str target]

with ``str`` = u16 length (counting a trailing NUL), the UTF-8 bytes, NUL. dtype ids follow
ctranslate2's DataType enum: float32, int8, int16, int32, float16, bfloat16. Versions before 5
store no spec name / revision is not handled: topo reads what its packages ship (v6).

No ctranslate2 at run time: this module needs numpy and torch only.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

from topocli.errors import TopoInputError

DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class _Reader:
    def __init__(self, data: memoryview, source: Path | str):
        self.data, self.pos, self.source = data, 0, source

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise TopoInputError("truncated CTranslate2 model.bin", self.source)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack("<" + fmt, self.take(size))

    def string(self) -> str:
        (length,) = self.unpack("H")
        raw = bytes(self.take(length))
        return raw[:-1].decode("utf-8") if raw.endswith(b"\0") else raw.decode("utf-8")


def _to_tensor(raw: memoryview, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    if dtype == "bfloat16":
        arr = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return torch.from_numpy(arr.view(np.float32).reshape(shape).copy())
    arr = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)
    return torch.from_numpy(arr.copy())


def read_ct2(path: str | Path | list) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a model.bin (or its parts, concatenated in order): (header, {name: tensor}).

    Aliases (tied variables) resolve to the tensor they name; the header holds the binary
    version, spec name and revision and the alias table.
    """
    parts = [Path(p) for p in path] if isinstance(path, list | tuple) else [Path(path)]
    data = b"".join(p.read_bytes() for p in parts)
    source = parts[0]
    r = _Reader(memoryview(data), source)
    (version,) = r.unpack("I")
    if not 5 <= version <= 6:
        raise TopoInputError(
            f"unsupported CTranslate2 binary version {version} (topo reads 5-6)", source
        )
    name = r.string()
    (revision,) = r.unpack("I")
    (count,) = r.unpack("I")
    variables: dict[str, torch.Tensor] = {}
    for _ in range(count):
        var = r.string()
        (rank,) = r.unpack("B")
        shape = r.unpack("I" * rank) if rank else ()
        (type_id,) = r.unpack("B")
        (n_bytes,) = r.unpack("I")
        if type_id >= len(DTYPES):
            raise TopoInputError(f"unknown CTranslate2 dtype id {type_id} for {var}", source)
        variables[var] = _to_tensor(r.take(n_bytes), DTYPES[type_id], tuple(shape))
    (n_alias,) = r.unpack("I")
    aliases = {}
    for _ in range(n_alias):
        alias, target = r.string(), r.string()
        aliases[alias] = target
        variables[alias] = variables[target]
    if r.pos != len(data):
        raise TopoInputError(f"{len(data) - r.pos} trailing bytes after the alias table", source)
    header = {"binary_version": version, "spec": name, "revision": revision, "aliases": aliases}
    return header, variables


def write_ct2(
    path: str | Path,
    variables: dict[str, torch.Tensor | np.ndarray],
    spec: str = "WhisperSpec",
    revision: int = 3,
    aliases: dict[str, str] | None = None,
) -> Path:
    """Write a model.bin in the same layout (for tests and round trips)."""

    def string(s: str) -> bytes:
        raw = s.encode("utf-8")
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    out = [struct.pack("<I", 6), string(spec), struct.pack("<I", revision)]
    out.append(struct.pack("<I", len(variables)))
    for name, value in variables.items():
        if isinstance(value, torch.Tensor):
            if value.dtype == torch.bfloat16:
                arr = value.view(torch.int16).numpy()
                type_name = "bfloat16"
            else:
                arr = value.numpy()
                type_name = str(arr.dtype)
        else:
            arr = np.asarray(value)
            type_name = str(arr.dtype)
        raw = np.ascontiguousarray(arr).tobytes()
        out.append(string(name) + struct.pack("<B", arr.ndim))
        out.append(struct.pack("<" + "I" * arr.ndim, *arr.shape))
        out.append(struct.pack("<BI", DTYPES.index(type_name), len(raw)) + raw)
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out.append(string(alias) + string(target))
    path = Path(path)
    path.write_bytes(b"".join(out))
    return path


# -- Whisper ---------------------------------------------------------------------------------


def _linear(variables: dict, prefix: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = variables[f"{prefix}/weight"]
    scale = variables.get(f"{prefix}/weight_scale")
    if scale is not None:  # int8 / int16 quantised: weight = q / scale (one scale per row)
        weight = weight.float() / scale.float().reshape(-1, *([1] * (weight.ndim - 1)))
    return weight.float(), (
        variables[f"{prefix}/bias"].float() if f"{prefix}/bias" in variables else None
    )


def _put_linear(
    out: dict, name: str, weight: torch.Tensor, bias: torch.Tensor | None, keep_bias: bool = True
) -> None:
    out[f"{name}.weight"] = weight.contiguous()
    if bias is not None and keep_bias:
        out[f"{name}.bias"] = bias.contiguous()


def _split_qkv(out: dict, variables: dict, src: str, dst: str, parts: tuple[str, ...]) -> None:
    """Un-fuse a fused projection (CT2 concatenates q, k, v rows); Whisper's k has no bias."""
    weight, bias = _linear(variables, src)
    n = len(parts)
    weights = weight.chunk(n, 0)
    biases = bias.chunk(n, 0) if bias is not None else [None] * n
    for part, w, b in zip(parts, weights, biases):
        keep = part != "k_proj"
        if not keep and b is not None and float(b.abs().max()) > 1e-6:
            raise TopoInputError(f"{src}: the key bias is not zero (not a Whisper model?)")
        _put_linear(out, f"{dst}.{part}", w, b, keep)


def _norm(out: dict, variables: dict, src: str, dst: str) -> None:
    out[f"{dst}.weight"] = variables[f"{src}/gamma"].float().contiguous()
    out[f"{dst}.bias"] = variables[f"{src}/beta"].float().contiguous()


def _count_layers(variables: dict, stack: str) -> int:
    n = 0
    while f"{stack}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    return n


def _self_attention(out: dict, variables: dict, s: str, d: str) -> None:
    """A layer's fused self-attention (CT2 ``s``) as Whisper's q/k/v/out projections (``d``)."""
    qkv = ("q_proj", "k_proj", "v_proj")
    _split_qkv(out, variables, f"{s}/self_attention/linear_0", f"{d}.self_attn", qkv)
    _put_linear(out, f"{d}.self_attn.out_proj", *_linear(variables, f"{s}/self_attention/linear_1"))
    _norm(out, variables, f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm")


def _feed_forward(out: dict, variables: dict, s: str, d: str) -> None:
    """A layer's feed-forward block and its layer norm."""
    _put_linear(out, f"{d}.fc1", *_linear(variables, f"{s}/ffn/linear_0"))
    _put_linear(out, f"{d}.fc2", *_linear(variables, f"{s}/ffn/linear_1"))
    _norm(out, variables, f"{s}/ffn/layer_norm", f"{d}.final_layer_norm")


def whisper_state_dict(variables: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """WhisperForConditionalGeneration's state dict and config fields from CT2 variables."""
    out: dict[str, torch.Tensor] = {}
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        out[f"{enc}.{conv}.weight"] = variables[f"encoder/{conv}/weight"].float().contiguous()
        out[f"{enc}.{conv}.bias"] = variables[f"encoder/{conv}/bias"].float().contiguous()
    out[f"{enc}.embed_positions.weight"] = variables["encoder/position_encodings/encodings"].float()
    _norm(out, variables, "encoder/layer_norm", f"{enc}.layer_norm")
    n_enc = _count_layers(variables, "encoder")
    for i in range(n_enc):
        s, d = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        _self_attention(out, variables, s, d)
        _feed_forward(out, variables, s, d)
    out[f"{dec}.embed_tokens.weight"] = variables["decoder/embeddings/weight"].float().contiguous()
    out[f"{dec}.embed_positions.weight"] = variables["decoder/position_encodings/encodings"].float()
    _norm(out, variables, "decoder/layer_norm", f"{dec}.layer_norm")
    n_dec = _count_layers(variables, "decoder")
    for i in range(n_dec):
        s, d = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        _self_attention(out, variables, s, d)
        _split_qkv(out, variables, f"{s}/attention/linear_0", f"{d}.encoder_attn", ("q_proj",))
        _split_qkv(
            out, variables, f"{s}/attention/linear_1", f"{d}.encoder_attn", ("k_proj", "v_proj")
        )
        _put_linear(
            out, f"{d}.encoder_attn.out_proj", *_linear(variables, f"{s}/attention/linear_2")
        )
        _norm(out, variables, f"{s}/attention/layer_norm", f"{d}.encoder_attn_layer_norm")
        _feed_forward(out, variables, s, d)
    embed = out[f"{dec}.embed_tokens.weight"]
    proj = variables.get("decoder/projection/weight")
    tied = proj is None or torch.equal(proj.float(), embed)
    if not tied:
        out["proj_out.weight"] = proj.float().contiguous()
    fields = {
        "vocab_size": int(embed.shape[0]),
        "d_model": int(embed.shape[1]),
        "num_mel_bins": int(out[f"{enc}.conv1.weight"].shape[1]),
        "encoder_layers": n_enc,
        "decoder_layers": n_dec,
        "encoder_attention_heads": int(variables["encoder/num_heads"]),
        "decoder_attention_heads": int(variables["decoder/num_heads"]),
        "encoder_ffn_dim": int(out[f"{enc}.layers.0.fc1.weight"].shape[0]),
        "decoder_ffn_dim": int(out[f"{dec}.layers.0.fc1.weight"].shape[0]),
        "max_source_positions": int(out[f"{enc}.embed_positions.weight"].shape[0]),
        "max_target_positions": int(out[f"{dec}.embed_positions.weight"].shape[0]),
        "tie_word_embeddings": tied,
    }
    return out, fields


def convert_whisper_ct2(
    model_bin: Path | list, tokenizer_json: Path, out_dir: Path, ct2_config: Path | None = None
) -> Path:
    """A CTranslate2 Whisper (model.bin, or its parts) -> a transformers Whisper folder.

    Writes safetensors (fp32), config.json, generation_config.json, the tokenizer and a
    WhisperFeatureExtractor; raises if transformers reports any missing / unexpected key.
    """
    import json

    import transformers as tf

    header, variables = read_ct2(model_bin)
    if header["spec"] != "WhisperSpec":
        raise TopoInputError(f"not a CTranslate2 Whisper model ({header['spec']})", model_bin)
    state, fields = whisper_state_dict(variables)
    extra = json.loads(Path(ct2_config).read_text()) if ct2_config else {}
    tok = tf.WhisperTokenizerFast(tokenizer_file=str(tokenizer_json))
    ids = {
        t: tok.convert_tokens_to_ids(t)
        for t in (
            "<|endoftext|>",
            "<|startoftranscript|>",
            "<|notimestamps|>",
            "<|transcribe|>",
            "<|translate|>",
        )
    }
    tok.add_special_tokens(
        {
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
        }
    )
    multilingual = fields["vocab_size"] >= 51865
    config = tf.WhisperConfig(
        **fields,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        suppress_tokens=extra.get("suppress_ids", []),
        begin_suppress_tokens=extra.get("suppress_ids_begin", [220, ids["<|endoftext|>"]]),
    )
    config.architectures = ["WhisperForConditionalGeneration"]
    with torch.device("meta"):
        model = tf.WhisperForConditionalGeneration(config)
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if k != "proj_out.weight"]
    if missing or result.unexpected_keys:
        raise TopoInputError(
            f"CT2 -> Whisper map: {len(missing)} missing ({missing[:3]}), "
            f"{len(result.unexpected_keys)} unexpected ({result.unexpected_keys[:3]}) keys",
            model_bin,
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    gen = tf.GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=config.suppress_tokens,
        begin_suppress_tokens=config.begin_suppress_tokens,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=multilingual,
        alignment_heads=extra.get("alignment_heads"),
    )
    model.generation_config = gen
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    tf.WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    return out_dir


def greedy_transcribe(
    model, feature_extractor, tokenizer, wave, rate: int = 16000, max_tokens: int = 64
) -> str:
    """Greedy decoding without ``generate``: the prompt, then argmax until end of text."""
    feats = feature_extractor(wave, sampling_rate=rate, return_tensors="pt").input_features
    feats = feats.to(next(model.parameters()).dtype)
    ids = [tokenizer.convert_tokens_to_ids("<|startoftranscript|>")]
    if model.config.vocab_size >= 51865:
        ids += [tokenizer.convert_tokens_to_ids(t) for t in ("<|en|>", "<|transcribe|>")]
    ids.append(tokenizer.convert_tokens_to_ids("<|notimestamps|>"))
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    prompt = len(ids)
    with torch.no_grad():
        encoded = model.model.encoder(input_features=feats).last_hidden_state
        for _ in range(max_tokens):
            logits = model(encoder_outputs=(encoded,), decoder_input_ids=torch.tensor([ids])).logits
            nxt = int(logits[0, -1].argmax())
            if nxt == eot:
                break
            ids.append(nxt)
    return tokenizer.decode(ids[prompt:], skip_special_tokens=True).strip()
