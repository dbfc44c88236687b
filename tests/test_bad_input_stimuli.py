"""Bad and hostile stimuli: every case ends in one line naming the file, exit 2, nothing written.

CSV manifests whose paths escape their folder, ``.txt`` paths in manifests, duplicate rows, the
hashes of referenced files in ``manifest.json``, decompression-bomb images, broken localizer
TOML files, corrupt media in condition folders, and folder names holding rich markup.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fakes import refused

from topocli.cli import main
from topocli.errors import TopoInputError
from topocli.stimuli.stimulus_set import load_stimulus_set


# ---------------------------------------------------------------------- helpers
def _localize(model_dir: Path, stimuli: Path, out: Path, *extra: str) -> list[str]:
    return [
        "localize",
        "--model",
        str(model_dir),
        "--stimuli",
        str(stimuli),
        "--contrast",
        "a>b",
        "--device",
        "cpu",
        "--permutations",
        "0",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


def _nothing_written(out: Path) -> None:
    """No results folder, and no half-written sibling of it."""
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def _png(path: Path, seed: int = 0, size: int = 24) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _image_manifest(folder: Path, n: int = 4) -> Path:
    """``folder/m.csv`` listing ``n`` images per condition a and b kept in ``folder/img``."""
    lines = ["condition,path"]
    for c, cond in enumerate("ab"):
        for i in range(n):
            _png(folder / "img" / f"{cond}{i}.png", seed=10 * c + i)
            lines.append(f"{cond},img/{cond}{i}.png")
    (folder / "m.csv").write_text("\n".join(lines) + "\n")
    return folder / "m.csv"


def _text_folder(root: Path) -> Path:
    for cond in "ab":
        (root / cond).mkdir(parents=True, exist_ok=True)
        lines = [f"the {cond} sentence number {i}" for i in range(4)]
        (root / cond / "items.txt").write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------------- 1. paths escaping
def _escaping_manifest(tmp_path: Path, how: str) -> tuple[Path, str]:
    folder = tmp_path / "set"
    csv = _image_manifest(folder)
    secret = _png(tmp_path / "elsewhere" / "secret.png", seed=99)
    if how == "parent":
        rel = "../elsewhere/secret.png"
    elif how == "absolute":
        rel = str(secret)
    else:  # a symlink inside the folder pointing out of it
        (folder / "img" / "link.png").symlink_to(secret)
        rel = "img/link.png"
    text = csv.read_text().splitlines()
    text.insert(2, f"a,{rel}")  # row 3 (the header is row 1)
    csv.write_text("\n".join(text) + "\n")
    return csv, rel


@pytest.mark.parametrize("how", ["parent", "absolute", "symlink"])
def test_manifest_path_outside_its_folder_is_refused(how, tiny_model_dir, tmp_path, capsys):
    csv, rel = _escaping_manifest(tmp_path, how)
    out = tmp_path / "out"
    refused(
        capsys,
        _localize(tiny_model_dir("vit"), csv, out),
        str(csv),
        "row 3",
        rel,
        "outside",
        "--allow-outside",
    )
    _nothing_written(out)
    with pytest.raises(TopoInputError, match="--allow-outside"):
        load_stimulus_set(csv)


@pytest.mark.parametrize("how", ["parent", "symlink"])
def test_allow_outside_reads_the_paths(how, tiny_model_dir, tmp_path, capsys):
    csv, _ = _escaping_manifest(tmp_path, how)
    stim = load_stimulus_set(csv, allow_outside=True)
    assert stim.counts() == {"a": 5, "b": 4}
    assert (tmp_path / "elsewhere" / "secret.png").resolve() in stim.referenced_files()
    out = tmp_path / "out"
    assert main(_localize(tiny_model_dir("vit"), csv, out, "--allow-outside")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["counts"]["a"] == {"even": 3, "odd": 2}


@pytest.mark.parametrize(
    "argv",
    [
        ["screen", "--stimuli", "{csv}", "--allow-outside"],
        ["train", "--data", "{csv}", "--out", "{out}", "--allow-outside"],
        ["localize", "--stimuli", "{csv}", "-c", "a>b", "--allow-outside"],
    ],
    ids=["screen", "train", "localize"],
)
def test_every_command_passes_allow_outside_through(argv, tmp_path, capsys, monkeypatch):
    import topocli.stimuli.stimulus_set as stimulus_set

    seen = []

    def fake_load(source, conditions=None, allow_outside=False):
        seen.append(allow_outside)
        raise TopoInputError("stop here", source)

    monkeypatch.setattr(stimulus_set, "load_stimulus_set", fake_load)
    csv = tmp_path / "m.csv"
    csv.write_text("condition,text\na,hello\nb,world\n")
    argv = [a.format(csv=csv, out=tmp_path / "out") for a in argv]
    refused(capsys, [*argv, "--device", "cpu"], "stop here")
    assert seen == [True]


# ---------------------------------------------------------------------- 2. .txt paths
def test_manifest_txt_paths_give_one_stimulus_per_line(tiny_model_dir, tmp_path):
    folder = tmp_path / "set"
    (folder / "txt").mkdir(parents=True)
    (folder / "txt" / "a.txt").write_text("one a\n\n two a \nthree a\nfour a\n")
    (folder / "txt" / "b.txt").write_text("one b\ntwo b\n")
    (folder / "txt" / "b2.txt").write_text("three b\nfour b\n")
    csv = folder / "m.csv"
    csv.write_text("condition,path\na,txt/a.txt\nb,txt/b.txt\nb,txt/b2.txt\n")
    stim = load_stimulus_set(csv)
    assert stim.conditions == ["a", "b"] and stim.modality == "text"
    assert [s.text for s in stim] == [
        *("one a", "two a", "three a", "four a"),
        *("one b", "two b", "three b", "four b"),
    ]
    assert stim.split_index().tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert [s.line for s in stim][:4] == [1, 3, 4, 5]
    out = tmp_path / "out"
    assert main(_localize(tiny_model_dir("bert"), csv, out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["counts"]["b"] == {"even": 2, "odd": 2}


TXT_ROW_CASES = {
    "not UTF-8": (lambda p: p.write_bytes("caf\xe9\n".encode("latin-1")), "not UTF-8"),
    "empty": (lambda p: p.write_text(""), "no text"),
    "blank lines only": (lambda p: p.write_text("\n  \n\n"), "no text"),
    "missing": (lambda p: None, "not found"),
}


@pytest.mark.parametrize("case", list(TXT_ROW_CASES))
def test_manifest_txt_path_errors_name_the_csv_and_row(case, tiny_model_dir, tmp_path, capsys):
    setup, needle = TXT_ROW_CASES[case]
    folder = tmp_path / "set"
    (folder / "txt").mkdir(parents=True)
    (folder / "txt" / "a.txt").write_text("one\ntwo\nthree\nfour\n")
    setup(folder / "txt" / "b.txt")
    csv = folder / "m.csv"
    csv.write_text("condition,path\na,txt/a.txt\nb,txt/b.txt\n")
    out = tmp_path / "out"
    refused(capsys, _localize(tiny_model_dir("bert"), csv, out), str(csv), "row 3", needle)
    _nothing_written(out)


def test_manifest_unsupported_file_names_the_csv_and_row(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "set"
    csv = _image_manifest(folder, n=2)
    (folder / "notes.docx").write_text("hi")
    csv.write_text(csv.read_text() + "b,notes.docx\n")
    out = tmp_path / "out"
    argv = _localize(tiny_model_dir("vit"), csv, out)
    refused(capsys, argv, str(csv), "row 6", "notes.docx", "unsupported file type")
    _nothing_written(out)


# ---------------------------------------------------------------------- 3. duplicate rows
DUPLICATE_CASES = {
    "text": ("condition,text\na,hello\nb,world\na,hello\n", "text"),
    "file": ("condition,path\na,x.png\nb,y.png\na,./x.png\n", "x.png"),
    "txt file": ("condition,path\na,t.txt\nb,u.txt\na,t.txt\n", "t.txt"),
}


@pytest.mark.parametrize("case", list(DUPLICATE_CASES))
def test_duplicate_manifest_rows_are_refused(case, tmp_path, capsys):
    body, needle = DUPLICATE_CASES[case]
    folder = tmp_path / "set"
    _png(folder / "x.png")
    _png(folder / "y.png", seed=1)
    (folder / "t.txt").write_text("one\ntwo\n")
    (folder / "u.txt").write_text("three\nfour\n")
    csv = folder / "m.csv"
    csv.write_text(body)
    out = tmp_path / "out"
    argv = ["localize", "--stimuli", str(csv), "-c", "a>b", "--out", str(out)]
    refused(capsys, argv, str(csv), "rows 2 and 4", "'a'", needle)
    _nothing_written(out)


def test_same_text_in_two_conditions_is_not_a_duplicate(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("condition,text\na,hello\nb,hello\n")
    assert load_stimulus_set(csv).counts() == {"a": 1, "b": 1}


def test_manifest_that_is_not_a_csv_is_one_line(tmp_path, capsys):
    csv = tmp_path / "m.csv"
    csv.write_text("condition,text\na," + "x" * 200_000 + "\n")  # over csv's field limit
    out = tmp_path / "out"
    refused(capsys, ["localize", "--stimuli", str(csv), "--out", str(out)], str(csv), "CSV")
    csv.write_bytes(b"condition,text\na,caf\xe9\n")
    refused(capsys, ["localize", "--stimuli", str(csv), "--out", str(out)], str(csv), "UTF-8")
    _nothing_written(out)


def test_manifest_path_with_a_nul_byte_is_one_line(tmp_path, capsys):
    csv = tmp_path / "m.csv"
    csv.write_bytes(b"condition,path\na,x\x00y.png\n")
    out = tmp_path / "out"
    refused(capsys, ["localize", "--stimuli", str(csv), "--out", str(out)], str(csv), "row 2")
    _nothing_written(out)


# ---------------------------------------------------------------------- 4. referenced hashes
def test_input_paths_of_a_manifest_and_of_a_folder(tmp_path):
    csv = _image_manifest(tmp_path / "set", n=2)
    stim = load_stimulus_set(csv)
    images = [(tmp_path / "set" / "img" / f"{c}{i}.png").resolve() for c in "ab" for i in (0, 1)]
    assert stim.referenced_files() == images
    assert stim.input_paths() == [csv, *images]
    folder = load_stimulus_set(_text_folder(tmp_path / "text"))
    assert folder.input_paths() == [tmp_path / "text" / "a", tmp_path / "text" / "b"]
    text_rows = tmp_path / "t.csv"
    text_rows.write_text("condition,text\na,hello\nb,world\n")
    assert load_stimulus_set(text_rows).input_paths() == [text_rows]


def test_manifest_json_hashes_every_referenced_file(tiny_model_dir, tmp_path):
    from topocli.reporting.results import sha256_file

    csv = _image_manifest(tmp_path / "set")
    edited = (tmp_path / "set" / "img" / "b1.png").resolve()

    def recorded(out: Path) -> dict[str, str]:
        assert main(_localize(tiny_model_dir("vit"), csv, out)) == 0
        inputs = json.loads((out / "manifest.json").read_text())["inputs"]["stimuli"]
        return {entry["path"]: entry["sha256"] for entry in inputs}

    first = recorded(tmp_path / "out1")
    assert list(first)[0] == str(csv.resolve())
    assert len(first) == 1 + 8 and first[str(edited)] == sha256_file(edited)
    _png(edited, seed=1234)  # same name, other pixels; the CSV is unchanged
    second = recorded(tmp_path / "out2")
    assert second[str(csv.resolve())] == first[str(csv.resolve())]
    assert second[str(edited)] != first[str(edited)]
    assert second[str(edited)] == sha256_file(edited)
    assert {k: v for k, v in second.items() if k != str(edited)} == {
        k: v for k, v in first.items() if k != str(edited)
    }


# ---------------------------------------------------------------------- 5. decompression bombs
@pytest.mark.parametrize(
    "side,mode",
    [(15000, "1"), (10000, "1"), (10000, "P")],  # PIL raises over 179M pixels, warns over 89M
    ids=["error-1bit", "warning-1bit", "warning-palette"],
)
def test_decompression_bomb_png_is_one_line(side, mode, tiny_model_dir, tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "stim"
    for cond in "ab":
        for i in range(4):
            _png(root / cond / f"img{i}.png", seed=i)
    bomb = root / "b" / "bomb.png"
    Image.new(mode, (side, side)).save(bomb)
    assert bomb.stat().st_size < 200_000
    out = tmp_path / "out"
    refused(
        capsys,
        _localize(tiny_model_dir("vit"), root, out, "--no-cache"),
        str(bomb),
        "decompression bomb",
    )
    _nothing_written(out)


# ---------------------------------------------------------------------- 6. localizer TOML
TOML_CASES = {
    "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00",
    "latin-1": "name = 'caf\xe9'\n".encode("latin-1"),
    "NUL byte": b"name = 'x'\x00\n",
    "syntax error": b"name = 'x'\nconditions = [\n",
    "duplicate key": b"name = 'x'\nname = 'y'\n",
}


@pytest.mark.parametrize("case", list(TOML_CASES))
def test_broken_localizer_toml_is_one_line(case, stimulus_dirs, tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_bytes(TOML_CASES[case])
    out = tmp_path / "out"
    argv = ["localize", "--localizer", str(toml), "--stimuli", str(stimulus_dirs["text"])]
    refused(capsys, [*argv, "--out", str(out)], str(toml))
    _nothing_written(out)


# ---------------------------------------------------------------------- 7. corrupt media
def _write_garbage_png(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")


def _write_truncated_png(path: Path) -> None:
    _png(path, size=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_not_an_image(path: Path) -> None:
    path.write_bytes(os.urandom(64))


def _write_garbage_wav(path: Path) -> None:
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnonsense")


def _write_empty_wav(path: Path) -> None:
    path.write_bytes(b"")


MEDIA_CASES = {
    "garbage png": ("vit", "img", _write_garbage_png, "cannot read image"),
    "truncated png": ("vit", "img", _write_truncated_png, "cannot read image"),
    "random bytes jpg": ("vit", "img", _write_not_an_image, "cannot read image"),
    "garbage wav": ("wav2vec2", "wav", _write_garbage_wav, "cannot read audio"),
    "empty wav": ("wav2vec2", "wav", _write_empty_wav, "cannot read audio"),
}


@pytest.mark.parametrize("case", list(MEDIA_CASES))
def test_corrupt_media_in_a_condition_folder(case, tiny_model_dir, stimulus_dirs, tmp_path, capsys):
    family, kind, write, needle = MEDIA_CASES[case]
    source = stimulus_dirs["image" if kind == "img" else "audio"]
    root = tmp_path / "stim"
    for cond, target in (("a", "alpha"), ("b", "beta")):
        shutil.copytree(source / target, root / cond)
    bad = root / "b" / ("zz_bad.jpg" if case == "random bytes jpg" else f"zz_bad.{kind[:3]}")
    if kind == "img" and case != "random bytes jpg":
        bad = bad.with_suffix(".png")
    write(bad)
    out = tmp_path / "out"
    refused(capsys, _localize(tiny_model_dir(family), root, out, "--no-cache"), str(bad), needle)
    _nothing_written(out)


TEXT_FILE_CASES = {
    "empty": (b"", "no text"),
    "blank lines only": (b"\n \n\t\n", "no text"),
    "not UTF-8": ("caf\xe9\n".encode("latin-1"), "not UTF-8"),
}


@pytest.mark.parametrize("case", list(TEXT_FILE_CASES))
def test_bad_text_file_in_a_condition_folder(case, tiny_model_dir, tmp_path, capsys):
    data, needle = TEXT_FILE_CASES[case]
    root = _text_folder(tmp_path / "stim")
    bad = root / "b" / "more.txt"
    bad.write_bytes(data)
    out = tmp_path / "out"
    refused(capsys, _localize(tiny_model_dir("bert"), root, out), str(bad), needle)
    _nothing_written(out)


# ---------------------------------------------------------------------- 8. rich markup
MARKUP_NAMES = ["data[v2]", "x[/y]", "[bold]red", "a[b]c[/b]"]


@pytest.mark.parametrize("name", MARKUP_NAMES)
def test_markup_in_an_empty_folder_name_is_verbatim(name, tmp_path, capsys):
    root = tmp_path / name
    root.mkdir(parents=True)
    out = tmp_path / "out"
    argv = ["localize", "--stimuli", str(root), "-c", "a>b", "--out", str(out)]
    refused(capsys, argv, str(root), "empty")
    _nothing_written(out)


@pytest.mark.parametrize("name", MARKUP_NAMES)
def test_markup_in_a_condition_without_stimuli_is_verbatim(name, tmp_path, capsys):
    root = _text_folder(tmp_path / name)
    (root / "c").mkdir()
    out = tmp_path / "out"
    argv = ["localize", "--stimuli", str(root), "-c", "a>b", "--out", str(out)]
    refused(capsys, argv, str(root / "c"), "condition 'c' has no stimuli")
    _nothing_written(out)


@pytest.mark.parametrize("name", MARKUP_NAMES)
def test_markup_in_a_manifest_folder_name_is_verbatim(name, tmp_path, capsys):
    folder = tmp_path / name
    folder.mkdir(parents=True)
    csv = folder / "m.csv"
    csv.write_text("condition,path\na,missing[v2].png\n")
    out = tmp_path / "out"
    argv = ["localize", "--stimuli", str(csv), "-c", "a>b", "--out", str(out)]
    refused(capsys, argv, str(csv), "row 2", "missing[v2].png")
    _nothing_written(out)
