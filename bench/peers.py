"""Benchmark: the peers' functions, rewritten from their published formulas, beside topo's own.

Every row runs a peer function and topo's function on the same inputs, in one process,
alternating, ``--repeats`` times, and prints the median times, their ratio (peer / topo) and how
far the answers agree. The peers' code is not imported or copied: each ``peer_*`` function below
is written from the formula the peer publishes (paper / README / docstring), with the peer's
convention where it differs from topo's; where topo has a matching option it is used, and the
table says so, otherwise it says "no matching option".

Rows
----
- localize t (llm-localization): Welch t of sentences vs non-words on ``|activations|``
  (scipy ``ttest_ind(equal_var=False)``, two-sided p), top 1 % of units by t as the mask. topo:
  :class:`SufficientStats` + :func:`welch_t` (``alternative="two-sided"``); topo has no ``--abs``
  option, so the script passes topo ``|activations|`` itself.
- FDR (Topo-Omni): Benjamini-Hochberg with the untestable units (NaN p, e.g. the vision and audio
  areas of a text-only run) set to p = 1 and counted in m. topo: :func:`bh_fdr` leaves them out
  (no matching option). Agreement: q on the testable units, and the inflation factor.
- spatial loss (TDANN): ``1 - corr(r, 1 / (1 + d))`` per neighbourhood, ``r`` from responses
  standardised with the biased SD (``ddof=0``). topo: :func:`spatial_loss`, which is
  ``0.5 (1 - corr)`` with unbiased z-scores: ``r`` differs by a constant factor, which Pearson's
  corr ignores, so ``2 * topo`` is compared.
- spatial loss (TopoLM): ``0.5 (1 - corr(r, 1 / (1 + d)))``, ``r = corrcoef``.
- spatial loss (Topo-Omni): as TopoLM, neighbourhoods the strict disc ``d < radius``. topo:
  ``radius * (1 - 1e-6)`` (matching option: the radius), so both take the same units.
- smoothing (TopoLM): Gaussian ``conv2d`` with zero padding and no normalisation (edges shrink);
  topo: :func:`smooth_units` (normalised; no matching option). Agreement: interior units, and the
  factor a constant map is multiplied by at a corner.
- smoothing (Topo-Omni): ``scipy.ndimage.gaussian_filter(mode="nearest")``; topo as above.
- island Moran's I: per island (8-connected component of a thresholded map), row-standardised
  queen weights, ``I = n / S0 * z' W z / z' z``, permutation p from shuffles. topo:
  :func:`island_morans_i`.

Usage: ``python bench/peers.py [--quick] [--repeats 5]`` (default: 155,648 units on the 304 x 512
Topo-Omni sheet; ``--quick`` a 96 x 128 sheet).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from topocli.sheet import AreaSpec, Sheet  # noqa: E402
from topocli.stats.clusters import island_morans_i, label_components  # noqa: E402
from topocli.stats.contrasts import bh_fdr, variance_from_m2, welch_t  # noqa: E402
from topocli.stats.smoothing import fwhm_to_sigma, gaussian_kernel1d, smooth_units  # noqa: E402
from topocli.stats.suffstats import SufficientStats  # noqa: E402
from topocli.training.spatial_loss import (  # noqa: E402
    build_neighbourhood_pool,
    sample_centres,
    spatial_loss,
)

ROWS: list[tuple[str, ...]] = []


def alternate(calls: dict, repeats: int) -> dict[str, float]:
    """Median wall seconds of each call, the calls run in turn ``repeats`` times."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(v)) for name, v in times.items()}


def row(what: str, peer_fn, topo_fn, repeats: int, agreement: str, convention: str) -> None:
    """Time one peer / topo pair and keep its table row."""
    med = alternate({"peer": peer_fn, "topo": topo_fn}, repeats)
    ROWS.append(
        (
            what,
            f"{med['peer']:.3g}",
            f"{med['topo']:.3g}",
            f"{med['peer'] / med['topo']:.2g}",
            agreement,
            convention,
        )
    )
    print(f"  {what}: peer {med['peer']:.3g} s, topo {med['topo']:.3g} s", flush=True)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks."""
    return float(2 * np.sum(a & b) / max(1, a.sum() + b.sum()))


# ------------------------------------------------------------------------- peers, from formulas
def peer_localize(sent: np.ndarray, nonword: np.ndarray, top: float):
    """llm-localization: Welch t on |activations|, top ``top`` fraction of units by t."""
    t, p = scipy.stats.ttest_ind(np.abs(sent), np.abs(nonword), axis=0, equal_var=False)
    k = max(1, int(round(top * t.size)))
    mask = np.zeros(t.size, bool)
    mask[np.argsort(-np.nan_to_num(t, nan=-np.inf), kind="stable")[:k]] = True
    return t, p, mask


def peer_fdr_counting_untestable(p: np.ndarray) -> np.ndarray:
    """Topo-Omni's fallback: untestable units get p = 1 and count in m."""
    filled = np.where(np.isfinite(p), p, 1.0)
    m = filled.size
    order = np.argsort(filled)
    ranked = filled[order] * m / np.arange(1, m + 1)
    q = np.empty(m)
    q[order] = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    return q


def _neighbourhoods(pos: np.ndarray, centres: np.ndarray, radius: float, strict: bool):
    """Units of each centre's disc, found by brute-force distances (as the peers do)."""
    out = []
    for c in centres:
        d = np.hypot(*(pos - pos[c]).T)
        out.append(np.flatnonzero(d < radius if strict else d <= radius * (1 + 1e-9)))
    return out


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum())


def peer_spatial_loss(x: torch.Tensor, pos: torch.Tensor, hoods, convention: str) -> float:
    """Loop over neighbourhoods: r from the responses, D = 1 / (1 + d), lower triangle."""
    losses = []
    for units in hoods:
        idx = torch.as_tensor(units)
        resp = x[:, idx]
        if convention == "tdann":  # biased SD
            z = (resp - resp.mean(0)) / resp.std(0, unbiased=False)
            r = z.T @ z / (resp.shape[0] - 1)
        else:
            r = torch.corrcoef(resp.T)
        p = pos[idx]
        d = 1.0 / (1.0 + torch.cdist(p, p))
        i, j = torch.tril_indices(len(units), len(units), offset=-1)
        c = _pearson(r[i, j], d[i, j])
        losses.append(1 - c if convention == "tdann" else 0.5 * (1 - c))
    return float(torch.stack(losses).mean())


def peer_smooth_unnormalised(grids: torch.Tensor, sigma: float) -> torch.Tensor:
    """TopoLM: 2-D Gaussian conv2d with zero padding, not divided by the smoothed mask."""
    k = torch.as_tensor(gaussian_kernel1d(sigma), dtype=grids.dtype)
    k2 = torch.outer(k, k)[None, None]
    r = (k.numel() - 1) // 2
    return F.conv2d(grids[:, None], k2, padding=r)[:, 0]


def peer_island_moran(
    values: np.ndarray, labels: np.ndarray, min_size: int, permutations: int = 0
) -> dict[int, tuple[float, float]]:
    """Moran's I (and permutation p) per island, dense row-standardised queen weights."""
    rng = np.random.default_rng(0)
    out = {}
    for lab in range(1, int(labels.max()) + 1):
        r, c = np.nonzero((labels == lab) & np.isfinite(values))
        if r.size < min_size:
            continue
        w = (np.maximum(np.abs(r[:, None] - r), np.abs(c[:, None] - c)) == 1).astype(float)
        rs = w.sum(1, keepdims=True)
        w = np.divide(w, rs, out=np.zeros_like(w), where=rs > 0)
        z = values[r, c] - values[r, c].mean()
        scale = r.size / w.sum() / (z @ z)
        i_obs = float(scale * (z @ w @ z))
        n_ge = 0
        for _ in range(permutations):
            zp = rng.permutation(z)
            n_ge += scale * (zp @ w @ zp) >= i_obs
        out[lab] = (i_obs, (1 + n_ge) / (permutations + 1) if permutations else float("nan"))
    return out


# ------------------------------------------------------------------------------------- the rows
def bench_localize(args, sheet: Sheet, rng: np.random.Generator) -> None:
    u = sheet.n_units
    sent = rng.standard_normal((args.stimuli, u), dtype=np.float32)
    nonword = rng.standard_normal((args.stimuli, u), dtype=np.float32)
    sent[:, : u // 20] += np.float32(0.4)
    both = np.concatenate([sent, nonword])
    groups = np.repeat([0, 1], args.stimuli)

    def topo():
        s = SufficientStats.from_data(np.abs(both), groups, 2)
        var = variance_from_m2(s.count[:, None], s.m2)
        res = welch_t(s.count[0], s.mean[0], var[0], s.count[1], s.mean[1], var[1], "two-sided")
        k = max(1, int(round(0.01 * u)))
        mask = np.zeros(u, bool)
        mask[np.argsort(-np.nan_to_num(res.t, nan=-np.inf), kind="stable")[:k]] = True
        return res, bh_fdr(res.p), mask

    pt, pp, pmask = peer_localize(sent, nonword, 0.01)
    res, _, tmask = topo()
    agree = (
        f"max abs diff t {np.nanmax(np.abs(pt - res.t)):.1e}, p "
        f"{np.nanmax(np.abs(pp - res.p)):.1e}; Dice of top-1% masks {dice(pmask, tmask):.3f}"
    )
    row(
        f"localize t + mask (llm-localization), {u:,} units x {args.stimuli}+{args.stimuli}",
        lambda: peer_localize(sent, nonword, 0.01),
        topo,
        args.repeats,
        agree,
        "abs(activations): no matching option (--abs), the script passes topo abs(x); "
        "two-sided p: alternative='two-sided'",
    )


def bench_fdr(args, sheet: Sheet, rng: np.random.Generator) -> None:
    u = sheet.n_units
    p = rng.uniform(size=u) ** 2
    p[: u // 50] *= 1e-4
    untestable = np.zeros(u, bool)
    untestable[u // 2 + u // 30 :] = True  # the non-text areas of a text-only run
    p[untestable] = np.nan
    q_peer = peer_fdr_counting_untestable(p)
    q_topo = bh_fdr(p)
    ok = ~untestable
    inflation = np.median(q_peer[ok] / q_topo[ok])
    agree = (
        f"q x{inflation:.2f} (= m_all / m_testable = {u / ok.sum():.2f}); "
        f"significant at 0.05: peer {(q_peer < 0.05).sum()}, topo {(q_topo < 0.05).sum()}"
    )
    row(
        f"BH-FDR (Topo-Omni), {ok.sum():,} testable of {u:,}",
        lambda: peer_fdr_counting_untestable(p),
        lambda: bh_fdr(p),
        args.repeats,
        agree,
        "no matching option: topo leaves untestable units out of m",
    )


def bench_spatial_loss(args, sheet: Sheet, rng: np.random.Generator) -> None:
    field = ndimage.gaussian_filter(
        rng.standard_normal((args.batch, *sheet.grid_shape)), (0, 3, 3)
    ).reshape(args.batch, -1)
    x = torch.from_numpy((field + 0.5 * rng.standard_normal(field.shape)).astype(np.float32))
    pos64 = sheet.positions_mm
    pos = torch.from_numpy(pos64.astype(np.float32))
    radius = float(args.radius)
    pool = build_neighbourhood_pool(sheet, radius)
    centres = sample_centres(pool, args.hoods, torch.Generator().manual_seed(0))
    hoods = _neighbourhoods(pos64, centres.numpy(), radius, strict=False)
    # topo's radius test has a 1e-9 relative tolerance, so 1e-6 below r excludes d == r only
    strict_pool = build_neighbourhood_pool(sheet, radius * (1 - 1e-6))
    strict_hoods = _neighbourhoods(pos64, centres.numpy(), radius, strict=True)
    shape = f"r = {radius:g}, {args.hoods} neighbourhoods, batch {args.batch}"
    for name, conv, hd, pl in [
        ("TDANN", "tdann", hoods, pool),
        ("TopoLM", "topolm", hoods, pool),
        ("Topo-Omni", "topolm", strict_hoods, strict_pool),
    ]:
        peer_val = peer_spatial_loss(x, pos, hd, conv)
        topo_val = float(spatial_loss(x, pl, centres=centres))
        scale = 2.0 if conv == "tdann" else 1.0
        note = {
            "TDANN": "biased SD scales r by a constant: corr ignores it; TDANN's 1 - corr = "
            "2 x topo's 0.5 (1 - corr)",
            "TopoLM": "same formula",
            "Topo-Omni": f"strict d < r: matching option radius r (1 - 1e-6) "
            f"({sum(map(len, hd))} vs {sum(map(len, hoods))} units with d <= r)",
        }[name]
        row(
            f"spatial loss ({name}), {shape}",
            lambda hd=hd, conv=conv: peer_spatial_loss(x, pos, hd, conv),
            lambda pl=pl: spatial_loss(x, pl, centres=centres),
            args.repeats,
            f"loss peer {peer_val:.6f}, topo x{scale:g} {scale * topo_val:.6f}, "
            f"abs diff {abs(peer_val - scale * topo_val):.1e}",
            note,
        )


def bench_smoothing(args, sheet: Sheet, rng: np.random.Generator) -> None:
    h, w = sheet.grid_shape
    x = rng.standard_normal((args.maps, sheet.n_units), dtype=np.float32)
    grids = torch.from_numpy(x.reshape(args.maps, h, w))
    sigma = fwhm_to_sigma(args.fwhm, sheet.mm_per_unit)
    r = (gaussian_kernel1d(sigma).size - 1) // 2
    ours = smooth_units(x, sheet, args.fwhm)
    peer = peer_smooth_unnormalised(grids, sigma).numpy().reshape(args.maps, -1)
    inner = (sheet.row >= r) & (sheet.row < h - r) & (sheet.col >= r) & (sheet.col < w - r)
    ones = np.ones((1, h, w), np.float32)
    corner = float(peer_smooth_unnormalised(torch.from_numpy(ones), sigma)[0, 0, 0])
    shape = f"{args.maps} maps {h} x {w}, FWHM {args.fwhm:g} mm"
    row(
        f"smoothing (TopoLM conv2d, zero edges), {shape}",
        lambda: peer_smooth_unnormalised(grids, sigma),
        lambda: smooth_units(x, sheet, args.fwhm),
        args.repeats,
        f"interior max abs diff {np.abs(peer[:, inner] - ours[:, inner]).max():.1e}; a constant "
        f"map is x{corner:.2f} at a corner (topo x1.00)",
        "unnormalised edges: no matching option (topo normalises)",
    )
    stack = x.reshape(args.maps, h, w)
    near = ndimage.gaussian_filter(stack, (0, sigma, sigma), mode="nearest").reshape(args.maps, -1)
    row(
        f"smoothing (Topo-Omni gaussian_filter nearest), {shape}",
        lambda: ndimage.gaussian_filter(stack, (0, sigma, sigma), mode="nearest"),
        lambda: smooth_units(x, sheet, args.fwhm),
        args.repeats,
        f"interior max abs diff {np.abs(near[:, inner] - ours[:, inner]).max():.1e} "
        "(scipy truncates at 4 sigma, topo at 3)",
        "'nearest' edges, 4 sigma: no matching option",
    )


def bench_moran(args, sheet: Sheet, rng: np.random.Generator) -> None:
    h, w = sheet.grid_shape
    values = ndimage.gaussian_filter(rng.standard_normal((h, w)), 2.0)
    values += 0.02 * rng.standard_normal((h, w))
    labels = label_components(values > np.quantile(values, 0.9), 8, min_size=8)
    for perms in (0, args.permutations):
        peer = peer_island_moran(values, labels, 8, perms)
        topo = island_morans_i(values, labels, permutations=perms, min_size=8)
        table = topo.table.set_index("cluster")
        d_i = max(abs(v[0] - table.loc[k, "moran_i"]) for k, v in peer.items())
        agree = f"max abs diff of I {d_i:.1e} (mean I {np.mean([v[0] for v in peer.values()]):.3f})"
        if perms:
            d_p = max(abs(v[1] - table.loc[k, "moran_p"]) for k, v in peer.items())
            agree += f"; p (own generators) max abs diff {d_p:.3f}"
        row(
            f"island Moran's I, {len(peer)} islands on {h} x {w}, {perms} permutations",
            lambda p=perms: peer_island_moran(values, labels, 8, p),
            lambda p=perms: island_morans_i(values, labels, permutations=p, min_size=8),
            args.repeats,
            agree,
            "same formula",
        )


def main() -> None:
    """Parse the options, run every row, print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 96 x 128 sheet, 3 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stimuli", type=int, default=120)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hoods", type=int, default=100)
    parser.add_argument("--radius", type=float, default=10.0)
    parser.add_argument("--maps", type=int, default=100)
    parser.add_argument("--fwhm", type=float, default=4.0)
    parser.add_argument("--permutations", type=int, default=199)
    args = parser.parse_args()
    rows, cols = (304, 512)
    if args.quick:
        rows, cols, args.repeats = 96, 128, 3
        args.stimuli, args.hoods, args.radius, args.maps = 60, 30, 6.0, 20
        args.permutations = 99
    sheet = Sheet.build([AreaSpec("sheet", rows * cols)], "stacked", width=cols)
    print(
        f"sheet {rows} x {cols} ({sheet.n_units:,} units), medians of {args.repeats}, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    rng = np.random.default_rng(0)
    for bench in (bench_localize, bench_fdr, bench_spatial_loss, bench_smoothing, bench_moran):
        bench(args, sheet, rng)
    print("\n| what | peer s | topo s | peer / topo | agreement | convention |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
