"""TopoModel on tiny random models of every family."""

import numpy as np
import pytest
import tiny_models
import torch

from topocli.activations.extraction import extract, prepare_batch
from topocli.errors import TopoInputError
from topocli.models.blocks import discover_blocks, select_blocks
from topocli.models.topo_model import build_topo_model
from topocli.stimuli.stimulus_set import load_stimulus_set

FAMILY_MODALITIES = {
    "bert": {"text"},
    "gpt2": {"text"},
    "qwen2": {"text"},
    "vit": {"image"},
    "clip": {"text", "image"},
    "wav2vec2": {"audio"},
    "whisper": {"audio"},
}


@pytest.mark.parametrize("family", list(FAMILY_MODALITIES))
def test_every_family_extracts_right_shapes(family, tiny_model_dir, stimulus_dirs):
    model = build_topo_model(tiny_model_dir(family))
    assert model.modalities == FAMILY_MODALITIES[family]
    assert len(model.blocks) >= 2
    assert model.sheet.n_units == sum(b.n_units for b in model.blocks)
    for modality in model.modalities:
        stim = load_stimulus_set(stimulus_dirs[modality])
        result = extract(model, stim, batch_size=3)
        assert result.stats.mean.shape == (4, model.sheet.n_units)
        assert result.stats.count.sum() == len(stim)
        ran = [
            k
            for k, b in enumerate(model.blocks)
            if (b.stream == "vision") == (modality == "image") or family != "clip"
        ]
        for k in ran:
            sl = model.sheet.area_slice(k)
            assert np.isfinite(result.stats.mean[:, sl]).all()
            assert result.stats.mean[:, sl].std() > 0


def test_clip_streams_sit_side_by_side(tiny_model_dir):
    model = build_topo_model(tiny_model_dir("clip"))
    assert model.sheet.stages == [["text", "vision"]]
    streams = {a.stream: a.col0 for a in model.sheet.areas}
    assert streams["text"] == 0 and streams["vision"] > 0


@pytest.mark.parametrize("family", ["bert", "gpt2", "vit"])
def test_identity_adaptors_leave_outputs_unchanged(family, tiny_model_dir, stimulus_dirs):
    exact = build_topo_model(tiny_model_dir(family), adaptor_noise=0.0)
    noisy = build_topo_model(tiny_model_dir(family), adaptor_noise=1e-2, seed=1)
    modality = next(iter(exact.modalities))
    stim = load_stimulus_set(stimulus_dirs[modality])
    batch = prepare_batch(exact, stim.stimuli[:4], np.arange(4))
    with torch.no_grad():
        exact.remove_hooks()  # the bare backbone, no hooks at all
        base = exact.forward(batch.inputs, modality)
        exact_again = build_topo_model(tiny_model_dir(family), adaptor_noise=0.0)
        out_exact, _ = exact_again.record(batch.inputs, modality, masks=batch.masks)
        out_noisy, _ = noisy.record(batch.inputs, modality, masks=batch.masks)
    key = "logits" if hasattr(base, "logits") else "last_hidden_state"
    assert torch.equal(getattr(out_exact, key), getattr(base, key))
    torch.testing.assert_close(getattr(out_noisy, key), getattr(base, key), atol=1e-4, rtol=1e-4)
    # the noisy adaptor really changes the sheet activation Z = X W
    assert not torch.equal(noisy.adaptors[0].weight, torch.eye(noisy.blocks[0].n_units))


def test_pooling_equals_hand_computation(tiny_model_dir, stimulus_dirs):
    model = build_topo_model(tiny_model_dir("bert"), mode="direct")
    stim = load_stimulus_set(stimulus_dirs["text"])
    batch = prepare_batch(model, stim.stimuli[:5], np.arange(5))
    with torch.no_grad():
        _, mean_acts = model.record(batch.inputs, "text", "mean", batch.masks)
        _, last_acts = model.record(batch.inputs, "text", "last", batch.masks)
        hidden = model.backbone(**batch.inputs, output_hidden_states=True).hidden_states
    mask = batch.inputs["attention_mask"].numpy().astype(bool)
    assert (~mask).any(), "the batch must contain padding for this test to mean anything"
    for k in range(2):
        h = hidden[k + 1].numpy()  # hidden_states[0] is the embeddings
        sl = model.sheet.area_slice(k)
        for i in range(5):
            tokens = h[i][mask[i]]
            np.testing.assert_allclose(mean_acts[i, sl].numpy(), tokens.mean(0), atol=1e-5)
            np.testing.assert_allclose(last_acts[i, sl].numpy(), tokens[-1], atol=1e-6)


def test_edits_change_only_chosen_units_and_removal_restores(tiny_model_dir, stimulus_dirs):
    model = build_topo_model(tiny_model_dir("gpt2"), adaptor_noise=0.0)
    stim = load_stimulus_set(stimulus_dirs["text"])
    batch = prepare_batch(model, stim.stimuli[:4], np.arange(4))
    chosen = torch.tensor([1, 5, 7])

    def ablate(z):
        z = z.clone()
        z[..., chosen] = 0
        return z

    with torch.no_grad():
        out0, acts0 = model.record(batch.inputs, "text", masks=batch.masks)
        remove = model.hook_points[model.blocks[1].name].add_edit(ablate)
        out1, acts1 = model.record(batch.inputs, "text", masks=batch.masks)
        remove()
        out2, acts2 = model.record(batch.inputs, "text", masks=batch.masks)
    sl = model.sheet.area_slice(1)
    changed = (acts0 != acts1).any(0).nonzero().flatten()
    assert set(changed.tolist()) == {sl.start + int(c) for c in chosen}
    assert torch.equal(acts0[:, : sl.start], acts1[:, : sl.start])  # earlier area untouched
    assert not torch.equal(out0.logits, out1.logits)
    assert torch.equal(out0.logits, out2.logits) and torch.equal(acts0, acts2)


def test_area_selection(tiny_model_dir):
    model = build_topo_model(tiny_model_dir("clip"), areas=["vision:1", "text:0"])
    assert [b.name for b in model.blocks] == [
        "vision_model.encoder.layers.1",
        "text_model.encoder.layers.0",
    ]
    blocks = discover_blocks(model.backbone)
    with pytest.raises(TopoInputError, match="unknown area"):
        select_blocks(blocks, ["nonsense"])


def test_direct_mode_freezes_backbone_adaptor_mode_trains_only_w(tiny_model_dir):
    adaptor = build_topo_model(tiny_model_dir("bert"), mode="adaptor")
    assert all(p.requires_grad is False for p in adaptor.backbone.parameters())
    assert [p.shape for p in adaptor.trainable_parameters()] == [(32, 32), (32, 32)]


def test_fast_path_equals_the_literal_adaptor_computation(tiny_model_dir, stimulus_dirs):
    model = build_topo_model(tiny_model_dir("gpt2"), adaptor_noise=0.05, seed=2)
    stim = load_stimulus_set(stimulus_dirs["text"])
    batch = prepare_batch(model, stim.stimuli[:5], np.arange(5))
    with torch.no_grad():
        out_fast, acts_fast = model.record(batch.inputs, "text", "mean", batch.masks)
        with model.exact():
            out_exact, acts_exact = model.record(batch.inputs, "text", "mean", batch.masks)
    torch.testing.assert_close(acts_fast, acts_exact, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out_fast.logits, out_exact.logits, atol=1e-4, rtol=1e-4)
    assert not torch.equal(acts_fast, model.record(batch.inputs, "text")[1] * 0)


# --random-init SEED (issue 16): the untrained, seeded control of any backbone -----------------


def _constant_bert(folder):
    """A BERT whose every weight is 0.5: anything re-initialised stands out."""
    import transformers as tf

    cfg = tf.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        initializer_range=0.02,
    )
    model = tf.BertModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    model.save_pretrained(folder)
    tiny_models._minilm_tokenizer().save_pretrained(folder)
    return folder


def test_random_init_redraws_weights_with_the_models_own_init(tmp_path):
    folder = _constant_bert(tmp_path / "bert")
    state = torch.random.get_rng_state()
    a = build_topo_model(folder, random_init=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    b = build_topo_model(folder, random_init=3)
    c = build_topo_model(folder, random_init=4)
    wa = dict(a.backbone.named_parameters())
    wb, wc = dict(b.backbone.named_parameters()), dict(c.backbone.named_parameters())
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the same seed, the same weights
    q = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(wa[q], wc[q])
    # BERT's _init_weights (the planted answer): linear ~ N(0, initializer_range), bias 0,
    # LayerNorm weight 1 and bias 0; nothing keeps the saved 0.5
    assert abs(float(wa[q].std()) - 0.02) < 0.004 and abs(float(wa[q].mean())) < 0.004
    assert torch.equal(wa["encoder.layer.0.attention.self.query.bias"], torch.zeros(32))
    ln = "encoder.layer.0.output.LayerNorm"
    assert torch.equal(wa[f"{ln}.weight"], torch.ones(32))
    assert torch.equal(wa[f"{ln}.bias"], torch.zeros(32))
    assert not any(bool((w == 0.5).all()) for w in wa.values())
    plain = build_topo_model(folder)
    assert bool((dict(plain.backbone.named_parameters())[q] == 0.5).all())
    assert a.backbone.config.to_dict() == plain.backbone.config.to_dict()
    assert [blk.name for blk in a.blocks] == [blk.name for blk in plain.blocks]


def test_random_init_is_part_of_the_identity_and_the_cache_key(tmp_path, stimulus_dirs):
    from topocli.activations.cache import cache_key
    from topocli.models.checkpoint import model_identity

    folder = _constant_bert(tmp_path / "bert")
    stim = load_stimulus_set(stimulus_dirs["text"])
    plain, r1, r2 = (build_topo_model(folder, random_init=s) for s in (None, 1, 2))
    assert "random_init" not in model_identity(plain)  # older identities stay as they were
    assert model_identity(r1)["random_init"] == 1
    keys = {cache_key(m, stim, "mean") for m in (plain, r1, r2)}
    assert len(keys) == 3


def test_random_init_of_a_checkpoint_is_untrained_and_reloads(tmp_path):
    from topocli.models.checkpoint import load_checkpoint, save_checkpoint
    from topocli.models.registry import resolve_model

    folder = _constant_bert(tmp_path / "bert")
    trained = build_topo_model(folder, adaptor_noise=0.1, seed=1)
    ckpt = save_checkpoint(trained, tmp_path / "ckpt")
    control = resolve_model(str(ckpt), random_init=5)
    assert control.source["random_init"] == 5 and control.source["name"].endswith("-init-5")
    assert all(torch.equal(a.weight, torch.eye(32)) for a in control.adaptors)
    assert control.sheet.describe() == trained.sheet.describe()
    q = "encoder.layer.0.attention.self.query.weight"
    w = dict(control.backbone.named_parameters())[q]
    assert not bool((w == 0.5).all())
    # a checkpoint saved from the random-init model reloads the same random weights
    again = load_checkpoint(save_checkpoint(control, tmp_path / "ckpt2"))
    assert torch.equal(dict(again.backbone.named_parameters())[q], w)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3"])
def test_random_init_refuses_a_bad_seed(seed, tmp_path):
    from topocli.models.registry import resolve_model

    with pytest.raises(TopoInputError, match="--random-init must be an integer seed"):
        resolve_model(str(tmp_path), random_init=seed)


def test_random_init_of_a_cnn_resets_its_stages(tiny_model_dir, stimulus_dirs):
    import transformers as tf

    from topocli.models.backbones import randomly_initialise

    model = tf.ResNetModel(tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    randomly_initialise(model, 0)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and not any(bool((w == 0.5).all()) for w in convs)
