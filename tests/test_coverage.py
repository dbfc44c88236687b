"""Coverage over every backbone family of issue 14, as tiny random models (nothing downloaded).

For each family: the areas found and their units (checked against the family's config), a
localize-like record of a few stimuli of each modality it takes (every area of the stream that
modality flows through moves, every other area is zero), and two steps of
:func:`topocli.training.loop.train` (the task loss and the spatial loss backpropagated into the
adaptors, which change). A family topo cannot support gives one TopoInputError line naming it.

The test prints the table ``family -> areas, units, record, train``: run with ``-s`` to see it.
A fast subset (one family per kind of difficulty) runs by default; the full table is ``slow``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tiny_families
import torch

from topocli.activations.extraction import extract
from topocli.errors import TopoInputError
from topocli.models.topo_model import build_topo_model
from topocli.stimuli.stimulus_set import load_stimulus_set
from topocli.training.loop import TrainConfig, train

STREAM_OF = {"text": "text", "image": "vision", "audio": "audio"}

W = tiny_families.H
TWO = [W, W]


@dataclass(frozen=True)
class Expected:
    """What a family's tiny model must give: units per stream and the modalities it takes."""

    units: dict[str, list[int]]
    modalities: frozenset[str] = field(default_factory=frozenset)


def _text() -> Expected:
    return Expected({"text": TWO}, frozenset({"text"}))


def _vision(units: list[int] = TWO) -> Expected:
    return Expected({"vision": units}, frozenset({"image"}))


def _audio(units: list[int] = TWO) -> Expected:
    return Expected({"audio": units}, frozenset({"audio"}))


def _vlm(vision: list[int] = TWO) -> Expected:
    return Expected({"vision": vision, "text": TWO}, frozenset({"image", "text"}))


EXPECTED: dict[str, Expected] = {
    **{
        f: _text()
        for f in (
            "llama",
            "mistral",
            "gemma2",
            "gemma3",
            "phi3",
            "falcon",
            "qwen2",
            "qwen3",
            "gpt2",
            "gpt_neox",
            "opt",
            "bert",
            "roberta",
            "distilbert",
        )
    },
    **{f: _vision() for f in ("vit", "deit", "dinov2", "siglip_vision")},
    # Swin: stage 1's patch merging doubles its 16 channels; the last stage has no merging
    "swin": _vision([32, 32]),
    "convnext": _vision([8, 16]),
    "resnet": _vision([8, 16]),
    "siglip": _vlm(),
    "clip": _vlm([24, 24]),
    **{f: _audio() for f in ("wav2vec2", "hubert", "wavlm", "whisper", "ast")},
    "clap": Expected({"text": TWO, "audio": [32, 32]}, frozenset({"text", "audio"})),
    "qwen2_vl": _vlm(),
    "qwen2_5_vl": _vlm(),
    "llava": _vlm([24, 24]),
    "idefics3": _vlm(),
    # BLIP-2: the vision tower and the Q-Former that reads it, then the OPT decoder
    "blip2": _vlm([W] * 4),
    "qwen2_5_omni_thinker": Expected(
        {"audio": TWO, "vision": TWO, "text": TWO}, frozenset({"audio", "image", "text"})
    ),
}

# the default run: a QK-norm decoder, a hierarchical vision stage, and the Omni thinker (packed
# vision patches and audio frames, three streams on one sheet); the whole table is ``slow``
# (about 5 s a family on an idle CPU core, 35 families)
FAST = ("qwen3", "swin", "qwen2_5_omni_thinker")


@dataclass
class Row:
    family: str
    areas: str = "-"
    units: str = "-"
    record: str = "-"
    train: str = "-"
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"{self.family:22s} {self.areas:24s} {self.units:14s} {self.record:22s} "
            f"{self.train:6s} {self.seconds:5.1f}s"
        )


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = tiny_families.build_family(family, root / family)
        return built[family]

    return get


def _units_by_stream(model) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for b in model.blocks:
        out.setdefault(b.stream, []).append(b.n_units)
    return out


def _check_record(model, modality: str, stim_dir: Path, row: Row) -> bool:
    stim = load_stimulus_set(stim_dir)
    stats = extract(model, stim, batch_size=3).stats
    if stats.count.sum() != len(stim):
        row.problems.append(f"{modality}: {stats.count.sum()} of {len(stim)} stimuli counted")
        return False
    ok = True
    for k, block in enumerate(model.blocks):
        values = stats.mean[:, model.sheet.area_slice(k)]
        if not np.isfinite(values).all():
            row.problems.append(f"{modality}: area {block.name} is not finite")
            ok = False
        moves = float(np.abs(values).max()) > 0
        if moves != (block.stream == STREAM_OF[modality]):
            where = "ran" if moves else "stayed zero"
            row.problems.append(f"{modality}: area {block.name} ({block.stream}) {where}")
            ok = False
    return ok


def _check_train(model, stim_dir: Path, out: Path, row: Row) -> bool:
    before = [a.weight.detach().clone() for a in model.adaptors]
    data = load_stimulus_set(stim_dir)
    config = TrainConfig(
        steps=2, batch_size=4, warmup=0, save_every=2, neighbourhoods=4, radius_mm=4.0, lr=1e-2
    )
    result = train(model, data, out, config)
    losses = [r["total_loss"] for r in result.log]
    # the adaptors of the areas this modality flows through learn; the others get no gradient
    stream = STREAM_OF[data.modality]
    moved = [not torch.equal(b, a.weight) for b, a in zip(before, model.adaptors)]
    right = all(m == (blk.stream == stream) for m, blk in zip(moved, model.blocks))
    if result.steps_done != 2 or not all(math.isfinite(v) for v in losses) or not right:
        row.problems.append(f"train: {result.steps_done} steps, losses {losses}, W moved {moved}")
        return False
    return True


def coverage_row(family: str, folder: Path, stimulus_dirs: dict, out: Path) -> Row:
    """Build, record and train one family; every failure is kept as a problem of its row."""
    row = Row(family)
    start = time.perf_counter()
    expected = EXPECTED[family]
    try:
        model = build_topo_model(folder, adaptor_noise=1e-3)
    except TopoInputError as exc:
        row.areas = "refused"
        row.problems.append(f"build: {exc}")
        return row
    units = _units_by_stream(model)
    row.areas = ", ".join(f"{s} {len(u)}" for s, u in units.items())
    row.units = "/".join(str(u) for u in sorted({n for us in units.values() for n in us}))
    if units != expected.units:
        row.problems.append(f"units {units}, expected {expected.units}")
    if model.modalities != expected.modalities:
        row.problems.append(f"modalities {sorted(model.modalities)}")
    results = []
    for modality in sorted(model.modalities):
        try:
            results.append((modality, _check_record(model, modality, stimulus_dirs[modality], row)))
        except Exception as exc:  # noqa: BLE001 - the table shows every failure, not the first
            row.problems.append(f"{modality}: {type(exc).__name__}: {str(exc)[:200]}")
            results.append((modality, False))
    row.record = " ".join(f"{m}:{'ok' if ok else 'FAIL'}" for m, ok in results)
    primary = sorted(expected.modalities)[0]
    fresh = build_topo_model(folder, adaptor_noise=1e-3)
    try:
        row.train = "ok" if _check_train(fresh, stimulus_dirs[primary], out, row) else "FAIL"
    except Exception as exc:  # noqa: BLE001
        row.problems.append(f"train: {type(exc).__name__}: {str(exc)[:200]}")
        row.train = "FAIL"
    row.seconds = time.perf_counter() - start
    return row


def _run_table(families, family_dir, stimulus_dirs, tmp_path) -> None:
    rows = [
        coverage_row(f, family_dir(f), stimulus_dirs, tmp_path / f"train-{f}") for f in families
    ]
    header = f"{'family':22s} {'areas':24s} {'units':14s} {'record':22s} train"
    print("\n" + header + "\n" + "\n".join(r.line() for r in rows))
    passed = sum(not r.problems for r in rows)
    print(f"{passed} of {len(rows)} families pass")
    failures = [f"{r.family}: {'; '.join(r.problems)}" for r in rows if r.problems]
    assert not failures, "\n".join(failures)


def test_coverage_fast_subset(family_dir, stimulus_dirs, tmp_path):
    _run_table(FAST, family_dir, stimulus_dirs, tmp_path)


@pytest.mark.slow
def test_coverage_every_family(family_dir, stimulus_dirs, tmp_path):
    rest = [f for f in EXPECTED if f not in FAST]
    _run_table(rest, family_dir, stimulus_dirs, tmp_path)


def test_omni_hub_layout_loads_the_thinker(family_dir, tmp_path):
    """The full Omni's folder (thinker.* weights, talker absent) loads its thinker's weights."""
    thinker = family_dir("qwen2_5_omni_thinker")
    full = tiny_families.build_omni_hub_layout(thinker, tmp_path / "omni")
    a = build_topo_model(thinker, mode="direct")
    b = build_topo_model(full, mode="direct")
    assert type(b.backbone).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    sa, sb = a.backbone.state_dict(), b.backbone.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert b.sheet.stages == [["audio", "vision"], ["text"]]


def test_multimodal_conditional_generation_keeps_its_lm_head(family_dir):
    """*ForConditionalGeneration loads as saved: lm-loss and logit distillation need logits."""
    model = build_topo_model(family_dir("qwen2_vl"), mode="direct")
    assert type(model.backbone).__name__ == "Qwen2VLForConditionalGeneration"
    ids = torch.tensor([[101, 2000, 2001, 102]])
    out = model.forward({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, "text")
    assert out.logits.shape == (1, 4, tiny_families.VOCAB)


def test_packed_patches_pool_per_image(family_dir, stimulus_dirs):
    """Qwen2-VL packs every image's patches on one axis: each stimulus pools only its own."""
    from topocli.activations.extraction import prepare_batch

    model = build_topo_model(family_dir("qwen2_vl"), mode="direct")
    stim = load_stimulus_set(stimulus_dirs["image"])
    both = prepare_batch(model, stim.stimuli[:2], np.arange(2))
    with torch.no_grad():
        _, together = model.record(both.inputs, "image", masks=both.masks)
        alone = [
            model.record(b.inputs, "image", masks=b.masks)[1]
            for b in (prepare_batch(model, [s], np.arange(1)) for s in stim.stimuli[:2])
        ]
    assert together.shape[0] == 2
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-4)


def test_split_image_crops_pool_per_image(family_dir, stimulus_dirs):
    """Idefics3 splits an image into crops: one row per stimulus, the mean of its crops."""
    from topocli.activations.extraction import prepare_batch

    model = build_topo_model(family_dir("idefics3"), mode="direct")
    stim = load_stimulus_set(stimulus_dirs["image"])
    batch = prepare_batch(model, stim.stimuli[:3], np.arange(3))
    assert batch.inputs["pixel_values"].shape[:2] == (3, 5)  # 2 x 2 crops + the whole image
    crops = {}
    hook = model.blocks[0].module.register_forward_hook(
        lambda _m, _i, out: crops.setdefault("x", out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        _, acts = model.record(batch.inputs, "image", masks=batch.masks)
    hook.remove()
    per_crop = crops["x"].float().mean(1)  # [15, U]: token mean of each crop
    expected = per_crop.reshape(3, 5, -1).mean(1)
    torch.testing.assert_close(acts[:, : model.blocks[0].n_units], expected)


def test_a_block_width_the_sheet_does_not_hold_is_one_line(family_dir, stimulus_dirs):
    """A misread width is refused at record time naming the area, never a matmul traceback."""
    from topocli.activations.extraction import prepare_batch

    model = build_topo_model(family_dir("bert"), mode="direct")
    model.blocks[0].n_units = 8  # what the first-norm rule gave QK-norm decoders
    stim = load_stimulus_set(stimulus_dirs["text"])
    batch = prepare_batch(model, stim.stimuli[:3], np.arange(3))
    with pytest.raises(TopoInputError, match=r"area .*layer\.0 gave 32 units .* gives it 8"):
        model.record(batch.inputs, "text", masks=batch.masks)


def test_an_unsupported_family_is_one_line(tmp_path):
    """A state-space LM (Mamba) has no attention blocks and no CNN stages: refused by name."""
    import transformers as tf

    cfg = tf.MambaConfig(vocab_size=64, hidden_size=W, num_hidden_layers=2, state_size=4)
    tf.MambaForCausalLM(cfg).save_pretrained(tmp_path / "mamba")
    with pytest.raises(TopoInputError, match="no transformer block stacks .* mamba model") as err:
        build_topo_model(tmp_path / "mamba")
    assert "\n" not in str(err.value)


def test_omni_audio_frames_pool_per_clip(family_dir, stimulus_dirs):
    """The Omni audio tower packs every clip's frames on one axis: each pools only its own,
    so a clip's vector is the same alone and beside a longer one; text areas stay zero."""
    from topocli.activations.extraction import prepare_batch

    model = build_topo_model(family_dir("qwen2_5_omni_thinker"), mode="direct")
    stim = load_stimulus_set(stimulus_dirs["audio"])
    clips = stim.stimuli[:3]  # 0.3 / 0.4 / 0.5 s: different frame counts
    both = prepare_batch(model, clips, np.arange(3))
    with torch.no_grad():
        _, together = model.record(both.inputs, "audio", masks=both.masks)
        alone = [
            model.record(b.inputs, "audio", masks=b.masks)[1]
            for b in (prepare_batch(model, [c], np.arange(1)) for c in clips)
        ]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-4)
    audio = [k for k, b in enumerate(model.blocks) if b.stream == "audio"]
    others = [k for k, b in enumerate(model.blocks) if b.stream != "audio"]
    assert all(together[:, model.sheet.area_slice(k)].abs().sum() > 0 for k in audio)
    assert all(together[:, model.sheet.area_slice(k)].abs().sum() == 0 for k in others)


@pytest.mark.parametrize(
    ("family", "modality"),
    [("qwen2_vl", "image"), ("idefics3", "image"), ("qwen2_5_omni_thinker", "audio")],
)
def test_final_representation_is_one_row_per_stimulus(family, modality, family_dir, stimulus_dirs):
    """Packed and split outputs give one final vector per stimulus, the same as run alone
    (the task loss of train and the fidelity read-out compare these)."""
    from topocli.activations.extraction import final_representation, prepare_batch

    model = build_topo_model(family_dir(family), mode="direct")
    stim = load_stimulus_set(stimulus_dirs[modality])
    batch = prepare_batch(model, stim.stimuli[:3], np.arange(3))
    with torch.no_grad():
        reps = final_representation(model.forward(batch.inputs, modality), batch.masks)
        alone = []
        for k in range(3):
            one = prepare_batch(model, stim.stimuli[k : k + 1], np.arange(1))
            alone.append(final_representation(model.forward(one.inputs, modality), one.masks))
    assert reps.shape[0] == 3
    torch.testing.assert_close(reps, torch.cat(alone), atol=1e-5, rtol=1e-4)
