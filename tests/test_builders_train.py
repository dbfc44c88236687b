"""Training stimulus sets (issue 17): disjoint from every localizer set, deterministic.

The partition is checked against an independent oracle written here (SHA-256 of the installed
path below ``usr/share``, a quarter reserved, the four landscape photographs pinned to the
localizer side), on a fake Debian tree whose every partitioned source holds reserved and
unreserved files, so the checks cannot pass vacuously. The real-package checks skip with the
apt-get line when the packages are absent.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_stimuli_build import PACKAGES, _png, _sound

from topocli.stimuli.builders import generated, partition
from topocli.stimuli.builders.build import PROVENANCE, build_set, source_statuses
from topocli.stimuli.builders.sets import SETS, tonotopy_frequencies
from topocli.stimuli.builders.sources import SOURCES, status

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(
    ESPEAK is None, reason="needs espeak-ng: apt-get install -y espeak-ng"
)
LOCALIZER_SETS = ("emfl-visual", "categories-visual", "voice", "emfl-auditory")
TRAIN_SETS = ("train-visual", "train-auditory")
PARTITIONED = ("tuxpaint", "mate", "mate-all", "asterisk", "sonic-pi")
GENERATED_OR_TEXT = ("topo-generated", "espeak-ng+topo-corpus")
N_TRAIN = 32  # more than the fake tree's reserved stamps and crops (25): generated ones too
LANDSCAPES = {f"backgrounds/mate/nature/{n}" for n in ("Dune", "Storm", "GreenMeadow", "Aqua")}


# ---------------------------------------------------------------------- the oracle
def oracle_reserved(name: str) -> bool:
    """Reserved for training: SHA-256 of the name, first 8 bytes, big-endian, 0 modulo 4."""
    if name.rsplit(".", 1)[0] in LANDSCAPES:
        return False
    return int(hashlib.sha256(name.encode()).hexdigest()[:16], 16) % 4 == 0


def below_usr_share(original: str, root: Path) -> str:
    """The stable name of a PROVENANCE original (``PATH`` or ``PATH (crop ...)``)."""
    path = Path(original.split(" (")[0])
    return path.relative_to(root / "usr" / "share").as_posix()


def is_partitioned(source: str) -> bool:
    return source.split("+")[0].startswith(PARTITIONED)


def originals(folder: Path) -> pd.DataFrame:
    """Every original a build drew (used or skipped) from a partitioned source."""
    prov = pd.read_csv(folder / PROVENANCE, keep_default_na=False)
    return prov[prov["source"].map(is_partitioned)]


def stimulus_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every stimulus file -> its path."""
    return {
        hashlib.sha256(p.read_bytes()).hexdigest(): str(p)
        for p in sorted(folder.rglob("*"))
        if p.suffix in (".png", ".wav") and not p.relative_to(folder).parts[0].startswith("_")
    }


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


# ---------------------------------------------------------------------- a fake tree
CATEGORIES = ["animals", "food", "vehicles", "plants", "household", "town/houses", "people"]


def _make_tree(root: Path) -> dict[str, list[str]]:
    """A Debian-like tree with 8 stamps per category and enough sounds and wallpapers that
    every partitioned source has reserved and unreserved files; returns stable names."""
    rng = np.random.default_rng(11)
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
        doc.write_text("Files: *\nLicense: GPL-2\n", encoding="utf-8")
    share = root / "usr/share"
    stamps = share / "tuxpaint/stamps"
    for cat in CATEGORIES:
        for i in range(8):
            _png(stamps / cat / f"{cat.replace('/', '_')}{i}.png", rng)
    _png(stamps / "animals" / "cartoon" / "drawn.png", rng)
    for i in range(8):
        _sound(stamps / "animals" / f"cat{i}_desc_fr.ogg", rng, 22050, "OGG")
        _sound(stamps / "animals" / f"cat{i}.ogg", rng, 22050, "OGG")
    for name in ("nature/Dune.jpg", "nature/Storm.jpg", *(f"abstract/w{i}.png" for i in range(8))):
        _png(share / "backgrounds/mate" / name, rng, alpha=False)
    for i in range(16):
        _sound(share / f"asterisk/sounds/en_US_f_Allison/p{i}.wav", rng, 8000, "WAV")
    for i in range(12):
        _sound(share / f"sonic-pi/samples/drum_{i}.flac", rng, 44100, "FLAC")
    names: dict[str, list[str]] = {}
    for folder, key in (
        ("tuxpaint/stamps", "stamps"),
        ("backgrounds/mate", "mate"),
        ("asterisk/sounds", "asterisk"),
        ("sonic-pi/samples", "sonic-pi"),
    ):
        names[key] = sorted(
            p.relative_to(share).as_posix() for p in (share / folder).rglob("*") if p.is_file()
        )
    return names


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The fake tree, as the source root for the whole module."""
    root = tmp_path_factory.mktemp("train-root")
    names = _make_tree(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOPO_STIMULI_SOURCE_ROOT", str(root))
        yield root, names


@pytest.fixture(scope="module")
def builds(tree, tmp_path_factory):
    """Small builds of the localizer sets (two seeds, two counts) and the training sets."""
    out = tmp_path_factory.mktemp("train-builds")
    made: dict[tuple, Path] = {}
    partitioned = ["categories-visual"] + (["voice"] if ESPEAK else [])
    for name in partitioned:
        for seed in (0, 5):
            for n in (1, 3):
                made[name, seed, n] = build_set(name, out / f"{name}-{seed}-{n}", n, seed).out
    for name in ("retinotopy", "tonotopy"):  # generated: for the byte check only
        made[name, 0, 2] = build_set(name, out / name, 2, 0).out
    trains = ["train-visual"] + (["train-auditory"] if ESPEAK else [])
    for name in trains:
        for tag, seed in (("a", 3), ("b", 3), ("c", 4)):
            made[name, tag] = build_set(name, out / f"{name}-{tag}", N_TRAIN, seed).out
    return made


# ---------------------------------------------------------------------- the rule
def test_partition_matches_the_oracle_and_reserves_a_quarter():
    names = [f"tuxpaint/stamps/animals/cat{i}.png" for i in range(4000)]
    reserved = [partition.is_reserved(n) for n in names]
    assert reserved == [oracle_reserved(n) for n in names]
    assert 0.22 < np.mean(reserved) < 0.28
    # names differing in one digit are not one block (crc32 would put cat0..cat9 together)
    assert 0 < sum(reserved[:10]) < 10
    for name in LANDSCAPES:
        assert not partition.is_reserved(name + ".jpg")
    assert partition.PINNED == {n + ".jpg" for n in LANDSCAPES}


def test_fake_tree_exercises_both_sides(tree):
    """Every partitioned source of the fake tree holds reserved and unreserved originals."""
    _, names = tree
    for key, listed in names.items():
        sides = {oracle_reserved(n) for n in listed if not n.startswith("doc/")}
        assert sides == {True, False}, key


def test_stable_name_does_not_depend_on_the_root_or_the_folder(tree, tmp_path):
    root, _ = tree
    a = status(SOURCES["mate"], root)
    b = status(SOURCES["mate-all"], root)
    dune = root / "usr/share/backgrounds/mate/nature/Dune.jpg"
    assert partition.stable_name(a, dune) == partition.stable_name(b, dune)
    assert partition.stable_name(a, dune) == "backgrounds/mate/nature/Dune.jpg"


def _pool_originals(name: str, root: Path) -> list[tuple[str, str]]:
    """(source, original) of every candidate of every condition of a set (any seed, count)."""
    definition = SETS[name]
    statuses = {k: v for k, v in source_statuses(definition, root).items() if v.present}
    return [
        (c.source, c.original)
        for cond in definition.conditions
        for pool in cond.pools(statuses)
        for c in pool
    ]


@pytest.mark.parametrize("name", ["categories-visual", "voice"])
def test_localizer_pools_hold_no_reserved_original(name, tree):
    """The pools a build draws from, whatever the seed and count, hold no reserved file."""
    root, _ = tree
    if name == "voice" and ESPEAK is None:
        pytest.skip("needs espeak-ng: apt-get install -y espeak-ng")
    drawn = [(s, o) for s, o in _pool_originals(name, root) if is_partitioned(s)]
    assert drawn
    assert not [o for _, o in drawn if oracle_reserved(below_usr_share(o, root))]


def test_localizer_builds_draw_no_reserved_original(tree, builds):
    root, _ = tree
    checked = 0
    for key, folder in builds.items():
        if key[0] in TRAIN_SETS:
            continue
        rows = originals(folder)
        leaked = [o for o in rows["original"] if oracle_reserved(below_usr_share(o, root))]
        assert not leaked, (key, leaked)
        checked += len(rows)
    assert checked > 0


def test_training_builds_draw_only_reserved_or_generated(tree, builds):
    root, _ = tree
    for key, folder in builds.items():
        if key[0] not in TRAIN_SETS:
            continue
        prov = pd.read_csv(folder / PROVENANCE, keep_default_na=False)
        part = prov["source"].map(is_partitioned)
        assert prov.loc[~part, "source"].isin(GENERATED_OR_TEXT).all(), key
        files = prov.loc[part, "original"]
        assert len(files) > 0, key  # real material is drawn, not only generated
        assert all(oracle_reserved(below_usr_share(o, root)) for o in files), key
        speech = prov[prov["source"] == "espeak-ng+topo-corpus"]["original"]
        assert speech.str.startswith("corpus/train/").all()


def test_training_pools_hold_only_reserved_originals(tree):
    root, _ = tree
    names = ["train-visual"] + (["train-auditory"] if ESPEAK else [])
    for name in names:
        pairs = _pool_originals(name, root)
        files = [o for s, o in pairs if is_partitioned(s)]
        assert files and all(oracle_reserved(below_usr_share(o, root)) for o in files)
        assert {s for s, _ in pairs if not is_partitioned(s)} <= set(GENERATED_OR_TEXT)


def test_training_and_localizer_files_share_no_bytes(builds):
    train, loc = {}, {}
    for key, folder in builds.items():
        (train if key[0] in TRAIN_SETS else loc).update(stimulus_hashes(folder))
    assert len(train) >= 2 * N_TRAIN and len(loc) > 40
    shared = sorted(set(train) & set(loc))
    assert not shared, [(train[h], loc[h]) for h in shared[:5]]


def test_the_hash_check_catches_a_planted_copy(builds, tmp_path):
    loc = builds["categories-visual", 0, 1]
    planted = tmp_path / "train" / "images"
    planted.mkdir(parents=True)
    shutil.copy(next(loc.glob("animals/*.png")), planted / "images_999.png")
    assert set(stimulus_hashes(tmp_path / "train")) & set(stimulus_hashes(loc))


@pytest.mark.parametrize("name", TRAIN_SETS)
def test_training_builds_are_deterministic(name, builds):
    if (name, "a") not in builds:
        pytest.skip("needs espeak-ng: apt-get install -y espeak-ng")
    a, b, c = (builds[name, t] for t in "abc")
    assert tree_bytes(a) == tree_bytes(b)
    assert set(stimulus_hashes(a)) != set(stimulus_hashes(c))  # the seed matters
    files = sorted(a.glob("*/*.png" if name == "train-visual" else "*/*.wav"))
    assert len(files) == N_TRAIN


def test_training_sets_are_one_condition_with_a_large_default():
    assert SETS["train-visual"].condition_names == ["images"]
    assert SETS["train-auditory"].condition_names == ["sounds"]
    assert SETS["train-visual"].default_per_condition >= 400
    assert SETS["train-auditory"].default_per_condition >= 300
    assert {s.split for s in SETS.values()} == {"localizer", "train"}
    assert [n for n, s in SETS.items() if s.split == "train"] == list(TRAIN_SETS)


# ---------------------------------------------------------------------- generated material
def test_generated_tones_keep_a_quarter_octave_from_the_tonotopy_tones():
    from scipy.signal import find_peaks

    avoid = tonotopy_frequencies()
    assert avoid == [200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0]
    for seed in range(40):
        x, _ = generated.tone_complex(np.random.default_rng(seed), avoid)
        mag = np.abs(np.fft.rfft(x * np.hanning(x.size)))
        freqs = np.fft.rfftfreq(x.size, 1.0 / 16000)
        peaks, _ = find_peaks(mag, height=0.05 * mag.max())
        assert peaks.size > 0
        for f in freqs[peaks]:
            octaves = min(abs(np.log2(f / a)) for a in avoid)
            assert octaves > 0.24, (seed, f)
    assert not generated.allowed_frequency(420.0, avoid)
    assert generated.allowed_frequency(566.0, avoid)


@pytest.mark.parametrize("kind", sorted(generated.BACKGROUNDS))
def test_generated_images_are_colour_and_not_uniform(kind):
    for seed in range(5):
        img, how = generated.BACKGROUNDS[kind](np.random.default_rng(seed))
        assert img.shape == (256, 256, 3) and how
        assert img.std() > 5
    # colour: across seeds some image has channels that differ
    imgs = [generated.BACKGROUNDS[kind](np.random.default_rng(s))[0] for s in range(5)]
    assert max(float(np.abs(i[..., 0] - i[..., 2]).mean()) for i in imgs) > 5


# ---------------------------------------------------------------------- the cache, the list
def test_build_without_out_goes_to_the_cache_once(tree, tmp_path, monkeypatch):
    from rich.console import Console

    from topocli.workflows.stimuli.run import run_build, set_rows

    monkeypatch.setenv("TOPO_STIMULI_DIR", str(tmp_path / "cache"))
    console = Console(record=True, width=200)
    folder = run_build("train-visual", None, console, per_condition=6, seed=1)
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("train-visual-seed1-n6")
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert run_build("train-visual", None, console, per_condition=6, seed=1) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
    assert str(folder) in console.export_text().replace("\n", "")
    rows = {r["name"]: r for r in set_rows()}
    assert rows["train-visual"]["split"] == "train" and rows["train-visual"]["per_condition"] == 512
    assert rows["voice"]["per_condition"] == 48


# ---------------------------------------------------------------------- the real packages
def _real_or_skip(*names: str) -> None:
    missing = sorted(
        {
            SOURCES[k].package
            for n in names
            for k in SETS[n].required
            if not status(SOURCES[k], "/").present
        }
    )
    if missing:
        pytest.skip(f"needs: apt-get install -y {' '.join(missing)}")


def test_real_pools_are_disjoint(monkeypatch):
    """On this machine's packages: no localizer candidate is reserved, every training
    candidate is (listing only, no build: quick)."""
    monkeypatch.delenv("TOPO_STIMULI_SOURCE_ROOT", raising=False)
    _real_or_skip(*LOCALIZER_SETS, *TRAIN_SETS)
    root = Path("/")
    loc = {
        o.split(" (")[0]
        for n in LOCALIZER_SETS
        for s, o in _pool_originals(n, root)
        if is_partitioned(s)
    }
    train = {o.split(" (")[0] for n in TRAIN_SETS for s, o in _pool_originals(n, root)}
    train_files = {o for o in train if o.startswith("/")}
    assert len(loc) > 1000 and len(train_files) > 1000
    assert not loc & train_files
    assert not [o for o in loc if oracle_reserved(below_usr_share(o, root))]
    assert all(oracle_reserved(below_usr_share(o, root)) for o in train_files)


@pytest.mark.slow
def test_real_training_builds_share_no_bytes_with_localizer_builds(tmp_path, monkeypatch):
    """Real sets, small counts (about a minute on two loaded cores)."""
    monkeypatch.delenv("TOPO_STIMULI_SOURCE_ROOT", raising=False)
    _real_or_skip(*LOCALIZER_SETS, *TRAIN_SETS)
    loc: dict[str, str] = {}
    for name in (*LOCALIZER_SETS, "retinotopy", "tonotopy"):
        loc.update(stimulus_hashes(build_set(name, tmp_path / name, 4, 0).out))
    train: dict[str, str] = {}
    for name in TRAIN_SETS:
        folder = build_set(name, tmp_path / name, 60, 0).out
        train.update(stimulus_hashes(folder))
        assert not [
            o
            for o in originals(folder)["original"]
            if not oracle_reserved(below_usr_share(o, Path("/")))
        ]
    assert len(train) == 120
    assert not set(train) & set(loc)
