"""Benchmark: K categories each against the rest, one pass vs a per-category scipy loop.

Synthetic screen: K categories x ``--per-category`` stimuli (shuffled order), U units, float32
activations with a planted effect for each category in its own block of units. Compared:

- topo: one streaming pass of ``SufficientStats`` with one group per category (batches of
  ``--batch`` stimuli, many categories per batch), then ``category_vs_rest`` computes t, df,
  p and d for all K x U at once from the totals minus each category;
- reference (as the anchors' scripts do it): for each category,
  ``scipy.stats.ttest_ind(x[g == k], x[g != k], equal_var=False)`` on the raw activations.

The scipy loop over all K categories would take hours at full size, so it is timed on a seeded
random subset of ``--ref-categories`` categories and extrapolated linearly to K (said so in the
output; ``--ref-categories 0`` runs all K). Accuracy: t of every timed category against that
float32 scipy run, and t of all K categories against scipy on float64 copies of
``--check-units`` units (scipy on float32 input computes in float32).

Usage: ``python bench/screen.py [--categories 1000] [--units 100000] [--per-category 5]``
(peak memory about 6.5x the raw data: 2 GB of float32 activations -> ~13 GB).
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

from topocli.stats.contrasts import category_vs_rest  # noqa: E402
from topocli.stats.suffstats import SufficientStats  # noqa: E402


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _rel_diff(ours: np.ndarray, ref: np.ndarray, floor: float = 0.0) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    ok = np.isfinite(ref) & np.isfinite(ours) & (np.abs(ref) >= floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(ours[ok] - ref[ok]) / np.abs(ref[ok])
    rel = rel[np.isfinite(rel)]
    return float(rel.max()) if rel.size else 0.0


def _make_data(k: int, per: int, units: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(k), per)
    rng.shuffle(groups)
    x = np.empty((groups.size, units), dtype=np.float32)
    rng.standard_normal(dtype=np.float32, out=x)
    x += np.float32(1.0)
    block = max(1, units // k)
    for cat in range(k):  # each category drives its own block of units
        cols = slice((cat * block) % units, (cat * block) % units + block)
        rows = np.flatnonzero(groups == cat)
        x[rows, cols] += np.float32(1.5)
    return x, groups


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--categories", type=int, default=1000)
    ap.add_argument("--units", type=int, default=100_000)
    ap.add_argument("--per-category", type=int, default=5, help="stimuli per category")
    ap.add_argument("--batch", type=int, default=256, help="stimuli per streamed batch")
    ap.add_argument("--ref-categories", type=int, default=8, help="0 = time scipy on all K")
    ap.add_argument("--check-units", type=int, default=200, help="units for the float64 check")
    ap.add_argument("--alternative", default="greater", choices=["greater", "less", "two-sided"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    k, units, per = args.categories, args.units, args.per_category
    n = k * per

    print(
        f"bench/screen.py: K={k:,} categories x {per} stimuli = {n:,} stimuli, {units:,} units "
        f"(float32, {n * units * 4 / 2**30:.2f} GiB), batch {args.batch}, "
        f"alternative={args.alternative}"
    )
    print(
        f"numpy {np.__version__}, scipy {scipy.__version__}, cpus {len(os.sched_getaffinity(0))}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    t0 = time.perf_counter()
    x, groups = _make_data(k, per, units, args.seed)
    print(f"data generated in {time.perf_counter() - t0:.1f} s")

    # ---- topo: one pass + all K maps at once
    t0 = time.perf_counter()
    stats = SufficientStats(k, units)
    for i in range(0, n, args.batch):
        stats.update(x[i : i + args.batch], groups[i : i + args.batch])
    t1 = time.perf_counter()
    maps = category_vs_rest(stats, args.alternative)
    t2 = time.perf_counter()
    ours = t2 - t0
    accumulate = t1 - t0
    t3 = time.perf_counter()
    category_vs_rest(stats, args.alternative, pvalues=False)
    t_only = time.perf_counter() - t3
    print("\ntopo (one pass, all categories)")
    rows = [
        (f"accumulate SufficientStats({k}, {units:,})", accumulate),
        (f"category_vs_rest t, df, p, d [{k} x {units:,}]", t2 - t1),
        ("total", ours),
        ("(category_vs_rest without p-values)", t_only),
    ]
    for label, value in rows:
        print(f"  {label:<48}: {value:8.2f} s")

    # ---- reference: per-category scipy loop on the raw activations
    rng = np.random.default_rng(args.seed + 1)
    n_ref = k if args.ref_categories <= 0 else min(args.ref_categories, k)
    ref_cats = np.sort(rng.choice(k, n_ref, replace=False))
    per_cat, rel32, rel32_big, abs32 = [], 0.0, 0.0, 0.0
    for cat in ref_cats:
        t0 = time.perf_counter()
        inside = groups == cat
        r = scipy.stats.ttest_ind(
            x[inside], x[~inside], axis=0, equal_var=False, alternative=args.alternative
        )
        per_cat.append(time.perf_counter() - t0)
        rel32 = max(rel32, _rel_diff(maps.t[cat], r.statistic))
        rel32_big = max(rel32_big, _rel_diff(maps.t[cat], r.statistic, floor=1.0))
        abs32 = max(abs32, float(np.nanmax(np.abs(maps.t[cat] - r.statistic))))
        del r
    ref_total = float(np.mean(per_cat)) * k
    extrapolated = n_ref < k
    print("\nscipy loop (ttest_ind per category vs the rest, raw float32 activations)")
    print(
        f"  timed {n_ref} of {k} categories: {np.sum(per_cat):.2f} s "
        f"({np.mean(per_cat):.3f} s per category, min {np.min(per_cat):.3f}, max "
        f"{np.max(per_cat):.3f})"
    )
    label = f"extrapolated to all {k} categories" if extrapolated else "all categories"
    print(f"  {label}: {ref_total:10.1f} s")
    print(
        f"\nspeed-up: {ref_total / ours:8.1f} x (goal >= 100)"
        + (f" [scipy time extrapolated from {n_ref} categories]" if extrapolated else "")
    )
    t_maps = ref_total / (accumulate + t_only)
    print(f"  (t-maps only, without p-values on our side: {t_maps:.1f} x)")

    # ---- accuracy
    cols = np.sort(rng.choice(units, min(args.check_units, units), replace=False))
    x64 = x[:, cols].astype(np.float64)
    rel64 = 0.0
    for cat in range(k):
        inside = groups == cat
        r = scipy.stats.ttest_ind(
            x64[inside], x64[~inside], axis=0, equal_var=False, alternative=args.alternative
        )
        rel64 = max(rel64, _rel_diff(maps.t[cat, cols], r.statistic))
    print("\naccuracy")
    print(
        f"  max rel diff of t vs scipy on float64 copies, all {k} categories x {cols.size} units:"
        f" {rel64:.2e} (goal <= 1e-5)"
    )
    print(
        f"  vs the timed scipy float32 runs ({n_ref} categories x {units:,} units): max rel "
        f"{rel32:.2e}, where |t| >= 1 {rel32_big:.2e}, max abs {abs32:.2e}"
    )
    block = max(1, units // k)
    start = (np.arange(k) * block) % units
    inside = np.zeros(maps.t.shape, dtype=bool)
    for cat in range(k):
        inside[cat, start[cat] : start[cat] + block] = True
    print(
        f"  planted blocks: mean t {np.nanmean(maps.t[inside]):.2f} inside vs "
        f"{np.nanmean(maps.t[~inside]):.3f} elsewhere"
    )
    print(f"\npeak RSS {_peak_gib():.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
