"""The CLI: commands listed, bad input is one line with exit 2 and leaves no results folder."""

import subprocess
import sys

import pytest

from topocli.cli import main

COMMANDS = ["train", "smooth", "localize", "screen", "intervene", "compare", "info"]


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_every_command(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for name in COMMANDS:
        assert name in out


def test_console_script_installed():
    result = subprocess.run(
        [sys.executable, "-m", "topocli.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "localize" in result.stdout


@pytest.mark.parametrize(
    "argv,match",
    [
        (["info", "/no/such/model"], "model path not found"),
        (["info", "--device", "tpu"], "unknown device"),
        (["info", "--dtype", "float8"], "unknown dtype"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, match, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert match in err
    assert len(err.strip().splitlines()) == 1


def test_info_on_tiny_model_writes_results(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "info"
    code, stdout, _ = run(["info", str(tiny_model_dir("clip")), "--out", str(out)], capsys)
    assert code == 0
    assert "vision_model.encoder.layers.0" in stdout
    names = {p.name for p in out.iterdir()}
    assert {"layout.png", "areas.csv", "report.html", "manifest.json"} <= names


def test_out_that_exists_and_is_not_empty(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run(["info", str(tiny_model_dir("bert")), "--out", str(out)], capsys)
    assert code == 2 and "not empty" in err
    assert (out / "keep.txt").read_text() == "mine"


def test_help_imports_neither_torch_nor_transformers():
    """``topo --help`` and usage errors stay fast: the heavy libraries load only with a model."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from topocli.cli import main\n"
        "main(['--help'])\n"
        "main(['localize', '--help'])\n"
        "print('heavy:', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "heavy: []" in run.stdout
