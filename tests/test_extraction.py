"""Streaming extraction equals numpy on the full activation matrix; the cache skips the model."""

import numpy as np
import pytest
import torch

from topocli.activations.extraction import extract, iter_activations
from topocli.models.topo_model import build_topo_model
from topocli.stimuli.stimulus_set import load_stimulus_set


def _full_matrix(model, stim):
    acts = np.zeros((len(stim), model.sheet.n_units))
    for rows, a, _ in iter_activations(model, stim, batch_size=len(stim)):
        acts[rows] = a.double().numpy()
    return acts


@pytest.mark.parametrize("batch_size", [1, 4, 5, 64])
def test_streaming_stats_equal_numpy(batch_size, tiny_model_dir, stimulus_dirs):
    model = build_topo_model(tiny_model_dir("bert"))
    stim = load_stimulus_set(stimulus_dirs["text"])  # 12 stimuli: 5 leaves an uneven batch
    acts = _full_matrix(model, stim)
    result = extract(model, stim, batch_size=batch_size)
    groups = stim.group_index()
    for g in range(stim.n_groups):
        rows = acts[groups == g]
        assert result.stats.count[g] == len(rows)
        np.testing.assert_allclose(result.stats.mean[g], rows.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            result.stats.variance()[g], rows.var(0, ddof=1), rtol=1e-4, atol=1e-6
        )


def test_transform_applies_before_accumulating(tiny_model_dir, stimulus_dirs):
    model = build_topo_model(tiny_model_dir("bert"))
    stim = load_stimulus_set(stimulus_dirs["text"])
    plain = extract(model, stim, batch_size=4)
    squared = extract(model, stim, batch_size=4, transform=lambda a: a**2)
    acts = _full_matrix(model, stim)
    g0 = stim.group_index() == 0
    np.testing.assert_allclose(squared.stats.mean[0], (acts[g0] ** 2).mean(0), rtol=1e-4)
    assert not np.allclose(plain.stats.mean[0], squared.stats.mean[0])


def test_cache_hit_skips_the_model(tiny_model_dir, stimulus_dirs, monkeypatch):
    model = build_topo_model(tiny_model_dir("bert"))
    stim = load_stimulus_set(stimulus_dirs["text"])
    first = extract(model, stim, batch_size=4, use_cache=True)
    assert not first.from_cache

    def fail(*a, **k):
        raise AssertionError("the model ran although the cache should have been used")

    monkeypatch.setattr(model, "record", fail)
    second = extract(model, stim, batch_size=4, use_cache=True)
    assert second.from_cache and second.cache_key == first.cache_key
    # the first run accumulates the float16-rounded values it caches: identical statistics
    np.testing.assert_array_equal(second.stats.mean, first.stats.mean)
    np.testing.assert_array_equal(second.stats.m2, first.stats.m2)


def test_cache_key_depends_on_adaptors_and_stimuli(tiny_model_dir, stimulus_dirs, tmp_path):
    from topocli.activations.extraction import cache_key

    a = build_topo_model(tiny_model_dir("bert"), seed=0)
    b = build_topo_model(tiny_model_dir("bert"), seed=1)
    stim = load_stimulus_set(stimulus_dirs["text"])
    assert cache_key(a, stim, "mean") != cache_key(b, stim, "mean")
    assert cache_key(a, stim, "mean") != cache_key(a, stim, "last")
    sub = stim.subset(["alpha"])
    assert cache_key(a, stim, "mean") != cache_key(a, sub, "mean")


def test_failed_extraction_leaves_no_cache(tiny_model_dir, stimulus_dirs, monkeypatch):
    from topocli.activations.extraction import activation_cache_dir

    model = build_topo_model(tiny_model_dir("bert"))
    stim = load_stimulus_set(stimulus_dirs["text"])
    calls = {"n": 0}
    real = model.record

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(model, "record", flaky)
    with pytest.raises(RuntimeError):
        extract(model, stim, batch_size=4, use_cache=True)
    root = activation_cache_dir()
    assert not root.exists() or list(root.iterdir()) == []


def _ddp_worker(rank, world, port, model_dir, stim_dir, out):
    import os

    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = build_topo_model(model_dir)
        stim = load_stimulus_set(stim_dir)
        result = extract(model, stim, batch_size=3)
        if rank == 0:
            np.savez(out, count=result.stats.count, mean=result.stats.mean, m2=result.stats.m2)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one(tiny_model_dir, stimulus_dirs, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.npz"
    model_dir = tiny_model_dir("bert")
    mp.spawn(_ddp_worker, args=(2, port, model_dir, stimulus_dirs["text"], out), nprocs=2)
    torch.manual_seed(0)
    single = extract(
        build_topo_model(model_dir), load_stimulus_set(stimulus_dirs["text"]), batch_size=3
    )
    ddp = np.load(out)
    np.testing.assert_array_equal(ddp["count"], single.stats.count)
    np.testing.assert_allclose(ddp["mean"], single.stats.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ddp["m2"], single.stats.m2, rtol=1e-4, atol=1e-6)
