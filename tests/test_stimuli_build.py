"""``topo stimuli``: sets built from packaged material, deterministic, with provenance.

The fast tests build from a small fake source tree made here (the Debian layout below a
``TOPO_STIMULI_SOURCE_ROOT``: dpkg status, copyright files, tuxpaint stamps, a wallpaper,
asterisk prompts, sonic-pi samples), so they need none of the Debian packages. The slow tests
build the real sets and skip with the apt-get line when the packages are absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from topocli.errors import TopoInputError
from topocli.stimuli.builders import audio, images
from topocli.stimuli.builders.build import PROVENANCE, build_set
from topocli.stimuli.builders.sets import SETS
from topocli.stimuli.builders.sources import SOURCES, licence_for, status

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(
    ESPEAK is None, reason="needs espeak-ng: apt-get install -y espeak-ng"
)
PACKAGES = {
    "tuxpaint-stamps-default": "2022.06.04-1",
    "mate-backgrounds": "1.26.0-1",
    "asterisk-core-sounds-en-wav": "1.6.1-1",
    "sonic-pi-samples": "3.2.2~repack-8",
}
CATEGORY_DIRS = ["animals", "food", "vehicles", "plants", "household", "town/houses", "people"]


def _png(path: Path, rng: np.random.Generator, alpha: bool = True) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    if alpha:
        a = np.zeros((40, 56, 1), dtype=np.uint8)
        a[8:32, 10:46] = 255  # an opaque cut-out on a transparent margin
        Image.fromarray(np.concatenate([rgb, a], axis=2), mode="RGBA").save(path)
    else:
        Image.fromarray(rgb, mode="RGB").save(path)


def _sound(path: Path, rng: np.random.Generator, rate: int, fmt: str, seconds: float = 1.2):
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 900) * t) + 0.05 * rng.standard_normal(t.size)
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[fmt]
    sf.write(str(path), wave, rate, format=fmt, subtype=subtype)


@pytest.fixture
def fake_root(tmp_path, monkeypatch) -> Path:
    """A Debian-like tree with a few files per category, one corrupt image, one corrupt ogg."""
    root = tmp_path / "root"
    rng = np.random.default_rng(7)
    status_file = root / "var/lib/dpkg/status"
    status_file.parent.mkdir(parents=True)
    status_file.write_text(
        "\n".join(
            f"Package: {p}\nStatus: install ok installed\nVersion: {v}\n"
            for p, v in PACKAGES.items()
        ),
        encoding="utf-8",
    )
    for pkg in PACKAGES:
        doc = root / f"usr/share/doc/{pkg}/copyright"
        doc.parent.mkdir(parents=True)
        doc.write_text(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nLicense: GPL-2\n\n"
            "Files: etc/samples/drum_*.flac\nLicense: CC0\n",
            encoding="utf-8",
        )
    lic = root / "usr/share/common-licenses/GPL-2"
    lic.parent.mkdir(parents=True)
    lic.write_text("GNU GENERAL PUBLIC LICENSE Version 2 (test copy)\n", encoding="utf-8")
    stamps = root / "usr/share/tuxpaint/stamps"
    for cat in CATEGORY_DIRS:
        for i in range(3):
            _png(stamps / cat / f"{cat.replace('/', '_')}{i}.png", rng)
        _png(stamps / cat / "cartoon" / "drawn.png", rng)  # excluded folder
    (stamps / "animals" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    for i in range(4):
        _sound(stamps / "animals" / f"cat{i}_desc_fr.ogg", rng, 22050, "OGG")
        _sound(stamps / "animals" / f"cat{i}.ogg", rng, 22050, "OGG")
    (stamps / "animals" / "bad_desc_es.ogg").write_bytes(b"OggS but not really")
    _png(root / "usr/share/backgrounds/mate/nature/Dune.jpg", rng, alpha=False)
    for i in range(4):
        _sound(root / f"usr/share/asterisk/sounds/en_US_f_Allison/p{i}.wav", rng, 8000, "WAV")
        _sound(root / f"usr/share/sonic-pi/samples/drum_{i}.flac", rng, 44100, "FLAC")
    _sound(root / "usr/share/sonic-pi/samples/ambi_choir.flac", rng, 44100, "FLAC")
    monkeypatch.setenv("TOPO_STIMULI_SOURCE_ROOT", str(root))
    return root


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def _check_provenance(folder: Path) -> pd.DataFrame:
    """Every stimulus file has a used row naming its licence and an existing licence folder."""
    prov = pd.read_csv(folder / PROVENANCE, keep_default_na=False)
    stimuli = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix in (".png", ".wav") and not p.relative_to(folder).parts[0].startswith("_")
    )
    used = prov[prov["status"] == "used"]
    assert sorted(used["file"]) == stimuli
    assert (used["licence"].str.strip() != "").all()
    for lic_folder in used["licence_file"]:
        for part in lic_folder.split():
            assert (folder / part).is_dir() and any((folder / part).iterdir()), part
    return prov


def test_categories_visual_is_deterministic_with_provenance(fake_root, tmp_path):
    from topocli.stimuli.stimulus_set import load_stimulus_set

    a = build_set("categories-visual", tmp_path / "a", per_condition=2, seed=3)
    b = build_set("categories-visual", tmp_path / "b", per_condition=2, seed=3)
    assert a.counts == dict.fromkeys(SETS["categories-visual"].condition_names, 2)
    assert _tree_bytes(a.out) == _tree_bytes(b.out)
    prov = _check_provenance(a.out)
    # versions come from the dpkg status; cartoon folders are never drawn
    assert set(prov["version"]) <= set(PACKAGES.values())
    assert not prov["original"].str.contains("/cartoon/").any()
    # a folder of condition sub-folders, as localize / screen read it (_licenses is not one)
    stim = load_stimulus_set(a.out)
    assert list(stim.conditions) == sorted(SETS["categories-visual"].condition_names)
    img = np.asarray(__import__("PIL.Image").Image.open(a.out / "animals/animals_000.png"))
    assert img.shape == (images.SIZE, images.SIZE, 3)
    y = images.luminance(img.astype(float))
    assert abs(y.mean() - images.TARGET_MEAN) < 1.5 and abs(y.std() - images.TARGET_RMS) < 2


def test_corrupt_material_is_skipped_and_recorded(fake_root, tmp_path):
    result = build_set("categories-visual", tmp_path / "all", per_condition=10, seed=0)
    prov = pd.read_csv(result.out / PROVENANCE, keep_default_na=False)
    bad = prov[prov["original"].str.endswith("broken.png")]
    assert list(bad["status"]) == ["skipped"] and "cannot read image" in bad["reason"].iloc[0]
    # three animal stamps, of which animals1.png is reserved for training (partition.py)
    assert result.counts["animals"] == 2 and result.skipped["animals"] == 1
    assert not prov["original"].str.endswith("animals1.png").any()
    # fewer than asked: what there is, and the README says so
    readme = (result.out / "README.md").read_text(encoding="utf-8")
    assert "Fewer than 10" in readme and "animals (2)" in readme


def test_missing_source_is_one_line_naming_the_package(tmp_path, monkeypatch, capsys):
    from topocli.cli.app import main

    monkeypatch.setenv("TOPO_STIMULI_SOURCE_ROOT", str(tmp_path / "empty"))
    rc = main(["stimuli", "build", "categories-visual", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "apt-get install -y tuxpaint-stamps-default" in err
    assert not (tmp_path / "x").exists()
    assert main(["stimuli", "build", "nope", "--out", str(tmp_path / "y")]) == 2
    assert "unknown stimulus set 'nope'" in capsys.readouterr().err


def test_list_says_what_each_set_needs(tmp_path, monkeypatch, capsys):
    from topocli.cli.app import main

    monkeypatch.setenv("TOPO_STIMULI_SOURCE_ROOT", str(tmp_path / "empty"))
    assert main(["stimuli", "list"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in SETS:
        assert name in text
    assert "needs: apt-get install -y tuxpaint-stamps-default" in text


@needs_espeak
def test_voice_set_is_mono_16k_fixed_length_rms_matched(fake_root, tmp_path):
    from scipy.io import wavfile

    a = build_set("voice", tmp_path / "a", per_condition=6, seed=1)
    b = build_set("voice", tmp_path / "b", per_condition=6, seed=1)
    assert _tree_bytes(a.out) == _tree_bytes(b.out)
    prov = _check_provenance(a.out)
    used = prov[prov["status"] == "used"]
    assert set(used[used["condition"] == "vocal"]["source"]) == {
        "asterisk-en",
        "tuxpaint",
        "espeak-ng+topo-text",
    }
    nonvocal = used[used["condition"] == "non_vocal"]
    assert not nonvocal["original"].str.contains("choir|_desc").any()
    # the per-file DEP-5 paragraph wins over the package default
    assert set(nonvocal[nonvocal["source"] == "sonic-pi"]["licence"]) == {"CC0"}
    for path in sorted(a.out.glob("*/*.wav")):
        rate, pcm = wavfile.read(path)
        assert rate == audio.RATE and pcm.ndim == 1 and pcm.size == 2 * audio.RATE
        x = audio.trim_silence(pcm / 32767.0)
        assert np.sqrt((x**2).mean()) == pytest.approx(audio.TARGET_RMS, rel=0.1)


def test_phase_scramble_keeps_the_amplitude_spectrum():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, size=(32, 48, 3))
    out = images.phase_scramble(img, np.random.default_rng(1))
    for c in range(3):
        np.testing.assert_allclose(
            np.abs(np.fft.fft2(out[..., c])), np.abs(np.fft.fft2(img[..., c])), rtol=1e-7, atol=1e-6
        )
    # the phase did change: the image is not the original
    assert np.corrcoef(out[..., 0].ravel(), img[..., 0].ravel())[0, 1] < 0.5


def test_luminance_matching_hits_mean_and_rms():
    rng = np.random.default_rng(2)
    img = rng.uniform(20, 90, size=(64, 64, 3))
    out = images.match_luminance(img, mean=110.0, rms=30.0)
    y = out @ np.array([0.2126, 0.7152, 0.0722])
    assert y.mean() == pytest.approx(110.0, abs=0.05) and y.std() == pytest.approx(30.0, abs=0.05)
    with pytest.raises(TopoInputError, match="uniform"):
        images.match_luminance(np.full((8, 8, 3), 50.0))


def test_quilt_reorders_segments_matching_boundary_change():
    rng = np.random.default_rng(3)
    x = np.concatenate(
        [np.sin(2 * np.pi * f * np.arange(960) / 16000) for f in range(200, 2200, 100)]
    )
    q, order = audio.quilt(x, np.random.default_rng(4))
    n = x.size // 960
    assert sorted(order.tolist()) == list(range(n))  # every segment once
    assert order.tolist() != list(range(n))
    # no segment is followed by its original successor while others were free
    pairs = list(zip(order[:-1], order[1:]))
    assert sum(int(b == a + 1) for a, b in pairs) <= 1
    assert q.size == n * 960 - (n - 1) * 80  # 5 ms cross-fades
    with pytest.raises(TopoInputError, match="too short"):
        audio.quilt(rng.standard_normal(100), rng)


def test_per_file_licence_from_the_copyright_file(fake_root):
    src = SOURCES["sonic-pi"]
    assert licence_for(src, Path("/usr/share/sonic-pi/samples/drum_1.flac")) == "CC0"
    assert licence_for(src, Path("/usr/share/sonic-pi/samples/ambi_choir.flac")) == "GPL-2"
    st = status(src)
    assert st.present and st.version == PACKAGES["sonic-pi-samples"]
    assert not status(SOURCES["emoji"]).present


def test_localizer_build_prefix_builds_once_into_the_cache(fake_root, tmp_path, monkeypatch):
    from topocli.stimuli.localizers import load_localizer

    monkeypatch.setenv("TOPO_STIMULI_DIR", str(tmp_path / "cache"))
    toml = tmp_path / "cats.toml"
    body = (
        'name = "cats"\ndescription = "d"\nmodality = "image"\nstimuli = "build:{}"\n'
        'conditions = ["animals", "food"]\nsource = ["s"]\n'
        '[contrasts]\n"a-f" = "animals - food"\n'
    )
    toml.write_text(body.format("categories-visual"), encoding="utf-8")
    loc = load_localizer(toml)
    with pytest.warns(UserWarning, match="has 3 of 48"):
        first = loc.stimulus_folders()
    assert first["animals"].parent.parent == tmp_path / "cache"
    stamp = (first["animals"].parent / "manifest.json").stat().st_mtime_ns
    again = load_localizer(toml).stimulus_folders()
    assert again == first
    assert (first["animals"].parent / "manifest.json").stat().st_mtime_ns == stamp
    for bad, msg in (("nope", "names no buildable set"), ("voice", "builds audio stimuli")):
        toml.write_text(body.format(bad), encoding="utf-8")
        with pytest.raises(TopoInputError, match=msg):
            load_localizer(toml)


def test_generated_sets_are_reachable(tmp_path):
    result = build_set("retinotopy", tmp_path / "r", per_condition=2, seed=5)
    assert result.counts == dict.fromkeys(SETS["retinotopy"].condition_names, 2)
    _check_provenance(result.out)


# ---------------------------------------------------------------------- the real packages
def _real_or_skip(name: str):
    definition = SETS[name]
    missing = [
        SOURCES[k].package for k in definition.required if not status(SOURCES[k], "/").present
    ]
    if missing:
        pytest.skip(f"needs: apt-get install -y {' '.join(missing)}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["emfl-visual", "categories-visual", "voice", "emfl-auditory"])
def test_real_sets_build_with_48_per_condition(name, tmp_path, monkeypatch):
    monkeypatch.delenv("TOPO_STIMULI_SOURCE_ROOT", raising=False)
    _real_or_skip(name)
    result = build_set(name, tmp_path / name, per_condition=48, seed=0)
    short = {"emfl-auditory": {"false_belief": 44, "false_photo": 44}}.get(name, {})
    for cond, n in result.counts.items():
        assert n == short.get(cond, 48) or (name == "categories-visual" and n >= 40), cond
    _check_provenance(result.out)


@pytest.mark.slow
def test_real_emfl_visual_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.delenv("TOPO_STIMULI_SOURCE_ROOT", raising=False)
    _real_or_skip("emfl-visual")
    a = build_set("emfl-visual", tmp_path / "a", per_condition=6, seed=2)
    c = build_set("emfl-visual", tmp_path / "c", per_condition=6, seed=2)
    assert _tree_bytes(a.out) == _tree_bytes(c.out)
