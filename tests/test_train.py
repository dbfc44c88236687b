"""Training: the spatial loss falls, only trainable weights move, resume is exact, DDP agrees."""

import numpy as np
import pytest
import torch

from topocli.activations.extraction import iter_activations
from topocli.errors import TopoInputError
from topocli.models.checkpoint import load_checkpoint
from topocli.models.topo_model import build_topo_model
from topocli.stimuli.stimulus_set import load_stimulus_set
from topocli.training.loop import TrainConfig, train
from topocli.training.spatial_loss import build_neighbourhood_pool, sample_centres, spatial_loss


def _config(**kw):
    base = dict(
        alpha=5.0,
        radius_mm=3.0,
        neighbourhoods=8,
        steps=12,
        batch_size=4,
        lr=0.02,
        warmup=0,
        save_every=4,
        seed=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _eval_spatial(model, stim, radius=3.0):
    acts = torch.cat([a for _, a, _ in iter_activations(model, stim, batch_size=64)])
    pool = build_neighbourhood_pool(model.sheet, radius)
    centres = sample_centres(
        pool, min(16, pool.centres.numel()), torch.Generator().manual_seed(123)
    )
    with torch.no_grad():
        return float(spatial_loss(acts, pool, centres=centres))


@pytest.mark.parametrize("family", ["bert", "gpt2", "vit", "wav2vec2"])
def test_few_steps_lower_the_spatial_loss(family, tiny_model_dir, stimulus_dirs, tmp_path):
    model = build_topo_model(tiny_model_dir(family), adaptor_noise=1e-2)
    stim = load_stimulus_set(stimulus_dirs[next(iter(model.modalities))])
    before = _eval_spatial(model, stim)
    result = train(model, stim, tmp_path / "ckpt", _config(steps=15, batch_size=4))
    after = _eval_spatial(model, stim)
    assert result.steps_done == 15
    assert after < before - 0.02, (before, after)


def test_only_trainable_parameters_move(tiny_model_dir, stimulus_dirs, tmp_path):
    model = build_topo_model(tiny_model_dir("bert"), adaptor_noise=1e-2)
    frozen = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    w0 = [a.weight.detach().clone() for a in model.adaptors]
    train(model, load_stimulus_set(stimulus_dirs["text"]), tmp_path / "c", _config(steps=2))
    for n, p in model.backbone.named_parameters():
        assert torch.equal(p, frozen[n]), n
    assert all(not torch.equal(a.weight, w) for a, w in zip(model.adaptors, w0))


def test_direct_mode_trains_the_recorded_blocks_only(tiny_model_dir, stimulus_dirs, tmp_path):
    model = build_topo_model(tiny_model_dir("bert"), mode="direct")
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    train(model, load_stimulus_set(stimulus_dirs["text"]), tmp_path / "c", _config(steps=2))
    moved = {n for n, p in model.backbone.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith("encoder.layer.") for n in moved)
    reloaded = load_checkpoint(tmp_path / "c")
    for n, p in reloaded.backbone.named_parameters():
        assert torch.equal(p, dict(model.backbone.named_parameters())[n])


def test_resume_is_bit_identical(tiny_model_dir, stimulus_dirs, tmp_path):
    stim = load_stimulus_set(stimulus_dirs["text"])
    config = _config(steps=8, save_every=4, warmup=3)
    straight = build_topo_model(tiny_model_dir("bert"), adaptor_noise=1e-2)
    train(straight, stim, tmp_path / "a", config)

    class Killed(Exception):
        pass

    def crash_after_first_checkpoint(step):
        if step == 4:
            raise Killed  # the process dies right after its step-4 checkpoint

    first = build_topo_model(tiny_model_dir("bert"), adaptor_noise=1e-2)
    with pytest.raises(Killed):
        train(first, stim, tmp_path / "b", config, on_checkpoint=crash_after_first_checkpoint)
    # a new process sees only the folder: reload it and continue to step 8
    resumed = load_checkpoint(tmp_path / "b")
    result = train(resumed, stim, tmp_path / "b", config, resume=True)
    assert result.steps_done == 8 and len(result.log) == 8
    for a, b in zip(straight.adaptors, resumed.adaptors):
        assert torch.equal(a.weight, b.weight)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    tiny_model_dir, stimulus_dirs, tmp_path, monkeypatch
):
    import topocli.training.loop as train_mod

    model = build_topo_model(tiny_model_dir("bert"), adaptor_noise=1e-2)
    stim = load_stimulus_set(stimulus_dirs["text"])
    real = train_mod.spatial_loss
    calls = {"n": 0}

    def sometimes_nan(*a, **k):
        calls["n"] += 1
        value = real(*a, **k)
        return value * float("nan") if calls["n"] == 6 else value

    monkeypatch.setattr(train_mod, "spatial_loss", sometimes_nan)
    with pytest.raises(TopoInputError, match="step 6.*step 4"):
        train(model, stim, tmp_path / "c", _config(steps=10, save_every=4))
    kept = load_checkpoint(tmp_path / "c")
    assert kept.source["training"]["step"] == 4


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(batch_size=2), "at least 3 samples"),
        (dict(radius_mm=0.5), "radius"),
        (dict(steps=0), "--steps"),
    ],
)
def test_bad_options(kw, match, tiny_model_dir, stimulus_dirs, tmp_path):
    model = build_topo_model(tiny_model_dir("bert"))
    with pytest.raises(TopoInputError, match=match):
        train(model, load_stimulus_set(stimulus_dirs["text"]), tmp_path / "c", _config(**kw))


def _ddp_train(rank, world, port, model_dir, stim_dir, out):
    import os

    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = build_topo_model(model_dir, adaptor_noise=1e-2)
        train(model, load_stimulus_set(stim_dir), out, _config(steps=4, save_every=4))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_with_the_same_global_batch(
    tiny_model_dir, stimulus_dirs, tmp_path
):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(
        _ddp_train,
        args=(2, port, tiny_model_dir("bert"), stimulus_dirs["text"], tmp_path / "ddp"),
        nprocs=2,
    )
    single = build_topo_model(tiny_model_dir("bert"), adaptor_noise=1e-2)
    train(
        single,
        load_stimulus_set(stimulus_dirs["text"]),
        tmp_path / "one",
        _config(steps=4, save_every=4),
    )
    ddp = load_checkpoint(tmp_path / "ddp")
    for a, b in zip(single.adaptors, ddp.adaptors):
        np.testing.assert_allclose(
            a.weight.detach().numpy(), b.weight.detach().numpy(), atol=1e-5, rtol=1e-4
        )
    assert not torch.equal(single.adaptors[0].weight, torch.eye(32))


def test_topo_train_runs_a_causal_lm_from_the_command_line(tiny_model_dir, tmp_path, capsys):
    """TopoLM's case: a decoder with only logits in its output trains end to end."""
    from topocli.cli import main

    corpus = tmp_path / "text"
    corpus.mkdir()
    (corpus / "lines.txt").write_text(
        "\n".join(f"sentence number {i} about a thing" for i in range(40)) + "\n"
    )
    out = tmp_path / "lm"
    argv = ["train", "--model", str(tiny_model_dir("gpt2")), "--data", str(corpus)]
    argv += ["--steps", "2", "--batch-size", "4", "--save-every", "1", "--warmup", "0"]
    argv += ["--device", "cpu", "-q", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert (out / "topo.json").is_file() and (out / "report.html").is_file()


def test_topo_train_writes_a_manifest_and_files_with_the_users_umask(
    tiny_model_dir, tmp_path, capsys
):
    import os
    import stat

    from topocli.cli import main
    from topocli.reporting.reader import read_manifest

    corpus = tmp_path / "text"
    corpus.mkdir()
    (corpus / "lines.txt").write_text(
        "\n".join(f"sentence number {i} about a thing" for i in range(40)) + "\n"
    )
    out = tmp_path / "parent" / "ckpt"
    argv = ["train", "--model", str(tiny_model_dir("bert")), "--data", str(corpus)]
    argv += ["--steps", "2", "--batch-size", "4", "--save-every", "1", "--warmup", "0"]
    argv += ["--device", "cpu", "-q", "--out", str(out)]
    old = os.umask(0o022)
    try:
        assert main(argv) == 0, capsys.readouterr().err
    finally:
        os.umask(old)
    manifest = read_manifest(out, verify=True)  # every file listed, with its sha256
    assert manifest["command"] == "train" and manifest["parameters"]["steps"] == 2
    assert "adaptors.safetensors" in {o["path"] for o in manifest["outputs"]}
    assert manifest["extra"]["model"]["adaptor_sha256"]
    for path in (out, out.parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
    for name in ("adaptors.safetensors", "topo.json", "manifest.json", "report.html"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    # the folder is still a checkpoint topo train accepts (for --resume / --overwrite)
    from topocli.workflows.train.run import foreign_checkpoint_reason

    assert foreign_checkpoint_reason(out) is None
