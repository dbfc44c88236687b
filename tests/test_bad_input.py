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
    "missing required option": (["compare"], "--model-results"),
    "missing argument": (["smooth"], "INPUT"),
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
