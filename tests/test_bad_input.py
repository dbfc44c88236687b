"""The bad-input and hostile-input catalogue: every case ends in one line, exit 2, nothing left.

Each case asserts the exit code, that stderr is one line naming the file or option at fault,
that no traceback is printed, and that nothing was written where it must not be.
"""

from __future__ import annotations

import json
import shutil

from fakes import refused

from topocli.cli import main
from topocli.models.checkpoint import save_checkpoint
from topocli.models.topo_model import build_topo_model


# ---------------------------------------------------------------------- security
def test_a_checkpoint_cannot_enable_remote_code(tiny_model_dir, tmp_path, capsys):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir("bert"), base)
    ckpt = save_checkpoint(build_topo_model(base, mode="adaptor"), tmp_path / "ckpt")
    # the base folder now carries code that runs as soon as transformers imports it
    marker = tmp_path / "code-ran"
    (base / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import BertConfig\n\n\n"
        "class EvilConfig(BertConfig):\n    pass\n"
    )
    config = json.loads((base / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    (base / "config.json").write_text(json.dumps(config))
    meta = json.loads((ckpt / "topo.json").read_text())
    meta["trust_remote_code"] = True
    (ckpt / "topo.json").write_text(json.dumps(meta))

    refused(capsys, ["info", str(ckpt)], "--trust-remote-code", "topo.json")
    assert not marker.exists()
    refused(capsys, ["localize", "--model", str(ckpt), "--out", str(tmp_path / "o")])
    assert not marker.exists() and not (tmp_path / "o").exists()
    # the flag on the command line is the only way in
    capsys.readouterr()
    main(["info", str(ckpt), "--trust-remote-code", "--quiet"])
    assert "--trust-remote-code" not in capsys.readouterr().err
    assert marker.exists()


# ---------------------------------------------------------------------- usage errors
USAGE_CASES = {
    "bare topo": ([], "no command given"),
    "command typo": (["scren"], "Did you mean 'screen'"),
    "unknown option": (["localize", "--fwhm", "3"], "--fwhm-mm"),
    "missing value": (["localize", "--q"], "--q"),
    "not a number": (["localize", "--q", "abc"], "--q"),
    "below the minimum": (["localize", "--batch-size", "0"], "--batch-size"),
    "missing required option": (["compare"], "missing option --from"),
    "missing results folder": (["smooth", "--fwhm-mm", "4"], "missing option --from"),
    "missing fwhm": (["smooth", "--from", "x"], "missing option --fwhm-mm"),
    "from given twice": (["smooth", "x", "--from", "y", "--fwhm-mm", "2"], "--from DIR"),
}


def test_usage_errors_are_one_line_exit_2(capsys, tmp_path):
    for name, (argv, needle) in USAGE_CASES.items():
        err = refused(capsys, argv, needle)
        assert err.startswith("topo: error:"), name
    assert not any(tmp_path.iterdir())


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith("topo ")


def test_paths_with_rich_markup_are_printed_verbatim(capsys, tmp_path):
    for parts in (("x[", "y]"), ("data[v2]",), ("[bold]red",)):  # "x[/y]" crashed rich
        folder = tmp_path.joinpath(*parts, "missing")
        refused(capsys, ["localize", "--stimuli", str(folder), "-c", "a>b"], str(folder))


# ---------------------------------------------------------------------- data loss
def _maps_folder(tmp_path):
    import numpy as np

    from topocli.reporting.results import ResultsFolder
    from topocli.sheet import AreaSpec, Sheet

    sheet = Sheet.build([AreaSpec("a", 40), AreaSpec("b", 30)], "stacked", width=10)
    src = tmp_path / "loc"
    with ResultsFolder(src) as rf:
        rf.write_sheet_nifti("tmap.nii.gz", np.arange(sheet.n_units, dtype=float), sheet, ["c"])
        # a screen folder: smooth smooths its t map for display, with no model to reload
        rf.write_manifest("screen", {"q": 0.05})
    return src


def _smooth(src, out, *extra):
    return ["smooth", "--from", str(src), "--fwhm-mm", "2", "--out", str(out), "--quiet", *extra]


def test_overwrite_never_replaces_a_folder_topo_did_not_write(tmp_path, capsys):
    src = _maps_folder(tmp_path)
    cases = {
        "no manifest": {"thesis.tex": "my thesis"},
        "someone else's manifest.json": {"manifest.json": '{"name": "my app"}', "a.txt": "x"},
        "topo's manifest, not topo's format": {
            "manifest.json": '{"tool": "topo", "format": 99, "command": "x", "outputs": []}'
        },
    }
    for name, files in cases.items():
        out = tmp_path / name.replace(" ", "_").replace("'", "")
        out.mkdir()
        for fname, text in files.items():
            (out / fname).write_text(text)
        refused(capsys, _smooth(src, out, "--overwrite"), "refusing to overwrite", str(out))
        assert {p.name: p.read_text() for p in out.iterdir()} == files, name
    # a topo folder into which the user put a file of their own
    out = tmp_path / "smoothed"
    assert main(_smooth(src, out)) == 0
    (out / "notes.txt").write_text("mine")
    refused(capsys, _smooth(src, out, "--overwrite"), "notes.txt", "refusing to overwrite")
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert main(_smooth(src, out, "--overwrite")) == 0  # topo's own folder: replaced


def test_stale_temp_folders_of_killed_runs_are_removed(tmp_path, capsys):
    import os

    from topocli.reporting.results import process_tag

    src = _maps_folder(tmp_path)
    out = tmp_path / "smoothed"
    dead = tmp_path / ".smoothed.tmp-999999999-12345-abcd"  # a pid no process has
    live = tmp_path / f".smoothed.tmp-{process_tag()}-efgh"  # this (running) process
    other = tmp_path / ".smoothed.tmp-notours"  # no tag: not topo's, never touched
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "half.csv").write_text("x")
    assert main(_smooth(src, out)) == 0
    assert not dead.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".smoothed")) == sorted(
        [live.name, other.name]
    )
    assert os.getpid() == int(process_tag().split("-")[0])


def test_two_commands_writing_one_folder_at_once(tmp_path, capsys):
    from topocli.reporting.results import FolderLock

    src = _maps_folder(tmp_path)
    out = tmp_path / "smoothed"
    held = FolderLock(out)
    held.acquire()  # as another running command would
    try:
        refused(capsys, _smooth(src, out), "another topo command", "is writing this folder")
        assert not out.exists()
    finally:
        held.release()
    assert main(_smooth(src, out)) == 0
    assert not (tmp_path / ".smoothed.lock").exists()


# ---------------------------------------------------------------------- signals
def test_ctrl_c_during_localize_exits_130_and_leaves_nothing(
    tiny_model_dir, stimulus_dirs, tmp_path
):
    import signal
    import subprocess
    import sys

    # a job started in the background of a non-interactive shell (a CI runner) inherits
    # SIGINT ignored: restore Ctrl-C's default handler, as in an interactive terminal
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from topocli.activations import extraction\n"
        "def slow(*args, **kwargs):\n"
        "    print('extracting', flush=True)\n"
        "    time.sleep(60)\n"
        "    yield from ()\n"
        "extraction.iter_activations = slow\n"
        "from topocli.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "loc"
    argv = ["localize", "--model", str(tiny_model_dir("bert")), "--stimuli"]
    argv += [str(stimulus_dirs["text"]), "-c", "alpha>beta", "--no-cache", "-q", "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "extracting"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("topo: interrupted") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no folder, no temp, no lock


# ---------------------------------------------------------------------- pickle weights
def _pickle_only_model(tiny_model_dir, tmp_path, name="pickled"):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / name
    shutil.copytree(tiny_model_dir("bert"), folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


class _Payload:
    """A pickle that runs code when loaded without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_weights_need_allow_pickle(tiny_model_dir, tmp_path, capsys):
    folder = _pickle_only_model(tiny_model_dir, tmp_path)
    refused(capsys, ["info", str(folder)], "pytorch_model.bin", "--allow-pickle", str(folder))
    assert main(["info", str(folder), "--allow-pickle", "--quiet"]) == 0


def test_a_malicious_pickle_is_one_line_and_never_runs(tiny_model_dir, tmp_path, capsys):
    import torch

    folder = _pickle_only_model(tiny_model_dir, tmp_path, "evil")
    marker = tmp_path / "payload-ran"
    torch.save({"weights": _Payload(marker)}, folder / "pytorch_model.bin")
    refused(capsys, ["info", str(folder), "--allow-pickle"], "cannot load pickle weights")
    assert not marker.exists()


# ---------------------------------------------------------------------- tampered inputs
def test_a_tampered_sheet_is_refused(tiny_model_dir, tmp_path, capsys):
    from topocli.sheet import Sheet

    ckpt = save_checkpoint(build_topo_model(tiny_model_dir("bert")), tmp_path / "ckpt")
    good = Sheet.load(ckpt / "sheet.safetensors")
    cases = {
        "every unit at (0, 0)": lambda s: (s.row.fill(0), s.col.fill(0)),
        "one unit at row 10**7": lambda s: s.row.__setitem__(0, 10**7),
        "two units swapped into one cell": lambda s: s.col.__setitem__(1, s.col[0]),
        "a grid of 10**7 rows": lambda s: setattr(s, "grid_shape", (10**7, s.grid_shape[1])),
    }
    for name, tamper in cases.items():
        sheet = Sheet.load(ckpt / "sheet.safetensors")
        tamper(sheet)
        sheet.save(ckpt / "sheet.safetensors")
        err = refused(capsys, ["info", str(ckpt)], "inconsistent sheet", "sheet.safetensors")
        assert "topo: error:" in err, name
        good.save(ckpt / "sheet.safetensors")
    assert main(["info", str(ckpt), "--quiet"]) == 0


def test_base_weights_swapped_with_size_and_mtime_kept_are_caught(tiny_model_dir, tmp_path, capsys):
    import os

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir("bert"), base)
    ckpt = save_checkpoint(build_topo_model(base, mode="adaptor"), tmp_path / "ckpt")
    assert main(["info", str(ckpt), "--quiet"]) == 0  # the hash is now in the cache
    weights = base / "model.safetensors"
    before = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of the last tensor: still a loadable file, same size
    with weights.open("r+b") as f:
        f.write(data)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_size == before.st_size
    assert weights.stat().st_mtime_ns == before.st_mtime_ns
    refused(capsys, ["info", str(ckpt)], "weights sha256", "same base weights")


# ---------------------------------------------------------------------- silent acceptance
def test_identical_stimuli_are_refused_not_written_as_nan(tiny_model_dir, tmp_path, capsys):
    stimuli = tmp_path / "same"
    for condition in ("alpha", "beta"):
        (stimuli / condition).mkdir(parents=True)
        (stimuli / condition / "s.txt").write_text("the same sentence\n" * 6)
    model = str(tiny_model_dir("bert"))
    for argv in (
        ["localize", "--stimuli", str(stimuli), "-c", "alpha>beta", "--fwhm-mm", "0"],
        ["screen", "--stimuli", str(stimuli), "--no-builtin-known"],
    ):
        out = tmp_path / argv[0]
        argv += ["--model", model, "--out", str(out), "--quiet"]
        refused(capsys, argv, "constant", str(stimuli))
        assert not out.exists()


def test_subnormal_contrast_weights_are_refused(tiny_model_dir, stimulus_dirs, tmp_path, capsys):
    out = tmp_path / "loc"
    argv = ["localize", "--model", str(tiny_model_dir("bert")), "--stimuli"]
    argv += [str(stimulus_dirs["text"]), "-c", "1e-320*alpha - 1e-320*beta", "--out", str(out)]
    refused(capsys, argv, "1e-12")
    assert not out.exists()


# ---------------------------------------------------------------------- damaged caches
def test_a_damaged_activation_cache_is_dropped_and_recomputed(
    tiny_model_dir, stimulus_dirs, tmp_path, monkeypatch, capsys
):
    from topocli.activations.cache import activation_cache_dir
    from topocli.stats.suffstats import SufficientStats

    monkeypatch.setenv("TOPO_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["localize", "--model", str(tiny_model_dir("bert")), "--stimuli"]
    argv += [str(stimulus_dirs["text"]), "-c", "alpha>beta", "--fwhm-mm", "0", "-q"]
    assert main([*argv, "--out", str(tmp_path / "first")]) == 0
    (entry,) = [p for p in activation_cache_dir().iterdir() if not p.name.startswith(".")]
    shard = entry / "shard_00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-2] ^= 0x55  # a bit flip inside the float16 activations: still a loadable file
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "second")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("topo: warning:") and "damaged" in err[0]
    a = SufficientStats.load(tmp_path / "first" / "stats.safetensors")
    b = SufficientStats.load(tmp_path / "second" / "stats.safetensors")
    assert a == b  # recomputed from the model, bit for bit
    assert main([*argv, "--out", str(tmp_path / "third")]) == 0  # the rewritten entry is fine
    assert capsys.readouterr().err.strip() == ""


def test_human_tables_with_inf_or_only_nan_name_the_file(tmp_path):
    import pytest

    from topocli.errors import TopoInputError
    from topocli.human.profiles import load_human_profiles

    head = "roi,condition,mean,sem,n\n"
    cases = {
        "inf.csv": (head + "lang,a,inf,0.1,10\nlang,b,1,0.1,10\n", "infinite value"),
        "nan.csv": (head + "lang,a,nan,nan,10\nlang,b,nan,nan,10\n", "empty 'mean'"),
    }
    for name, (text, needle) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(TopoInputError, match=needle) as info:
            load_human_profiles(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


# ---------------------------------------------------------------------- floors and base rates
def test_floors_and_percolation_are_said_in_the_terminal():
    import pytest

    from topocli.errors import TopoWarning
    from topocli.workflows.compare.run import _warn_permutation_floor
    from topocli.workflows.localize.run import warn_if_percolating

    with pytest.warns(TopoWarning, match="percolation density"):
        warn_if_percolating("lang", 929 + 100, 2304, 8, 10.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", TopoWarning)
        warn_if_percolating("lang", 900, 2304, 8, 10.0)  # 39%: below the density, silent
    warned: set[int] = set()
    with pytest.warns(TopoWarning, match=r"cannot go below 0.0417 \(1/4!\)"):
        _warn_permutation_floor({"n_conditions": 4, "permutation_exact": True}, warned)
    _warn_permutation_floor({"n_conditions": 4, "permutation_exact": True}, warned)  # once


def test_intervene_says_when_its_p_cannot_reach_001(tmp_path):
    import pytest

    from topocli.errors import TopoInputError, TopoWarning
    from topocli.workflows.intervene.run import plan_intervention

    with pytest.warns(TopoWarning, match="smallest possible permutation p is 0.1"):
        with pytest.raises(TopoInputError):  # no such folder: the warning comes first
            plan_intervention(tmp_path / "none", contrast="a>b", n_controls=9)


def test_a_missing_shipped_default_is_said_not_replaced_by_the_control(
    tmp_path, monkeypatch, capsys
):
    import topocli.models.registry as registry

    monkeypatch.setattr(registry, "SHIPPED_DIR", tmp_path / "gone")
    refused(capsys, ["info", "minilm"], "checkpoint 'minilm' is missing", "minilm-control")
