"""One chain on one model: localize, smooth, screen --from, intervene --from, compare --from.

Every command takes the results folder of the one before it the same way (``--from``), the
contrast is found whichever way it is spelled, and ``smooth`` of a localize folder is the same
as localizing with smoothed activations (it never smooths t, p or q after the fact).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from topocli.cli import main
from topocli.reporting.reader import read_manifest, read_results

WORDS = ["cat", "dog", "horse", "bird", "sun", "rain", "tree", "house", "car", "music", "red"]


def _three_conditions(root: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(1)
    for k, cond in enumerate(("alpha", "beta", "gamma")):
        lines = [
            " ".join(rng.choice(WORDS[k:], size=rng.integers(3, 9))) + f" {cond} {i}"
            for i in range(n)
        ]
        (root / cond).mkdir(parents=True)
        (root / cond / "items.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _run(argv: list, capsys) -> str:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


@pytest.fixture(scope="module")
def chain(tiny_model_dir, tmp_path_factory):
    return tiny_model_dir("bert"), tmp_path_factory.mktemp("chain")


def test_localize_smooth_screen_intervene_compare(chain, tmp_path, capsys):
    model, _ = chain
    stimuli = _three_conditions(tmp_path / "stimuli")
    common = ["--permutations", "0", "-q"]
    loc = tmp_path / "loc"
    _run(["localize", "--model", model, "--stimuli", stimuli, "-c", "alpha>beta,gamma-beta",
          *common, "--out", loc], capsys)
    assert list(read_results(loc).contrasts) == ["alpha-beta", "gamma-beta"]
    # a results folder is created with the user's umask (not mkdtemp's / safetensors' 0600)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(loc.stat().st_mode) == 0o777 & ~mask
    for name in ("stats.safetensors", "units.csv", "manifest.json"):
        assert stat.S_IMODE((loc / name).stat().st_mode) == 0o666 & ~mask, name

    # smooth of a localize folder = localize with smoothed activations (an independent run)
    smoothed = tmp_path / "loc-2mm"
    _run(["smooth", "--from", loc, "--fwhm-mm", "2", "-q", "--out", smoothed], capsys)
    direct = tmp_path / "direct-2mm"
    _run(["localize", "--model", model, "--stimuli", stimuli, "-c", "alpha>beta,gamma-beta",
          "--fwhm-mm", "2", *common, "--out", direct], capsys)
    manifest = read_manifest(smoothed, verify=True)
    assert manifest["command"] == "localize"
    assert manifest["parameters"]["fwhm_mm"] == 2.0
    assert manifest["parameters"]["smoothed_from"] == str(loc.resolve())
    a, b = pd.read_csv(smoothed / "units.csv"), pd.read_csv(direct / "units.csv")
    for col in ("t", "p", "q", "significant"):
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy())
    assert not np.allclose(a["t"], pd.read_csv(loc / "units.csv")["t"], equal_nan=True)
    # smoothing a smoothed folder would compound FWHMs: refused in one line
    code = main(["smooth", "--from", str(smoothed), "--fwhm-mm", "2", "--out", str(tmp_path / "x")])
    assert code == 2 and "already smoothed" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

    # screen takes the smoothed folder as a known map with --from (or its older name --known)
    screen = tmp_path / "screen"
    _run(["screen", "--model", model, "--stimuli", stimuli, "--from", smoothed, "--known", loc,
          "--no-builtin-known", *common, "--out", screen], capsys)
    assert read_manifest(screen)["command"] == "screen"
    known = pd.read_csv(screen / "known.csv") if (screen / "known.csv").exists() else None
    if known is not None:  # a folder and its smoothed copy: both kept, under distinct names
        names = known[known.columns[0]].astype(str)
        assert names.nunique() == len(names) == 4, list(names)

    # intervene finds "alpha-beta" from another spelling of it; lists are comma or repeated
    iv = tmp_path / "iv"
    _run(["intervene", "--from", smoothed, "--contrast", "1*alpha - 1*beta", "--dose", "10",
          "--dose", "20", "--controls", "random", "--n-controls", "3", "--sequential-h", "2",
          "-q", "--out", iv], capsys)
    params = read_manifest(iv)["parameters"]
    assert params["contrast"] == "alpha-beta"
    stats = pd.read_csv(iv / "stats.csv")
    assert set(stats["dose"]) == {10, 20} and "p_method" in stats

    # compare reads the smoothed localize folder with --from
    human = tmp_path / "human.csv"
    pd.DataFrame(
        [{"roi": "alpha-beta", "condition": c, "mean": m, "sem": 0.1, "n": 9}
         for c, m in zip(("alpha", "beta", "gamma"), (1.0, 0.2, 0.5), strict=True)]
    ).to_csv(human, index=False)
    cmp = tmp_path / "cmp"
    _run(["compare", "--from", smoothed, "--human-profiles", human, "--permutations", "10",
          "--bootstrap", "10", "-q", "--out", cmp], capsys)
    assert read_manifest(cmp)["command"] == "compare"


def test_a_p_or_q_map_is_never_smoothed(chain, tmp_path, capsys):
    model, _ = chain
    stimuli = _three_conditions(tmp_path / "stimuli")
    loc = tmp_path / "loc"
    _run(["localize", "--model", model, "--stimuli", stimuli, "-c", "alpha-beta",
          "--permutations", "0", "-q", "--out", loc], capsys)
    code = main(["smooth", "--from", str(loc / "qmap.nii.gz"), "--fwhm-mm", "2",
                 "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert code == 2 and "never smoothed" in err and err.count("\n") == 1
    assert not (tmp_path / "q").exists()
    # one t map: smoothed for display, marked so
    out = tmp_path / "t"
    _run(["smooth", "--from", loc / "tmap.nii.gz", "--fwhm-mm", "2", "-q", "--out", out], capsys)
    extra = read_manifest(out)["extra"]
    assert extra["display_only"] is True and extra["smoothed"] == {"tmap.nii.gz": ["alpha-beta"]}


def test_random_init_is_a_seeded_untrained_control_from_the_command_line(chain, tmp_path, capsys):
    model, _ = chain
    stimuli = _three_conditions(tmp_path / "stimuli")
    outs = {}
    for name, extra in {"real": [], "r3": ["--random-init", "3"], "r3b": ["--random-init", "3"],
                        "r4": ["--random-init", "4"]}.items():
        outs[name] = tmp_path / name
        _run(["localize", "--model", model, "--stimuli", stimuli, "-c", "alpha-beta", *extra,
              "--permutations", "0", "-q", "--out", outs[name]], capsys)
    t = {k: pd.read_csv(v / "units.csv")["t"].to_numpy() for k, v in outs.items()}
    np.testing.assert_array_equal(t["r3"], t["r3b"])  # the seed fixes the weights
    assert not np.allclose(t["r3"], t["r4"], equal_nan=True)
    assert not np.allclose(t["r3"], t["real"], equal_nan=True)
    ident = read_manifest(outs["r3"])["extra"]["model"]
    assert ident["random_init"] == 3 and "random_init" not in read_manifest(outs["real"])["extra"][
        "model"
    ]
