"""Test helpers: stand-ins for the model pass, and the bad-input assertion every command shares."""

from __future__ import annotations

import numpy as np
import torch

from topocli.activations import extraction
from topocli.cli import main


def feed_activations(monkeypatch, acts: np.ndarray, final: np.ndarray | None = None, batch=7):
    """Replace the model pass: extraction streams ``acts`` (rows = stimuli) in batches."""

    def fake_iter(
        model, stim_set, batch_size=32, pooling="mean", with_final=False, progress=None, shard=True
    ):
        assert len(stim_set) == acts.shape[0]
        order = np.random.default_rng(0).permutation(acts.shape[0])  # any order must do
        for s in range(0, order.size, batch):
            rows = order[s : s + batch]
            fin = None
            if with_final and final is not None:
                fin = torch.from_numpy(final[rows].astype(np.float32))
            yield rows, torch.from_numpy(acts[rows].astype(np.float32)), fin

    monkeypatch.setattr(extraction, "iter_activations", fake_iter)


def forbid_model(monkeypatch) -> None:
    """Fail the test if anything runs the model (bad input must be refused before)."""

    def boom(*args, **kwargs):
        raise AssertionError("the model ran although the input was bad")

    monkeypatch.setattr(extraction, "iter_activations", boom)


def refused(capsys, argv: list[str], *needles: str) -> str:
    """Run ``topo argv``: exit 2, one line on stderr holding every needle, no traceback."""
    capsys.readouterr()  # what the test's own setup printed is not the command's
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err
