"""Training: the spatial loss falls, only trainable weights move, resume is exact, DDP agrees."""

import contextlib

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


# ---------------------------------------------------------------------- one step's losses
def _tiny_batch(model, stim, n=4):
    from topocli.models.inputs import prepare_batch

    rows = np.arange(n)
    return prepare_batch(model, [stim.stimuli[i] for i in rows], rows)


def test_step_losses_match_the_reference_formula_and_skip_the_spatial_draw(
    tiny_model_dir, stimulus_dirs
):
    """The spatial loss of a step is the loop-free float64 formula on the recorded activations;
    without it the task loss is unchanged and no centres are drawn (the generator is untouched).
    """
    from topocli.training.loop import step_losses
    from topocli.training.spatial_loss import spatial_loss_reference

    model = build_topo_model(tiny_model_dir("bert"), adaptor_noise=1e-2)
    model.train(False)
    stim = load_stimulus_set(stimulus_dirs["text"])
    batch = _tiny_batch(model, stim, 6)
    pool = build_neighbourhood_pool(model.sheet, 3.0)
    gen = torch.Generator().manual_seed(7)
    state = gen.get_state()
    t_plain, s_none = step_losses(model, batch, pool, 8, gen, spatial=False)
    assert s_none is None and torch.equal(gen.get_state(), state)
    t_loss, s_loss = step_losses(model, batch, pool, 8, gen)
    with torch.no_grad():
        _, acts = model.record(batch.inputs, batch.modality, "mean", batch.masks)
    expected = spatial_loss_reference(acts, pool, 8, torch.Generator().manual_seed(7))
    assert s_loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert t_loss.item() == pytest.approx(t_plain.item(), rel=1e-6, abs=1e-9)
    # adaptor mode passes X on: the task loss does not depend on W, only the spatial loss does
    assert s_loss.requires_grad and not t_loss.requires_grad


def test_step_losses_task_loss_is_zero_for_identity_adaptors(tiny_model_dir, stimulus_dirs):
    """Planted answer: with W = I the student is the base model, so the distillation loss is 0,
    and with W != I it is still ~0 (X W W^+ = X) but the spatial loss is not."""
    from topocli.training.loop import step_losses

    for noise in (0.0, 1e-2):
        model = build_topo_model(tiny_model_dir("gpt2"), adaptor_noise=noise)
        model.train(False)
        batch = _tiny_batch(model, load_stimulus_set(stimulus_dirs["text"]))
        pool = build_neighbourhood_pool(model.sheet, 3.0)
        t_loss, s_loss = step_losses(model, batch, pool, 8, torch.Generator().manual_seed(0))
        assert abs(t_loss.item()) < 1e-5, (noise, t_loss.item())
        assert 0.0 < s_loss.item() < 1.0


def test_train_logs_the_losses_of_step_losses_on_the_first_batch(
    tiny_model_dir, stimulus_dirs, tmp_path
):
    """The loop's first logged losses are step_losses on batch_rows(step 0) with the seed's
    generator: the benchmark (bench/train_step.py) times the loop's own step."""
    from topocli.models.inputs import prepare_batch
    from topocli.training.loop import batch_rows, step_losses

    stim = load_stimulus_set(stimulus_dirs["text"])
    config = _config(steps=1, save_every=1, seed=3)
    model = build_topo_model(tiny_model_dir("bert"), adaptor_noise=1e-2, seed=3)
    model.train(False)
    rows = batch_rows(len(stim), 0, config.batch_size, config.seed)
    batch = prepare_batch(model, [stim.stimuli[i] for i in rows], rows)
    pool = build_neighbourhood_pool(model.sheet, config.radius_mm)
    gen = torch.Generator().manual_seed(config.seed)
    t_loss, s_loss = step_losses(model, batch, pool, config.neighbourhoods, gen)
    log = train(model, stim, tmp_path / "c", config).log
    assert log[0]["task_loss"] == pytest.approx(t_loss.item(), rel=1e-5, abs=1e-9)
    assert log[0]["spatial_loss"] == pytest.approx(s_loss.item(), rel=1e-5)


def test_a_training_step_inverts_each_adaptor_once(
    tiny_model_dir, stimulus_dirs, tmp_path, monkeypatch
):
    """The adaptor inverse is one LU per adaptor per (micro-)batch, not one per use."""
    from topocli.models import topo_model

    calls = []
    original = topo_model._pseudo_inverse

    def counting(w):
        calls.append(tuple(w.shape))
        return original(w)

    monkeypatch.setattr(topo_model, "_pseudo_inverse", counting)
    model = build_topo_model(tiny_model_dir("bert"), adaptor_noise=1e-2)
    stim = load_stimulus_set(stimulus_dirs["text"])
    # the step topo takes passes X on (X W W^+ = X): no inverse at all
    train(model, stim, tmp_path / "c", _config(steps=2, save_every=2, grad_accum=2))
    assert calls == []
    # the literal X W W^+ path: one inverse per adaptor per micro-batch
    with model.exact():
        train(model, stim, tmp_path / "d", _config(steps=2, save_every=2, grad_accum=2))
    assert len(calls) == 2 * 2 * len(model.adaptors)
    assert sorted(set(calls)) == sorted({tuple(a.weight.shape) for a in model.adaptors})


def test_the_adaptor_gradient_reaches_w_only_through_the_recorded_z(
    tiny_model_dir, stimulus_dirs
):
    """X W W^+ = X for an invertible W, so a step's gradient on W (task + spatial, through the
    whole backbone) equals the gradient of the spatial loss of ``pool(X) W`` alone, with X the
    base model's pooled block outputs: the cheaper step the training benchmark estimates."""
    from topocli.training.loop import step_losses, trainable_setup

    stim = load_stimulus_set(stimulus_dirs["text"])
    model = build_topo_model(tiny_model_dir("bert"), adaptor_noise=5e-2)
    base = build_topo_model(tiny_model_dir("bert"), adaptor_noise=0.0)
    for m in (model, base):
        m.train(False)
    params = trainable_setup(model)
    batch = _tiny_batch(model, stim, 6)
    pool = build_neighbourhood_pool(model.sheet, 3.0)
    with model.exact():  # the full X W W^+ path, through the whole backbone
        t_loss, s_loss = step_losses(model, batch, pool, 8, torch.Generator().manual_seed(5))
        (t_loss + 5.0 * s_loss).backward()
    full = [p.grad.detach().clone() for p in params]
    # the training step topo takes (X passed on) gives the same gradient
    for p in params:
        p.grad = None
    t_fast, s_fast = step_losses(model, batch, pool, 8, torch.Generator().manual_seed(5))
    (t_fast + 5.0 * s_fast).backward()
    for g, p in zip(full, params):
        np.testing.assert_allclose(
            p.grad.numpy(), g.numpy(), rtol=1e-3, atol=1e-4 * float(g.abs().max())
        )
    assert abs(float(t_fast)) < 1e-6 and float(s_fast) == pytest.approx(float(s_loss), rel=1e-5)
    with torch.no_grad():
        _, pooled_x = base.record(batch.inputs, batch.modality, "mean", batch.masks)
    ws = [a.weight.detach().clone().requires_grad_(True) for a in model.adaptors]
    parts = torch.split(pooled_x, [b.n_units for b in model.blocks], dim=1)
    z = torch.cat([x @ w for x, w in zip(parts, ws)], dim=1)
    (5.0 * spatial_loss(z, pool, 8, torch.Generator().manual_seed(5))).backward()
    scale = max(float(g.abs().max()) for g in full)
    assert scale > 0
    for g, w in zip(full, ws):
        np.testing.assert_allclose(g.numpy(), w.grad.numpy(), rtol=1e-3, atol=1e-4 * scale)


def test_alpha_zero_in_adaptor_mode_is_refused_in_one_line(tmp_path, capsys):
    from topocli.cli import main

    corpus = tmp_path / "text"
    corpus.mkdir()
    (corpus / "lines.txt").write_text("\n".join(f"line {i}" for i in range(40)) + "\n")
    argv = ["train", "--data", str(corpus), "--alpha", "0", "--out", str(tmp_path / "ckpt")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--alpha 0 in adaptor mode trains nothing" in err and err.count("\n") == 1
    assert not (tmp_path / "ckpt").exists()


def test_an_adaptor_step_runs_one_forward_and_a_direct_step_two(tiny_model_dir, stimulus_dirs):
    """On the fast path the student's output is the teacher's, so the teacher pass is skipped
    (task loss exactly 0); direct mode, or the literal X W W^+ path, still runs it."""
    from topocli.training.loop import step_losses

    stim = load_stimulus_set(stimulus_dirs["text"])
    for mode, exact, passes in (("adaptor", False, 1), ("adaptor", True, 2), ("direct", False, 2)):
        model = build_topo_model(tiny_model_dir("bert"), mode=mode, adaptor_noise=5e-2)
        model.train(False)
        calls: list[int] = []
        model.backbone.register_forward_hook(lambda *_, seen=calls: seen.append(1))
        batch = _tiny_batch(model, stim, 6)
        pool = build_neighbourhood_pool(model.sheet, 3.0)
        with model.exact() if exact else contextlib.nullcontext():
            t_loss, _ = step_losses(model, batch, pool, 8, torch.Generator().manual_seed(5))
        assert len(calls) == passes, (mode, exact)
        if passes == 1:
            assert float(t_loss) == 0.0


def test_direct_mode_distils_from_the_base_model_not_from_itself(
    tmp_path, tiny_model_dir, stimulus_dirs
):
    """Direct mode trains the blocks themselves, so the teacher (``bypass``) must keep running
    the base weights: after training, the task loss is > 0 and the bypassed output equals a
    freshly built base model's; resuming keeps the base as the teacher too."""
    from topocli.training.loop import step_losses, trainable_setup

    stim = load_stimulus_set(stimulus_dirs["text"])
    model = build_topo_model(tiny_model_dir("bert"), mode="direct")
    base = build_topo_model(tiny_model_dir("bert"), mode="direct")
    for m in (model, base):
        m.train(False)
    params = trainable_setup(model)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))  # as if the spatial loss had moved them
    batch = _tiny_batch(model, stim, 4)
    pool = build_neighbourhood_pool(model.sheet, 3.0)
    t_loss, _ = step_losses(model, batch, pool, 8, torch.Generator().manual_seed(5))
    assert float(t_loss) > 1e-4
    with torch.no_grad():
        with model.bypass():
            teacher = model.forward(batch.inputs, batch.modality)
        expected = base.forward(batch.inputs, batch.modality)
        student = model.forward(batch.inputs, batch.modality)
    assert torch.allclose(teacher.last_hidden_state, expected.last_hidden_state, atol=1e-6)
    assert not torch.allclose(student.last_hidden_state, expected.last_hidden_state, atol=1e-3)
    # a resumed checkpoint: the teacher comes from the base, not from the trained blocks
    train(model, stim, tmp_path / "d", _config(steps=2, save_every=2))
    reloaded = load_checkpoint(tmp_path / "d")
    reloaded.keep_teacher(build_topo_model(tiny_model_dir("bert"), mode="direct"))
    trainable_setup(reloaded)  # keeps the first teacher
    with torch.no_grad(), reloaded.bypass():
        again = reloaded.forward(batch.inputs, batch.modality)
    assert torch.allclose(again.last_hidden_state, expected.last_hidden_state, atol=1e-6)
