"""Streaming sufficient statistics against numpy on the full matrix (the oracle)."""

from __future__ import annotations

import datetime
import socket

import numpy as np
import pytest
import torch

import topocli.stats.suffstats as suffstats
from topocli.errors import TopoInputError
from topocli.stats.suffstats import SufficientStats, _batch_moments_torch, chan_merge

N_ROWS, N_UNITS, N_GROUPS = 103, 257, 6  # group 5 never occurs


def _data(seed: int = 0, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, N_GROUPS - 1, N_ROWS)
    # Large offset and unequal scales: a naive sum-of-squares formula would lose digits here.
    x = 1e3 + rng.standard_normal((N_ROWS, N_UNITS)) * rng.uniform(0.1, 5.0, N_UNITS)
    x += groups[:, None] * 0.5
    return x.astype(dtype), groups


def _oracle(x: np.ndarray, groups: np.ndarray, n_groups: int = N_GROUPS):
    x = np.asarray(x, dtype=np.float64)
    count = np.array([(groups == g).sum() for g in range(n_groups)], dtype=np.float64)
    mean = np.zeros((n_groups, x.shape[1]))
    var = np.full((n_groups, x.shape[1]), np.nan)
    m2 = np.zeros((n_groups, x.shape[1]))
    for g in range(n_groups):
        rows = x[groups == g]
        if rows.shape[0]:
            mean[g] = rows.mean(axis=0)
            m2[g] = ((rows - mean[g]) ** 2).sum(axis=0)
        if rows.shape[0] >= 2:
            var[g] = rows.var(axis=0, ddof=1)
    return count, mean, m2, var


def _assert_matches(stats: SufficientStats, x: np.ndarray, groups: np.ndarray) -> None:
    count, mean, m2, var = _oracle(x, groups, stats.n_groups)
    scale = float(np.abs(np.asarray(x, dtype=np.float64)).max())
    np.testing.assert_array_equal(stats.count, count)
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-13, atol=1e-14 * scale)
    np.testing.assert_allclose(stats.m2, m2, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.variance(), var, rtol=1e-9, atol=1e-12)


def _stream(x, groups, batch: int, n_groups: int = N_GROUPS) -> SufficientStats:
    stats = SufficientStats(n_groups, x.shape[1])
    for i in range(0, x.shape[0], batch):  # 103 rows: the last batch is uneven
        stats.update(x[i : i + batch], groups[i : i + batch])
    return stats


@pytest.mark.parametrize("batch", [1, 7, 32, 103])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_streaming_equals_numpy(batch, dtype, kind):
    x, groups = _data(1, dtype)
    data = torch.from_numpy(x) if kind == "torch" else x
    stats = _stream(data, groups, batch)
    _assert_matches(stats, x, groups)
    assert stats.count[-1] == 0 and np.all(np.isnan(stats.variance()[-1]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_torch_dtypes_and_device_path(dtype):
    x, groups = _data(2)
    xt = torch.from_numpy(x - 1e3).to(dtype)  # centred: fp16 / bf16 keep some digits
    before = xt.clone()
    exact = xt.double().numpy().copy()
    # CPU tensors go through the numpy route ...
    _assert_matches(_stream(xt, groups, 16), exact, groups)
    # ... and the device route (used for GPU tensors) is checked on CPU tensors too.
    present, mean, m2 = _batch_moments_torch(xt, groups)
    count, mean_o, m2_o, _ = _oracle(exact, groups)
    np.testing.assert_array_equal(present, np.flatnonzero(count))
    np.testing.assert_allclose(mean, mean_o[present], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m2, m2_o[present], rtol=1e-10, atol=1e-10)
    assert torch.equal(xt, before)  # the input is never modified


def test_requires_grad_tensor_is_accepted():
    x, groups = _data(3, np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    _assert_matches(_stream(xt, groups, 50), x, groups)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_is_reduced_on_device():
    x, groups = _data(4, np.float32)
    stats = _stream(torch.from_numpy(x).cuda(), groups, 20)
    _assert_matches(stats, x, groups)


def test_many_column_blocks_and_threads(monkeypatch):
    """Column blocking and the thread pool give the same numbers as one block."""
    monkeypatch.setattr(suffstats, "_CPU_BLOCK_ELEMS", 1024)
    monkeypatch.setattr(suffstats, "cpu_threads", lambda: 3)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((90, 5000)).astype(np.float32)
    groups = rng.integers(0, 4, 90)
    stats = _stream(x, groups, 40, n_groups=4)
    _assert_matches(stats, x, groups)


def test_single_int_group_and_sorted_batches():
    x, _ = _data(6)
    stats = SufficientStats(2, N_UNITS)
    stats.update(x[:50], 0)
    stats.update(x[50:], np.ones(N_ROWS - 50, dtype=np.int32))
    groups = np.r_[np.zeros(50, int), np.ones(N_ROWS - 50, int)]
    _assert_matches(stats, x, groups)


def test_bad_batches_raise():
    stats = SufficientStats(3, 4)
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        stats.update(np.zeros((2, 5)), [0, 1])
    with pytest.raises(ValueError, match="groups must be"):
        stats.update(np.zeros((2, 4)), [0])
    with pytest.raises(ValueError, match="lie in"):
        stats.update(np.zeros((2, 4)), [0, 3])
    with pytest.raises(ValueError, match="integers"):
        stats.update(np.zeros((2, 4)), [0.5, 1])
    stats.update(np.zeros((0, 4)), np.zeros(0, int))  # an empty batch is fine
    assert stats.count.sum() == 0


def test_memory_does_not_grow_with_stimuli():
    stats = SufficientStats(3, 64)
    sizes = (stats.count.nbytes, stats.mean.nbytes, stats.m2.nbytes)
    rng = np.random.default_rng(7)
    for _ in range(200):
        stats.update(rng.standard_normal((17, 64)), rng.integers(0, 3, 17))
    assert (stats.count.nbytes, stats.mean.nbytes, stats.m2.nbytes) == sizes
    assert stats.count.sum() == 200 * 17


def test_merge_equals_one_pass():
    x, groups = _data(8)
    a = _stream(x[:40], groups[:40], 9)
    b = _stream(x[40:], groups[40:], 13)
    merged = a.copy().merge(b)
    _assert_matches(merged, x, groups)
    # merging into an empty state, and an empty state into a full one, change nothing
    empty = SufficientStats(N_GROUPS, N_UNITS)
    assert empty.copy().merge(merged).allclose(merged, rtol=0, atol=0)
    assert merged.copy().merge(empty) == merged
    with pytest.raises(ValueError, match="cannot merge"):
        merged.merge(SufficientStats(N_GROUPS, N_UNITS + 1))


def test_chan_merge_matches_direct_formula():
    rng = np.random.default_rng(9)
    a, b = rng.normal(3, 2, (12, 5)), rng.normal(-1, 0.5, (7, 5))
    n, mean, m2 = chan_merge(
        12, a.mean(0), ((a - a.mean(0)) ** 2).sum(0), 7, b.mean(0), ((b - b.mean(0)) ** 2).sum(0)
    )
    both = np.vstack([a, b])
    assert n == 19
    np.testing.assert_allclose(mean, both.mean(0), rtol=1e-14)
    np.testing.assert_allclose(m2, ((both - both.mean(0)) ** 2).sum(0), rtol=1e-12)


def test_variance_ddof_and_small_counts():
    stats = SufficientStats(3, 2)
    stats.update(np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 5.0]]), [0, 0, 1])
    var = stats.variance()
    np.testing.assert_allclose(var[0], [2.0, 8.0])
    assert np.all(np.isnan(var[1])) and np.all(np.isnan(var[2]))
    np.testing.assert_allclose(stats.variance(ddof=0)[0], [1.0, 4.0])


def test_pooled_and_total_equal_numpy():
    x, groups = _data(10)
    stats = _stream(x, groups, 25)
    for ids in ([0], [1, 3], [0, 1, 2, 3, 4], [2, 5]):
        sel = np.isin(groups, ids)
        n, mean, m2 = stats.pooled(ids)
        assert n == sel.sum()
        np.testing.assert_allclose(mean, x[sel].mean(0), rtol=1e-13)
        np.testing.assert_allclose(m2, ((x[sel] - x[sel].mean(0)) ** 2).sum(0), rtol=1e-9)
    n, mean, m2 = stats.total()
    assert n == N_ROWS
    np.testing.assert_allclose(m2, ((x - x.mean(0)) ** 2).sum(0), rtol=1e-9)
    assert stats.pooled([5])[0] == 0
    with pytest.raises(ValueError):
        stats.pooled([6])


def test_save_load_round_trip(tmp_path):
    x, groups = _data(11, np.float32)
    stats = _stream(x, groups, 30)
    stats.metadata["groups"] = '["a", "b"]'
    path = stats.save(tmp_path / "sub" / "stats.safetensors", metadata={"split": "even"})
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    back = SufficientStats.load(path)
    assert back == stats
    assert back.metadata == {"groups": '["a", "b"]', "split": "even"}
    assert not (back != stats)


def test_load_bad_files(tmp_path):
    with pytest.raises(TopoInputError, match="not found"):
        SufficientStats.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(TopoInputError, match="junk.safetensors"):
        SufficientStats.load(junk)
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"weight": np.zeros(3)}, str(other))
    with pytest.raises(TopoInputError, match="not a sufficient-statistics file"):
        SufficientStats.load(other)


# ------------------------------------------------------------------------- torch.distributed
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _all_reduce_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    import topocli.stats.suffstats as ss

    ss._GATHER_CHUNK_ELEMS = 64  # exercise the column-chunked gather
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        x, groups = _data(12, np.float32)
        mine = (np.arange(N_ROWS) % world == rank) & ~((groups == 4) & (rank == 1))
        stats = _stream(x[mine], groups[mine], 11)  # group 4 lives on rank 0 only
        stats.all_reduce()
        stats.save(f"{out_dir}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_all_reduce_two_gloo_processes_equals_one(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_all_reduce_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    x, groups = _data(12, np.float32)
    keep = ~((groups == 4) & (np.arange(N_ROWS) % 2 == 1))
    r0 = SufficientStats.load(tmp_path / "rank0.safetensors")
    r1 = SufficientStats.load(tmp_path / "rank1.safetensors")
    assert r0 == r1  # every rank holds the same bytes
    _assert_matches(r0, x[keep], groups[keep])
    assert r0.allclose(_stream(x[keep], groups[keep], 11), rtol=1e-12, atol=1e-9)


def test_all_reduce_without_process_group_is_a_no_op():
    x, groups = _data(13)
    stats = _stream(x, groups, 50)
    before = stats.copy()
    assert stats.all_reduce() is stats and stats == before
