"""Planted-signal check of smoothing: a d = 1 disc on a noise sheet, detected at several FWHM.

For each FWHM the synthetic per-stimulus activations (Gaussian noise; the disc's units respond
by d = 1 SD more to condition A than to B) are smoothed as ``topo localize --fwhm-mm F`` smooths
them, then one-sided Welch t, BH-FDR q < 0.05. Dice with the planted disc and the false
discovery proportion (significant units outside the disc / significant units) show what
smoothing does to detection: it finds the disc, and it spills it over its surroundings, so FDR's
"5% false discoveries" no longer holds for units. Writes ``docs/planted_smoothing.png`` and
prints the table.

    python bench/planted_smoothing.py            # 48 x 48 sheet, 40 stimuli per condition
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from topocli.sheet import AreaSpec, Sheet  # noqa: E402
from topocli.stats.contrasts import bh_fdr, welch_t  # noqa: E402
from topocli.stats.smoothing import smooth_units  # noqa: E402


def planted(side: int = 48, radius: float = 6.0, n: int = 40, d: float = 1.0, seed: int = 0):
    """Sheet, disc mask and per-stimulus activations of conditions A and B."""
    sheet = Sheet.build([AreaSpec("area", side * side)], "tiled")
    centre = (sheet.grid_shape[0] / 2, sheet.grid_shape[1] / 2)
    disc = (sheet.row - centre[0]) ** 2 + (sheet.col - centre[1]) ** 2 <= radius**2
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, sheet.n_units))
    b = rng.standard_normal((n, sheet.n_units))
    a[:, disc] += d
    return sheet, disc, a, b


def detect(sheet, a, b, fwhm: float, q: float = 0.05) -> np.ndarray:
    """Significant units at FWHM ``fwhm`` (smoothing the per-stimulus activations first)."""
    if fwhm:
        a, b = smooth_units(a, sheet, fwhm), smooth_units(b, sheet, fwhm)
    res = welch_t(
        len(a), a.mean(0), a.var(0, ddof=1), len(b), b.mean(0), b.var(0, ddof=1), "greater"
    )
    return (bh_fdr(res.p) < q) & (res.t > 0)


def scores(sig: np.ndarray, disc: np.ndarray) -> tuple[float, float]:
    """Dice with the planted disc and the false discovery proportion."""
    hits = int((sig & disc).sum())
    dice = 2 * hits / max(1, int(sig.sum()) + int(disc.sum()))
    fdp = 1 - hits / sig.sum() if sig.any() else 0.0
    return dice, fdp


def main() -> None:
    sheet, disc, a, b = planted()
    rows = []
    for fwhm in (0, 2, 4, 8):
        dice, fdp = scores(detect(sheet, a, b, fwhm), disc)
        rows.append((fwhm, dice, fdp))
        print(f"FWHM {fwhm:>2} mm: Dice {dice:.2f}, false discovery proportion {fdp:.2f}")
    from topocli.reporting.plotting import figure_to_bytes, plot_sheet_maps

    maps = [(disc.astype(float), "planted disc (d = 1)")]
    maps += [(detect(sheet, a, b, f).astype(float), f"q < 0.05 at FWHM {f} mm") for f in (0, 8)]
    fig = plot_sheet_maps(
        maps, sheet, ncols=3, cmap="viridis", symmetric=False, colorbar_label="significant"
    )
    out = Path(__file__).resolve().parents[1] / "docs" / "planted_smoothing.png"
    out.write_bytes(figure_to_bytes(fig))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
