"""One activation pipeline: localize and screen read the same stimuli the same way.

Both commands get their statistics from ``topocli.activations.extraction.extract``, so the same
stimuli through the same model give bit-identical per-(condition, split) statistics and the same
cache key, and a cache written by either command is replayed by the other.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from topocli.activations.cache import activation_cache_dir
from topocli.cli import main
from topocli.reporting.reader import read_results
from topocli.stats.suffstats import SufficientStats


def _argv(command: str, model: Path, stimuli: Path, out: Path) -> list[str]:
    own = {
        # the same analysis as the screen's: no smoothing (the localizer TOML's default is 8 mm)
        "localize": ["--contrast", "alpha>beta", "--fwhm-mm", "0"],
        "screen": ["--no-builtin-known"],
    }[command]
    common = ["--permutations", "0", "--device", "cpu", "--quiet", "--out", str(out)]
    return [command, "--model", str(model), "--stimuli", str(stimuli), *own, *common]


def _entries() -> set[str]:
    root = activation_cache_dir()
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


@pytest.mark.parametrize("first", ["localize", "screen"])
def test_localize_and_screen_share_statistics_cache_key_and_cache(
    first, tiny_model_dir, stimulus_dirs, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TOPO_CACHE_DIR", str(tmp_path / "cache"))
    model, stimuli = tiny_model_dir("bert"), stimulus_dirs["text"]
    order = [first, "screen" if first == "localize" else "localize"]
    folders = {}
    for name in order:
        folders[name] = tmp_path / name
        assert main(_argv(name, model, stimuli, folders[name])) == 0, capsys.readouterr().err
        if name == first:
            written = _entries()
            assert len(written) == 1  # one cache entry, written by the first command
    assert _entries() == written  # the second command wrote no entry of its own

    loc, scr = (read_results(folders[n]) for n in ("localize", "screen"))
    assert loc.extra["cache_key"] == scr.extra["cache_key"] == next(iter(written))
    assert read_results(folders[first]).extra["from_cache"] is False
    assert read_results(folders[order[1]]).extra["from_cache"] is True
    assert loc.extra["conditions"] == scr.extra["conditions"] == ["alpha", "beta"]

    a = SufficientStats.load(folders["localize"] / "stats.safetensors")
    b = SufficientStats.load(folders["screen"] / "stats.safetensors")
    assert a == b  # bit for bit: count, mean and M2 of every (condition, split) group
    assert a.count.sum() > 0 and os.path.getsize(folders["screen"] / "stats.safetensors") > 0
