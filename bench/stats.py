"""Benchmark: Welch t + BH-FDR for many units from two conditions, against scipy.

(a) From raw float32 activations: stream them through ``SufficientStats`` (float64, batch by
    batch, as the extraction does), then ``welch_t`` + ``bh_fdr``; against
    ``scipy.stats.ttest_ind(equal_var=False)`` + ``scipy.stats.false_discovery_control`` on the
    same float32 arrays. Goal: >= 3x faster, max relative difference of t <= 1e-5.
(b) From the sufficient statistics only (what ``topo localize`` does after extraction).
    Goal: milliseconds.

Accuracy is checked against scipy on float64 copies of a subset of units (scipy on float32 input
computes in float32, so its own t carries ~1e-7 relative rounding, and much more where t is near
0; that difference is printed too). Every figure comes from this one run.

Usage: ``python bench/stats.py [--units 1000000] [--stimuli 500] [--batch 100]``
(peak memory about 3.5x the raw data: 1e6 units x 2 x 500 stimuli = 4 GB of float32 -> ~14 GB).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from topocli.stats.contrasts import bh_fdr, t_pvalue, welch_t  # noqa: E402
from topocli.stats.suffstats import SufficientStats  # noqa: E402


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _rel_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    ok = np.isfinite(ref) & np.isfinite(ours)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(ours[ok] - ref[ok]) / np.abs(ref[ok])
    rel = rel[np.isfinite(rel)]
    return float(rel.max()) if rel.size else 0.0


def _make_data(units: int, stimuli: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    on = np.empty((stimuli, units), dtype=np.float32)
    off = np.empty((stimuli, units), dtype=np.float32)
    rng.standard_normal(dtype=np.float32, out=on)
    rng.standard_normal(dtype=np.float32, out=off)
    effect = max(1, units // 10)  # 10% of units respond more to ON
    on[:, :effect] += np.float32(0.25)
    on += np.float32(2.0)  # a baseline offset, as real activations have
    off += np.float32(2.0)
    return on, off


def _ours_from_raw(on: np.ndarray, off: np.ndarray, batch: int, alternative: str) -> dict:
    times = {}
    t0 = time.perf_counter()
    stats = SufficientStats(2, on.shape[1])
    for i in range(0, on.shape[0], batch):
        stats.update(on[i : i + batch], 0)
    for i in range(0, off.shape[0], batch):
        stats.update(off[i : i + batch], 1)
    t1 = time.perf_counter()
    var = stats.variance()
    res = welch_t(
        stats.count[0], stats.mean[0], var[0], stats.count[1], stats.mean[1], var[1], alternative
    )
    t2 = time.perf_counter()
    q = bh_fdr(res.p)
    t3 = time.perf_counter()
    times.update(accumulate=t1 - t0, welch=t2 - t1, fdr=t3 - t2, total=t3 - t0)
    return {"stats": stats, "res": res, "q": q, "times": times}


def _from_stats(stats: SufficientStats, alternative: str, repeats: int) -> dict:
    best: dict[str, float] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        var = stats.variance()
        res = welch_t(
            stats.count[0],
            stats.mean[0],
            var[0],
            stats.count[1],
            stats.mean[1],
            var[1],
            alternative,
        )
        t1 = time.perf_counter()
        bh_fdr(res.p)
        t2 = time.perf_counter()
        t_pvalue(res.t, res.df, alternative)
        t3 = time.perf_counter()
        for key, value in (
            ("welch", t1 - t0),
            ("fdr", t2 - t1),
            ("p", t3 - t2),
            ("total", t2 - t0),
        ):
            best[key] = min(best.get(key, np.inf), value)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--units", type=int, default=1_000_000)
    ap.add_argument("--stimuli", type=int, default=500, help="stimuli per condition")
    ap.add_argument("--batch", type=int, default=100, help="stimuli per streamed batch")
    ap.add_argument("--alternative", default="greater", choices=["greater", "less", "two-sided"])
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats of each route (min)")
    ap.add_argument("--check-units", type=int, default=20_000, help="units for float64 check")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    print(
        f"bench/stats.py: {args.units:,} units, 2 x {args.stimuli} stimuli (float32, "
        f"{2 * args.units * args.stimuli * 4 / 2**30:.2f} GiB), batch {args.batch}, "
        f"alternative={args.alternative}"
    )
    print(
        f"numpy {np.__version__}, scipy {scipy.__version__}, cpus {len(os.sched_getaffinity(0))}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    t0 = time.perf_counter()
    on, off = _make_data(args.units, args.stimuli, args.seed)
    print(f"data generated in {time.perf_counter() - t0:.1f} s")

    ours_best, ref_best = np.inf, np.inf
    ours = ref = None
    for _ in range(args.repeats):
        run = _ours_from_raw(on, off, args.batch, args.alternative)
        if run["times"]["total"] < ours_best:
            ours_best, ours = run["times"]["total"], run
        t0 = time.perf_counter()
        r = scipy.stats.ttest_ind(on, off, axis=0, equal_var=False, alternative=args.alternative)
        q_ref = scipy.stats.false_discovery_control(r.pvalue)
        t1 = time.perf_counter()
        if t1 - t0 < ref_best:
            ref_best, ref = t1 - t0, (r, q_ref)
        del r, q_ref
    assert ours is not None and ref is not None
    r, q_ref = ref
    peak_after_raw = _peak_gib()

    tm = ours["times"]
    print("\n(a) from raw float32 arrays")
    print(f"  scipy ttest_ind + false_discovery_control : {ref_best:8.3f} s")
    print(
        f"  topo SufficientStats + welch_t + bh_fdr    : {tm['total']:8.3f} s  "
        f"(accumulate {tm['accumulate']:.3f}, welch_t {tm['welch']:.3f}, bh_fdr {tm['fdr']:.3f})"
    )
    speedup = ref_best / tm["total"]
    print(f"  speed-up                                   : {speedup:8.2f} x (goal >= 3)")

    res = ours["res"]
    cols = np.random.default_rng(args.seed + 1).choice(
        args.units, min(args.check_units, args.units), replace=False
    )
    cols.sort()
    r64 = scipy.stats.ttest_ind(
        on[:, cols].astype(np.float64),
        off[:, cols].astype(np.float64),
        axis=0,
        equal_var=False,
        alternative=args.alternative,
    )
    rel64 = _rel_diff(res.t[cols], r64.statistic)
    rel32 = _rel_diff(res.t, r.statistic.astype(np.float64))
    big = np.abs(r.statistic) >= 1
    rel32_big = _rel_diff(res.t[big], r.statistic[big].astype(np.float64))
    abs32 = float(np.nanmax(np.abs(res.t - r.statistic)))
    q_own = scipy.stats.false_discovery_control(res.p)
    print(
        f"  max rel diff of t vs scipy on float64 copies ({cols.size:,} units): {rel64:.2e} "
        f"(goal <= 1e-5)"
    )
    print(
        f"  vs the timed scipy run on float32 (computes in float32): max rel {rel32:.2e}, "
        f"max rel where |t| >= 1 {rel32_big:.2e}, max abs {abs32:.2e}"
    )
    print(
        f"  max rel diff of p vs scipy float64 copies: {_rel_diff(res.p[cols], r64.pvalue):.2e}; "
        f"q vs false_discovery_control(our p): {_rel_diff(ours['q'], q_own):.2e}; "
        f"q < 0.05: topo {int(np.sum(ours['q'] < 0.05)):,}, scipy(float32) "
        f"{int(np.sum(q_ref < 0.05)):,}"
    )

    fs = _from_stats(ours["stats"], args.alternative, repeats=3)
    print("\n(b) from sufficient statistics only (min of 3)")
    print(
        f"  welch_t (t, df, p) + bh_fdr: {fs['total'] * 1e3:8.1f} ms  (welch_t "
        f"{fs['welch'] * 1e3:.1f} ms of which p-values {fs['p'] * 1e3:.1f} ms; bh_fdr "
        f"{fs['fdr'] * 1e3:.1f} ms)"
    )
    print(f"  t and df alone            : {max(fs['welch'] - fs['p'], 0) * 1e3:8.1f} ms")
    print(f"  vs scipy from raw arrays  : {ref_best / fs['total']:8.1f} x faster")
    print(f"\npeak RSS {max(peak_after_raw, _peak_gib()):.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
