"""Low-level control of a built visual set: pixels vs a real network's features.

Cross-validated accuracy of the same classifier (standardised features, L2 logistic
regression, stratified 5-fold) on

1. pixel features: each image as 16 x 16 luminance plus 8 x 8 x 3 colour (448 numbers), and
   the three low-level statistics of ``lowlevel.csv`` (luminance mean, RMS contrast,
   high-frequency power);
2. EfficientNet-Lite0's pooled pre-logits features (1280 numbers; ``--model
   efficientnet-lite0``, the packaged ImageNet weights).

A set whose categories are matched at the low level gives (1) far below (2). Chance is one
over the number of conditions.

    python bench/stimuli_lowlevel.py [--set emfl-visual] [--folder DIR] [--per-condition 48]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def pixel_features(paths: list[Path]) -> np.ndarray:
    from PIL import Image

    rows = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            grey = np.asarray(im.convert("L").resize((16, 16), Image.Resampling.BOX), float)
            colour = np.asarray(im.resize((8, 8), Image.Resampling.BOX), float)
        rows.append(np.concatenate([grey.ravel(), colour.ravel()]))
    return np.stack(rows)


def network_features(paths: list[Path], batch: int = 32) -> np.ndarray:
    import torch
    from PIL import Image

    from topocli.models.cnn import load_timm_folder
    from topocli.models.packaged import ensure_converted

    model, pre = load_timm_folder(ensure_converted("efficientnet-lite0"))
    out = []
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            ims = [Image.open(p).convert("RGB") for p in paths[i : i + batch]]
            out.append(model(**pre["image"](images=ims)).pooler_output.float().numpy())
    return np.concatenate(out)


def cv_accuracy(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    scores = cross_val_score(clf, x, y, cv=folds)
    return float(scores.mean()), float(scores.std())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="emfl-visual")
    ap.add_argument("--folder", type=Path, help="an existing build (default: build one)")
    ap.add_argument("--per-condition", type=int, default=48)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            from topocli.stimuli.builders.build import build_set

            folder = build_set(args.set, Path(tmp) / args.set, args.per_condition).out
        stats = pd.read_csv(folder / "lowlevel.csv")
        paths = [folder / f for f in stats["file"]]
        y = stats["condition"].to_numpy()
        t0 = time.perf_counter()
        pix = cv_accuracy(pixel_features(paths), y)
        low = cv_accuracy(stats[["lum_mean", "rms_contrast", "hf_power"]].to_numpy(), y)
        net = cv_accuracy(network_features(paths), y)
        n_cond = len(set(y))
    print(f"set {args.set}: {len(y)} images, {n_cond} conditions, chance {1 / n_cond:.3f}")
    print(f"pixels (16x16 grey + 8x8 colour), 5-fold CV accuracy: {pix[0]:.3f} ± {pix[1]:.3f}")
    print(f"low-level statistics (3),          5-fold CV accuracy: {low[0]:.3f} ± {low[1]:.3f}")
    print(f"EfficientNet-Lite0 pooled (1280),  5-fold CV accuracy: {net[0]:.3f} ± {net[1]:.3f}")
    print(f"ratio pixels / network: {pix[0] / net[0]:.3f}  ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
