"""Tests of the localizer library: shipped definitions, shipped text stimuli, loader, generators."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from topocli.errors import TopoInputError
from topocli.stimuli.localizers import (
    baseline_pool,
    generate_retinotopy,
    generate_tonotopy,
    library_root,
    list_localizers,
    load_localizer,
    shipped_category_sets,
)

EXPECTED = {
    "language",
    "tom",
    "md",
    "emfl_text",
    "emfl_visual",
    "emfl_auditory",
    "voice",
    "retinotopy",
    "tonotopy",
}
CATEGORIES = {
    "animals",
    "landscapes",
    "faces_people",
    "bodies",
    "places_buildings",
    "tools",
    "food",
    "vehicles",
    "music",
    "numbers_quantities",
    "emotions",
    "weather",
}
FUNCTION_WORDS = set(
    """a an the this that these those my your his her its our their me him us them i you he she it
    we they who whom whose which what where when why how to of in on at by for from with without
    about above below under over into onto through during before after until since while because
    so and or but nor not no as than then there here all every each some any many much more most
    several few both either neither is are was were be been being am have has had do does did will
    would can could shall should may might must up down out off away again just very too also even
    only almost always never nobody everyone someone anyone nothing something everything own same
    such other another around along beside behind near inside between""".split()
)
ROOT = library_root()


def _lines(folder: Path) -> list[str]:
    """Non-empty lines of every .txt file in a folder (strict UTF-8)."""
    out = []
    for path in sorted(folder.glob("*.txt")):
        text = path.read_bytes().decode("utf-8")
        out.extend(line for line in text.splitlines() if line.strip())
    return out


def _tokens(line: str) -> list[str]:
    return [t for t in re.findall(r"[a-zA-Z\u00c0-\u024f']+", line.lower())]


def _stimulus_sets() -> dict[str, dict[str, Path]]:
    """Every shipped text stimulus set: set name -> condition -> folder."""
    sets = {}
    for name in ("language", "tom", "md"):
        sets[name] = load_localizer(name).stimulus_folders()
    cats = {p.name: p for p in shipped_category_sets().iterdir() if p.is_dir()}
    cats["baseline"] = baseline_pool()
    sets["categories"] = cats
    return sets


# --------------------------------------------------------------------------- definitions


def test_shipped_names_listed():
    assert EXPECTED <= set(list_localizers())
    assert (ROOT / "__init__.py").is_file()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_definition_loads_and_validates(name):
    loc = load_localizer(name)
    assert loc.name == name
    assert loc.modality in ("text", "image", "audio")
    assert loc.source and all(s.strip() for s in loc.source)
    assert loc.default_contrast in loc.contrasts
    assert 0 < loc.thresholds.q < 1
    assert loc.thresholds.alternative in ("greater", "less", "two-sided")
    for contrast in loc.contrasts.values():
        assert set(contrast.weights) <= set(loc.conditions)
        assert abs(sum(contrast.weights.values())) < 1e-12
    if loc.stimuli == "user":
        with pytest.raises(TopoInputError, match="--stimuli"):
            loc.stimulus_folders()
    elif loc.stimuli == "generated":
        assert loc.analysis == "parametric" and loc.generator is not None
    elif loc.built_set is not None:  # built on first use by `topo stimuli` (tested there)
        from topocli.stimuli.builders.sets import SETS

        built = SETS[loc.built_set]
        assert built.modality == loc.modality
        assert set(loc.conditions) <= set(built.condition_names)
    else:
        folders = loc.stimulus_folders()
        assert list(folders) == list(loc.conditions)
        assert all(f.is_dir() and _lines(f) for f in folders.values())


def test_loading_by_path_equals_loading_by_name():
    assert load_localizer(ROOT / "md.toml") == load_localizer("md")


def test_emfl_contrasts_match_reference_definitions():
    text = load_localizer("emfl_text")
    assert text.weights("md") == {"math": 1.0, "false_belief": -0.5, "false_photo": -0.5}
    assert text.weights("language") == {"false_belief": 0.5, "false_photo": 0.5, "nonwords": -1.0}
    assert text.weights("tom") == {"false_belief": 1.0, "false_photo": -1.0}
    visual = load_localizer("emfl_visual")
    assert visual.weights("words") == {"words_scr_objects": 1.0, "objects": -1.0}
    assert visual.contrasts["faces"].parcels == ("ffa", "ofa", "sts")
    assert load_localizer("emfl_auditory").weights("speech") == {
        "nonwords": 1.0,
        "quilted_speech": -1.0,
    }


def test_md_and_emfl_text_reuse_other_folders():
    md = load_localizer("md").stimulus_folders()
    tom = load_localizer("tom").stimulus_folders()
    assert md["false_belief"] == tom["false_belief"]
    emfl = load_localizer("emfl_text").stimulus_folders()
    assert emfl["nonwords"] == load_localizer("language").stimulus_folders()["nonwords"]
    assert emfl["math"] == md["math"]


def test_ad_hoc_contrast_expression():
    loc = load_localizer("language")
    assert loc.weights("sentences > nonwords") == {"sentences": 1.0, "nonwords": -1.0}
    with pytest.raises(TopoInputError, match="known conditions: sentences, word_lists"):
        loc.weights("sentences - pictures")


# --------------------------------------------------------------------------- bad input


def _write_toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(body, encoding="utf-8")
    return path


GOOD = """
name = "mine"
description = "test"
modality = "text"
stimuli = "stim"
conditions = ["alpha", "beta"]
source = ["nobody 2024"]
[contrasts]
main = "{expr}"
"""


def test_unknown_localizer_name_lists_known():
    with pytest.raises(TopoInputError, match=r"unknown localizer 'nope'; known: .*language"):
        load_localizer("nope")


def test_missing_definition_file(tmp_path):
    with pytest.raises(TopoInputError, match="not found"):
        load_localizer(tmp_path / "absent.toml")


def test_user_toml_with_bad_contrast_lists_conditions(tmp_path):
    path = _write_toml(tmp_path, GOOD.format(expr="alpha - gamma"))
    with pytest.raises(TopoInputError, match="unknown condition.*gamma.*known conditions: alpha"):
        load_localizer(path)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("alpha - 0.5*beta", "sum to zero"),
        ("alpha + beta", "positive and negative"),
        ("alpha -", "expected a condition name"),
    ],
)
def test_user_toml_invalid_weights(tmp_path, expr, message):
    with pytest.raises(TopoInputError, match=message):
        load_localizer(_write_toml(tmp_path, GOOD.format(expr=expr)))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('colour = "red"\n', "unknown key.*colour"),
        ("[thresholds]\nq = 1.5\n", r"q must be in \(0, 1\)"),
        ('[thresholds]\nalternative = "bigger"\n', "alternative"),
        ("[thresholds]\nmin_cluster = 0\n", "min_cluster"),
        ("[thresholds]\nsmooth = 3\n", "unknown key.*smooth"),
        ('[folders]\ngamma = "x"\n', "unknown condition"),
        ('default_contrast = "other"\n', "default_contrast"),
    ],
)
def test_user_toml_other_errors(tmp_path, extra, message):
    body = GOOD.format(expr="alpha - beta")
    if extra.startswith("["):
        body += extra
    else:
        body = extra + body
    with pytest.raises(TopoInputError, match=message):
        load_localizer(_write_toml(tmp_path, body))


def test_user_toml_missing_key_and_bad_toml(tmp_path):
    with pytest.raises(TopoInputError, match="missing required key.*source"):
        load_localizer(
            _write_toml(tmp_path, GOOD.format(expr="alpha - beta").replace("source", "#"))
        )
    with pytest.raises(TopoInputError, match="not valid TOML"):
        load_localizer(_write_toml(tmp_path, "name = "))


def test_user_toml_relative_folders(tmp_path):
    path = _write_toml(tmp_path, GOOD.format(expr="alpha - beta"))
    loc = load_localizer(path)
    with pytest.raises(TopoInputError, match="condition 'alpha' not found"):
        loc.stimulus_folders()
    for cond in ("alpha", "beta"):
        (tmp_path / "stim" / cond).mkdir(parents=True)
        (tmp_path / "stim" / cond / "lines.txt").write_text("one\ntwo\n", encoding="utf-8")
    folders = loc.stimulus_folders()
    assert folders == {c: (tmp_path / "stim" / c).resolve() for c in ("alpha", "beta")}


def test_user_stimulus_root(tmp_path):
    loc = load_localizer("voice")
    (tmp_path / "vocal").mkdir()
    (tmp_path / "vocal" / "a.wav").write_bytes(b"")
    with pytest.raises(
        TopoInputError, match=r"missing condition folder\(s\) non_vocal .*; found: vocal"
    ):
        loc.stimulus_folders(tmp_path)
    (tmp_path / "non_vocal").mkdir()
    with pytest.raises(TopoInputError, match="no audio stimuli"):
        loc.stimulus_folders(tmp_path)
    (tmp_path / "non_vocal" / "b.flac").write_bytes(b"")
    assert loc.stimulus_folders(tmp_path)["non_vocal"] == tmp_path / "non_vocal"


def test_baseline_pools_by_modality():
    assert baseline_pool().is_dir()
    with pytest.raises(TopoInputError, match="no baseline pool for modality 'video'"):
        baseline_pool("video")


# --------------------------------------------------------------------------- shipped stimuli


def test_stimulus_counts():
    sets = _stimulus_sets()
    for cond, folder in sets["language"].items():
        assert len(_lines(folder)) >= 80, cond
    for name in ("tom", "md"):
        for cond, folder in sets[name].items():
            assert len(_lines(folder)) >= 40, (name, cond)
    cats = sets["categories"]
    assert CATEGORIES | {"baseline"} <= set(cats)
    for cond in CATEGORIES:
        assert len(_lines(cats[cond])) >= 40, cond
    assert len(_lines(cats["baseline"])) >= 120


def test_every_text_file_is_clean_utf8():
    files = sorted(ROOT.rglob("*.txt"))
    assert len(files) >= 20
    for path in files:
        text = path.read_bytes().decode("utf-8")
        assert "\r" not in text and "\t" not in text, path
        assert text.endswith("\n") and not text.endswith("\n\n"), path
        for line in text.splitlines():
            assert line.strip() and line == line.strip(), (path, line)


def test_lines_unique_within_and_across_conditions():
    for set_name, folders in _stimulus_sets().items():
        assert len(set(folders.values())) == len(folders), set_name
        seen: dict[str, str] = {}
        for cond, folder in folders.items():
            for line in _lines(folder):
                key = " ".join(line.lower().split())
                assert key not in seen, (set_name, cond, line, seen.get(key))
                seen[key] = cond


def test_language_conditions_matched_in_length():
    folders = load_localizer("language").stimulus_folders()
    means = {}
    for cond, folder in folders.items():
        counts = [len(line.split()) for line in _lines(folder)]
        assert min(counts) >= 8 and max(counts) <= 12, cond
        means[cond] = np.mean(counts)
    assert max(means.values()) - min(means.values()) <= 1.0, means


def _sentence_vocabulary() -> set[str]:
    folder = load_localizer("language").stimulus_folders()["sentences"]
    return {t for line in _lines(folder) for t in _tokens(line)}


def test_jabberwocky_keeps_syntax_but_few_real_words():
    vocab = _sentence_vocabulary()
    lines = _lines(load_localizer("language").stimulus_folders()["jabberwocky"])
    content = [t for line in lines for t in _tokens(line) if t not in FUNCTION_WORDS]
    function = [t for line in lines for t in _tokens(line) if t in FUNCTION_WORDS]
    assert len(content) > 300
    overlap = np.mean([t in vocab for t in content])
    assert overlap < 0.3, overlap
    for line in lines:  # and no single line is mostly real content words
        words = [t for t in _tokens(line) if t not in FUNCTION_WORDS]
        assert np.mean([t in vocab for t in words]) <= 0.5, line
    assert len(function) / (len(content) + len(function)) > 0.25  # syntax kept
    assert all(line[0].isupper() and line.endswith(".") for line in lines)


def test_nonwords_hold_no_real_words_and_no_sentence_form():
    vocab = _sentence_vocabulary()
    lines = _lines(load_localizer("language").stimulus_folders()["nonwords"])
    tokens = [t for line in lines for t in _tokens(line)]
    assert not set(tokens) & FUNCTION_WORDS
    assert np.mean([t in vocab for t in tokens]) < 0.05
    for line in lines:
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", line), line


def test_word_lists_are_real_words_in_no_sentence_order():
    folders = load_localizer("language").stimulus_folders()
    vocab = _sentence_vocabulary()
    sentences = [_tokens(line) for line in _lines(folders["sentences"])]
    grams = {tuple(s[i : i + 3]) for s in sentences for i in range(len(s) - 2)}
    lines = _lines(folders["word_lists"])
    tokens = [t for line in lines for t in _tokens(line)]
    assert np.mean([t in vocab for t in tokens]) > 0.9
    for line in lines:
        toks = _tokens(line)
        assert not line.endswith(".") and not line[0].isupper(), line
        assert not any(tuple(toks[i : i + 3]) in grams for i in range(len(toks) - 2)), line


def test_tom_stories_probe_beliefs_and_representations():
    folders = load_localizer("tom").stimulus_folders()
    mind = re.compile(r"\b(believes|thinks|expects|will look|knows)\b")
    for cond, folder in folders.items():
        for story in _lines(folder):
            sentences = [s for s in re.split(r"(?<=[.?!])\s+", story) if s]
            assert 2 <= len(sentences) <= 4, story
            assert bool(mind.search(sentences[-1])) == (cond == "false_belief"), story


_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
_UNITS += " fifteen sixteen seventeen eighteen nineteen"
_SMALL = {w: i for i, w in enumerate(_UNITS.split())}
_TENS = {
    w: 10 * i
    for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split())
    if i > 1
}


def _number(words: str) -> int:
    total = 0
    for part in words.replace(" and ", " ").split():
        if part == "hundred":
            total *= 100
        else:
            total += sum(_SMALL.get(p, _TENS.get(p, -(10**9))) for p in part.split("-"))
    return total


def test_math_statements_are_correct():
    lines = _lines(load_localizer("md").stimulus_folders()["math"])
    ops = {"plus": np.add, "minus": np.subtract, "times": np.multiply, "divided by": np.divide}
    pattern = re.compile(r"^(.+?) (plus|minus|times|divided by) (.+?) equals (.+)\.$")
    checked = 0
    for line in lines:
        m = pattern.match(line.lower())
        if m:
            a, op, b, c = m.groups()
            assert ops[op](_number(a), _number(b)) == _number(c), line
            checked += 1
    products = re.compile(r"(\d+) \w+; (\w+) \w+ (?:hold|carry|weigh) (\d+)")
    for line in lines:
        m = products.search(line)
        if m:
            assert int(m.group(1)) * _number(m.group(2)) == int(m.group(3)), line
            checked += 1
    assert checked >= 40


def test_number_parser_used_by_math_test():
    assert _number("one hundred and twelve") == 112
    assert _number("seventy-six") == 76
    assert _number("forty") == 40


# --------------------------------------------------------------------------- generators


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_retinotopy_deterministic_counts_and_position(tmp_path):
    positions = {"left": (0.2, 0.5), "upper_right": (0.8, 0.2)}
    out = generate_retinotopy(tmp_path / "a", positions, n_per_position=3, size_px=32, seed=5)
    generate_retinotopy(tmp_path / "b", positions, n_per_position=3, size_px=32, seed=5)
    generate_retinotopy(tmp_path / "c", positions, n_per_position=3, size_px=32, seed=6)
    a, b, c = (_tree_bytes(tmp_path / k) for k in "abc")
    assert a == b and a != c
    assert list(out) == ["left", "upper_right"]
    assert all(len(list(folder.glob("*.png"))) == 3 for folder in out.values())
    assert not list((tmp_path / "a").rglob("*.tmp"))
    from PIL import Image

    for name, (x, y) in positions.items():
        img = np.asarray(Image.open(sorted(out[name].glob("*.png"))[0]))
        assert img.shape == (32, 32, 3)
        energy = np.abs(img[:, :, 0].astype(float) - 127.5)
        rows, cols = np.indices(energy.shape)
        cx = (energy * (cols + 0.5)).sum() / energy.sum() / 32
        cy = (energy * (rows + 0.5)).sum() / energy.sum() / 32
        assert abs(cx - x) < 0.05 and abs(cy - y) < 0.05, (name, cx, cy)


def test_tonotopy_deterministic_counts_and_frequency(tmp_path):
    import soundfile as sf

    freqs = [250, 1000, 3000]
    out = generate_tonotopy(tmp_path / "a", freqs, n_per_frequency=2, duration_s=0.25, seed=1)
    generate_tonotopy(tmp_path / "b", freqs, n_per_frequency=2, duration_s=0.25, seed=1)
    generate_tonotopy(tmp_path / "c", freqs, n_per_frequency=2, duration_s=0.25, seed=2)
    a, b, c = (_tree_bytes(tmp_path / k) for k in "abc")
    assert a == b and a != c
    assert list(out) == ["tone_250hz", "tone_1000hz", "tone_3000hz"]
    waves = []
    for name, folder in out.items():
        files = sorted(folder.glob("*.wav"))
        assert len(files) == 2
        for path in files:
            wave, sr = sf.read(path)
            assert sr == 16000 and wave.ndim == 1 and len(wave) == 4000
            spectrum = np.abs(np.fft.rfft(wave))
            peak = np.fft.rfftfreq(len(wave), 1 / sr)[np.argmax(spectrum)]
            assert peak == pytest.approx(float(re.search(r"(\d+)hz", name).group(1)), abs=4)
            waves.append(wave)
    assert not np.allclose(waves[0], waves[1])  # seeded jitter differs between tones


def test_generators_reject_bad_arguments(tmp_path):
    with pytest.raises(TopoInputError):
        generate_tonotopy(tmp_path, [9000], sample_rate=16000)
    with pytest.raises(TopoInputError):
        generate_retinotopy(tmp_path, {"far": (1.5, 0.5)})


def test_shipped_generated_localizers_generate(tmp_path):
    tono = load_localizer("tonotopy")
    folders = tono.generate(tmp_path / "tono")
    assert list(folders) == list(tono.conditions)
    assert tono.stimulus_folders(tmp_path / "tono") == folders
    assert tono.values["tone_800hz"] == (800.0,)
    body = (ROOT / "retinotopy.toml").read_text(encoding="utf-8")
    body = body.replace("n_per_position = 24", "n_per_position = 2").replace("224", "24")
    retino = load_localizer(_write_toml(tmp_path, body))
    folders = retino.generate(tmp_path / "retino")
    assert list(folders) == list(retino.conditions)
    assert sum(len(list(f.glob("*.png"))) for f in folders.values()) == 18
    with pytest.raises(TopoInputError, match="generated"):
        retino.stimulus_folders()
