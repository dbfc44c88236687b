"""``topo train`` on bad input: one line, exit 2 (130 when interrupted), nothing half-written.

Covers issue 11's train cases: ``--overwrite`` of a folder topo did not write, out-of-range and
non-finite options, ``--out`` that is a file, truncated checkpoint files, ``--resume`` with
changed settings, SIGINT, and temp folders left by killed processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import refused

from topocli.cli import main

FAST = {
    "--steps": "2",
    "--batch-size": "4",
    "--save-every": "1",
    "--warmup": "0",
    "--radius-mm": "3",
    "--neighbourhoods": "4",
    "--device": "cpu",
}


def argv(data: Path, out: Path, model: Path | None = None, *flags: str, **options) -> list[str]:
    """``topo train`` on the tiny set, held out on itself (it is too small to split)."""
    opts = dict(FAST)
    opts.update({"--" + k.replace("_", "-"): str(v) for k, v in options.items()})
    args = ["train", "--data", str(data), "--heldout", str(data), "--out", str(out), "--quiet"]
    if model is not None:
        args += ["--model", str(model)]
    for k, v in opts.items():
        args += [k, v]
    return args + list(flags)


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def trained(tiny_model_dir, stimulus_dirs, tmp_path_factory):
    """A real checkpoint folder made by a 2-step ``topo train`` (copy it before changing it)."""
    out = tmp_path_factory.mktemp("trained") / "ckpt"
    code = main(argv(stimulus_dirs["text"], out, tiny_model_dir("bert")))
    assert code == 0
    assert json.loads((out / "topo.json").read_text())["training"]["step"] == 2
    return out


@pytest.fixture
def ckpt(trained, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(trained, copy)
    return copy


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model loads: bad options must be refused before."""
    import topocli.models.checkpoint as checkpoint
    import topocli.models.registry as registry

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded although the input was bad")

    monkeypatch.setattr(registry, "resolve_model", boom)
    monkeypatch.setattr(checkpoint, "load_checkpoint", boom)


# ---------------------------------------------------------------------- 1. --overwrite
def test_overwrite_refuses_a_users_folder_and_leaves_it_alone(
    capsys, tiny_model_dir, stimulus_dirs, tmp_path, no_model
):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "sub" / "data.csv").write_text("a,b\n1,2\n")
    before = snapshot(tmp_path)
    refused(
        capsys,
        argv(stimulus_dirs["text"], out, tiny_model_dir("bert"), "--overwrite"),
        "--overwrite",
        "no topo.json",
        str(out),
    )
    assert snapshot(tmp_path) == before
    assert (out / "notes.txt").read_text() == "my notes"


def test_overwrite_refuses_a_foreign_topo_json(
    capsys, tiny_model_dir, stimulus_dirs, tmp_path, no_model
):
    out = tmp_path / "other-tool"
    out.mkdir()
    (out / "topo.json").write_text(json.dumps({"kind": "topography-survey", "format": 3}))
    (out / "survey.csv").write_text("x,y\n")
    before = snapshot(tmp_path)
    refused(
        capsys,
        argv(stimulus_dirs["text"], out, tiny_model_dir("bert"), "--overwrite"),
        "--overwrite",
        "not a topo checkpoint",
    )
    assert snapshot(tmp_path) == before


def test_overwrite_refuses_a_checkpoint_holding_a_users_file(
    capsys, ckpt, tiny_model_dir, stimulus_dirs, tmp_path, no_model
):
    (ckpt / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    refused(
        capsys,
        argv(stimulus_dirs["text"], ckpt, tiny_model_dir("bert"), "--overwrite"),
        "notes.txt",
        "--overwrite",
    )
    assert snapshot(tmp_path) == before


def test_non_empty_out_without_overwrite_is_refused(
    capsys, ckpt, tiny_model_dir, stimulus_dirs, tmp_path, no_model
):
    before = snapshot(tmp_path)
    refused(
        capsys, argv(stimulus_dirs["text"], ckpt, tiny_model_dir("bert")), "not empty", "--resume"
    )
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_a_topo_checkpoint(ckpt, tiny_model_dir, stimulus_dirs):
    code = main(argv(stimulus_dirs["text"], ckpt, tiny_model_dir("bert"), "--overwrite", seed=5))
    assert code == 0
    assert json.loads((ckpt / "topo.json").read_text())["training"]["seed"] == 5


def test_resume_and_overwrite_together_are_refused(capsys, ckpt, stimulus_dirs, tmp_path, no_model):
    before = snapshot(tmp_path)
    refused(capsys, argv(stimulus_dirs["text"], ckpt, None, "--resume", "--overwrite"), "--resume")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------- 2. options
BAD_OPTIONS = [
    ("lr", "inf", "--lr must be a finite number > 0, got inf"),
    ("lr", "nan", "--lr must be a finite number > 0, got nan"),
    ("lr", "0", "--lr"),
    ("lr", "-1", "--lr"),
    ("alpha", "nan", "--alpha must be a finite number >= 0, got nan"),
    ("alpha", "inf", "--alpha"),
    ("alpha", "-1", "--alpha"),
    ("adaptor_noise", "nan", "--adaptor-noise must be a finite number"),
    ("adaptor_noise", "inf", "--adaptor-noise"),
    ("radius_mm", "0", "--radius-mm must be a finite number > 0, got 0"),
    ("radius_mm", "-2", "--radius-mm"),
    ("radius_mm", "nan", "--radius-mm"),
    ("mm_per_unit", "0", "--mm-per-unit must be a finite number > 0"),
    ("mm_per_unit", "-1", "--mm-per-unit"),
    ("mm_per_unit", "nan", "--mm-per-unit"),
    ("mm_per_unit", "inf", "--mm-per-unit"),
    ("max_tokens", "0", "--max-tokens must be an integer >= 1, got 0"),
    ("max_tokens", "-5", "--max-tokens"),
    ("steps", "0", "--steps must be an integer >= 1"),
    ("steps", "-3", "--steps"),
    ("neighbourhoods", "0", "--neighbourhoods"),
    ("neighbourhoods", "-1", "--neighbourhoods"),
    ("grad_accum", "0", "--grad-accum"),
    ("grad_accum", "-2", "--grad-accum"),
    ("save_every", "0", "--save-every"),
    ("save_every", "-1", "--save-every"),
    ("warmup", "-1", "--warmup must be an integer >= 0, got -1"),
    ("sheet_width", "0", "--sheet-width"),
    ("permute_positions", "-1", "--permute-positions"),
    ("seed", "-1", "--seed"),
    ("layout", "spiral", "--layout"),
    ("mode", "lora", "--mode"),
    ("precision", "float8", "--precision"),
    ("batch_size", "2", "at least 3 samples"),
]


@pytest.mark.parametrize(
    "option,value,needle", BAD_OPTIONS, ids=[f"{o}={v}" for o, v, _ in BAD_OPTIONS]
)
def test_bad_option_is_refused_before_anything_is_written(
    option, value, needle, capsys, tiny_model_dir, stimulus_dirs, tmp_path, no_model
):
    out = tmp_path / "new" / "ckpt"  # its parent does not exist either: nothing may create it
    refused(
        capsys,
        argv(stimulus_dirs["text"], out, tiny_model_dir("bert"), **{option: value}),
        needle,
    )
    assert list(tmp_path.iterdir()) == []


def test_too_few_held_out_stimuli_refused_before_the_model_loads(
    capsys, tiny_model_dir, stimulus_dirs, tmp_path, no_model
):
    args = argv(stimulus_dirs["text"], tmp_path / "ckpt", tiny_model_dir("bert"))
    k = args.index("--heldout")
    del args[k : k + 2]  # 12 stimuli: every 10th held out is 1
    refused(capsys, args, "held-out", "--heldout")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- 3. --out is a file
@pytest.mark.parametrize("resume", [False, True])
def test_out_that_is_a_file(resume, capsys, tiny_model_dir, stimulus_dirs, tmp_path, no_model):
    out = tmp_path / "ckpt"
    out.write_text("not a folder")
    flags = ("--resume",) if resume else ()
    model = None if resume else tiny_model_dir("bert")
    refused(capsys, argv(stimulus_dirs["text"], out, model, *flags), "--out is a file", str(out))
    assert out.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_out_below_a_file(capsys, tiny_model_dir, stimulus_dirs, tmp_path, no_model):
    (tmp_path / "f").write_text("x")
    refused(
        capsys,
        argv(stimulus_dirs["text"], tmp_path / "f" / "ckpt", tiny_model_dir("bert")),
        "--out",
        "is a file",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


# ---------------------------------------------------------------------- 4. corrupt checkpoint files
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", ["adaptors.safetensors", "sheet.safetensors"])
def test_truncated_checkpoint_given_as_model(name, capsys, ckpt, stimulus_dirs, tmp_path):
    _truncate(ckpt / name)
    before = snapshot(tmp_path)
    refused(capsys, argv(stimulus_dirs["text"], tmp_path / "new", ckpt), name)
    assert snapshot(tmp_path) == before  # no --out, no temp folder


@pytest.mark.parametrize(
    "name", ["adaptors.safetensors", "sheet.safetensors", "trainer_state.safetensors"]
)
def test_truncated_checkpoint_resumed(name, capsys, ckpt, stimulus_dirs, tmp_path):
    _truncate(ckpt / name)
    before = snapshot(tmp_path)
    refused(capsys, argv(stimulus_dirs["text"], ckpt, None, "--resume", steps=4), name)
    assert snapshot(tmp_path) == before


def test_garbage_topo_json_given_as_model(capsys, ckpt, stimulus_dirs, tmp_path):
    (ckpt / "topo.json").write_bytes(b"\xff\xfe\x00garbage")
    refused(capsys, argv(stimulus_dirs["text"], tmp_path / "new", ckpt), "topo.json")
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------- 5. --resume policy
def test_resume_with_another_alpha_is_refused(capsys, ckpt, stimulus_dirs, tmp_path):
    before = snapshot(tmp_path)
    err = refused(
        capsys, argv(stimulus_dirs["text"], ckpt, None, "--resume", steps=4, alpha=5), "--alpha"
    )
    assert "5.0 (checkpoint 20.0)" in err
    assert snapshot(tmp_path) == before


def test_resume_lists_every_changed_setting(capsys, ckpt, stimulus_dirs, tmp_path):
    other = tmp_path / "other-data"
    shutil.copytree(stimulus_dirs["text"], other)
    (other / "alpha" / "items.txt").write_text("a different sentence\n" * 6)
    err = refused(
        capsys,
        argv(other, ckpt, None, "--resume", steps=4, lr=0.5, seed=3, radius_mm=2),
        "--lr 0.5 (checkpoint 0.001)",
        "--seed 3 (checkpoint 0)",
        "--radius-mm",
        "--data content",
        "only --steps and --save-every may change",
    )
    assert "--alpha" not in err and "--steps 4" not in err


def test_resume_with_other_sheet_options_is_refused(capsys, ckpt, stimulus_dirs, no_model):
    refused(
        capsys,
        argv(stimulus_dirs["text"], ckpt, None, "--resume", layout="tiled", mode="direct"),
        "--layout tiled (checkpoint stacked)",
        "--mode direct (checkpoint adaptor)",
    )


def test_resume_of_an_older_checkpoint_compares_its_topo_json(
    capsys, ckpt, stimulus_dirs, no_model
):
    meta = json.loads((ckpt / "topo.json").read_text())
    del meta["training"]["extra"]  # written before topo train recorded its model options
    (ckpt / "topo.json").write_text(json.dumps(meta))
    refused(
        capsys,
        argv(stimulus_dirs["text"], ckpt, None, "--resume", mode="direct", mm_per_unit=2),
        "--mode direct (checkpoint adaptor)",
        "--mm-per-unit 2.0 (checkpoint 1.0)",
    )


def test_resume_with_a_subset_of_areas_is_refused(capsys, ckpt, stimulus_dirs, no_model):
    args = argv(stimulus_dirs["text"], ckpt, None, "--resume", "--areas", "encoder.layer.0")
    refused(capsys, args, "--areas encoder.layer.0 (checkpoint default)")


def test_resume_naming_the_checkpoints_own_areas_trains_on(ckpt, stimulus_dirs):
    areas = ["--areas", "encoder.layer.0", "--areas", "encoder.layer.1"]
    assert main(argv(stimulus_dirs["text"], ckpt, None, "--resume", *areas, steps=3)) == 0
    assert json.loads((ckpt / "topo.json").read_text())["training"]["step"] == 3


def test_resume_with_fewer_steps_than_done_is_refused(capsys, ckpt, stimulus_dirs, no_model):
    refused(capsys, argv(stimulus_dirs["text"], ckpt, None, "--resume", steps=1), "--steps 1")


def test_resume_with_another_base_model_is_refused(capsys, ckpt, tiny_model_dir, stimulus_dirs):
    refused(
        capsys,
        argv(stimulus_dirs["text"], ckpt, tiny_model_dir("gpt2"), "--resume", steps=4),
        "--model",
        "not the base model",
    )


def test_resume_with_more_steps_and_another_save_every_trains_on(ckpt, stimulus_dirs):
    code = main(argv(stimulus_dirs["text"], ckpt, None, "--resume", steps=4, save_every=2))
    assert code == 0
    meta = json.loads((ckpt / "topo.json").read_text())
    assert meta["training"]["step"] == 4 and meta["training"]["steps"] == 4
    log = (ckpt / "train_log.csv").read_text().strip().splitlines()
    assert len(log) == 1 + 4
    assert (ckpt / "report.html").is_file()


# ---------------------------------------------------------------------- 6. SIGINT
def test_sigint_exits_130_and_says_which_checkpoint_is_kept(
    trained, tiny_model_dir, stimulus_dirs, tmp_path
):
    from topocli.models.checkpoint import load_checkpoint

    out = tmp_path / "ckpt"
    args = argv(stimulus_dirs["text"], out, tiny_model_dir("bert"), steps=100000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "topocli.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not (out / "topo.json").is_file():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    m = re.search(
        r"^topo: interrupted: stopped at step (\d+) of 100000 \(SIGINT\); "
        r"checkpoint at step (\d+) kept in",
        err.strip(),
    )
    assert m, err
    assert str(out) in err and "--resume" in err and "Traceback" not in err
    kept = int(m.group(2))
    assert load_checkpoint(out).source["training"]["step"] == kept >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp folder, no lock


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "ckpt")


def test_second_signal_after_a_save_stops_at_once(tiny_model_dir, stimulus_dirs, tmp_path):
    from topocli.models.checkpoint import load_checkpoint
    from topocli.models.topo_model import build_topo_model
    from topocli.stimuli.stimulus_set import load_stimulus_set
    from topocli.training.loop import TrainConfig, TrainingInterrupted, train

    def ctrl_c(step):
        if step == 2:
            raise KeyboardInterrupt  # what _StopFlag raises on a second signal

    config = TrainConfig(
        alpha=5.0,
        radius_mm=3.0,
        neighbourhoods=4,
        steps=50,
        batch_size=4,
        warmup=0,
        save_every=1,
    )
    model = build_topo_model(tiny_model_dir("bert"))
    with pytest.raises(TrainingInterrupted) as info:
        train(
            model,
            load_stimulus_set(stimulus_dirs["text"]),
            tmp_path / "ckpt",
            config,
            on_checkpoint=ctrl_c,
        )
    assert info.value.signum == signal.SIGINT and info.value.saved_step == 2
    assert "stopped at step 2 of 50 (SIGINT); checkpoint at step 2 kept in" in str(info.value)
    assert load_checkpoint(tmp_path / "ckpt").source["training"]["step"] == 2
    assert _leftovers(tmp_path) == []


def test_second_signal_during_a_save_keeps_the_previous_checkpoint(
    tiny_model_dir, stimulus_dirs, tmp_path, monkeypatch
):
    import topocli.training.loop as loop
    from topocli.models.checkpoint import load_checkpoint
    from topocli.models.topo_model import build_topo_model
    from topocli.stimuli.stimulus_set import load_stimulus_set

    real, calls = loop._save_state, []

    def interrupted_save(path, step, *args):
        calls.append(step)
        if step == 3:
            raise KeyboardInterrupt  # Ctrl-C again while the step-3 checkpoint is written
        real(path, step, *args)

    monkeypatch.setattr(loop, "_save_state", interrupted_save)
    config = loop.TrainConfig(
        alpha=5.0,
        radius_mm=3.0,
        neighbourhoods=4,
        steps=50,
        batch_size=4,
        warmup=0,
        save_every=1,
    )
    model = build_topo_model(tiny_model_dir("bert"))
    with pytest.raises(loop.TrainingInterrupted) as info:
        loop.train(model, load_stimulus_set(stimulus_dirs["text"]), tmp_path / "ckpt", config)
    assert info.value.saved_step == 2 and "checkpoint at step 2 kept" in str(info.value)
    assert load_checkpoint(tmp_path / "ckpt").source["training"]["step"] == 2
    assert _leftovers(tmp_path) == []  # the half-written step-3 temp folder is gone


# ---------------------------------------------------------------------- 7. stale temp folders
def _start_time(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()[19]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")
def test_next_train_removes_temp_folders_of_dead_processes_only(
    tiny_model_dir, stimulus_dirs, tmp_path
):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen(["sleep", "120"])
    try:
        me = os.getpid()
        folders = {
            "dead": tmp_path / f".ckpt.tmp-{dead.pid}-0-deadbeef",
            "reused": tmp_path / f".ckpt.tmp-{me}-1-abcdefgh",  # our pid, another start time
            "live": tmp_path / f".ckpt.tmp-{live.pid}-{_start_time(live.pid)}-livelive",
            "live_no_start": tmp_path / f".ckpt.tmp-{live.pid}-0-nostart0",
            "other": tmp_path / ".ckpt.somethingelse",
        }
        for f in folders.values():
            f.mkdir()
            (f / "adaptors.safetensors").write_bytes(b"half")
        code = main(argv(stimulus_dirs["text"], tmp_path / "ckpt", tiny_model_dir("bert")))
        assert code == 0
        assert not folders["dead"].exists() and not folders["reused"].exists()
        assert folders["live"].is_dir() and folders["live_no_start"].is_dir()
        assert folders["other"].is_dir()
    finally:
        live.kill()
        live.wait()


def test_checkpoint_temp_folder_names_this_process(tiny_model_dir, tmp_path):
    from topocli.models.checkpoint import save_checkpoint
    from topocli.models.topo_model import build_topo_model

    seen = []
    save_checkpoint(
        build_topo_model(tiny_model_dir("bert")),
        tmp_path / "ckpt",
        write_extra=lambda folder: seen.append(folder.name),
    )
    pid = os.getpid()
    start = _start_time(pid) if Path(f"/proc/{pid}/stat").is_file() else "0"
    assert seen and seen[0].startswith(f".ckpt.tmp-{pid}-{start}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
