"""Held-out correlation vs distance of a checkpoint and of its identity-adaptor control.

    python bench/topo_smollm2_curve.py CKPT HELDOUT_FOLDER

Writes ``CKPT/../curve_trained.csv`` and ``CKPT/../curve_control.csv`` with the columns of
``topo train``'s ``corr_vs_distance_*.csv`` (the same function, the same seed). ``topo train``
writes its own before / after curves only when it runs to its last step; a run stopped early
(SIGINT / SIGTERM after a checkpoint, as bench/topo_smollm2.sh does to keep to its wall-time
budget) keeps the checkpoint but not the curves, so this measures them on the checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

from topocli.models.checkpoint import identity_control, load_checkpoint
from topocli.stimuli.stimulus_set import load_stimulus_set
from topocli.training.spatial_loss import correlation_vs_distance
from topocli.workflows.train.run import heldout_activations


def main(ckpt: Path, heldout: Path, batch_size: int = 16, seed: int = 0) -> None:
    """Write the trained and the control curve beside ``ckpt``."""
    held = load_stimulus_set(heldout)
    trained = load_checkpoint(ckpt)
    for name, model in (("trained", trained), ("control", identity_control(trained))):
        acts = heldout_activations(model, held, batch_size)
        curve = correlation_vs_distance(acts, model.sheet, seed=seed)
        curve.to_csv(ckpt.parent / f"curve_{name}.csv", index=False)
        print(name, curve.head(12).to_string(index=False), sep="\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
