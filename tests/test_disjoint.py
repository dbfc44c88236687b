"""Training text and localizer stimuli stay disjoint (issue 17).

A model trained on the sentences that later localize it would find its "language units" by
memory, not by language: every line of ``corpus/train`` must be absent from every localizer
stimulus file and category set under ``localizers/``, even after case, punctuation and spacing
are normalised.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "corpus" / "train"
LOCALIZERS = ROOT / "localizers"
# stimulus files are text lines or manifest rows; TOML definitions and READMEs are not stimuli
STIMULUS_SUFFIXES = {".txt", ".csv", ".tsv"}


def where(path: Path) -> str:
    """The path relative to the repository when inside it (the planted test's is not)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def normalise(line: str) -> str:
    """Lower case, letters and digits only, single spaces: near-verbatim copies match too."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", line.lower()).split())


def corpus_lines(folder: Path) -> dict[str, str]:
    """Normalised line -> ``file:line`` for every non-empty line of the ``.txt`` files."""
    lines: dict[str, str] = {}
    for path in sorted(folder.rglob("*.txt")):
        for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            key = normalise(raw)
            if key:
                lines.setdefault(key, f"{where(path)}:{i}")
    return lines


def stimulus_files(folder: Path) -> list[Path]:
    """Every stimulus text file of the localizers and category sets (READMEs excluded)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in STIMULUS_SUFFIXES
        and not p.name.lower().startswith("readme")
    )


def overlaps(train: dict[str, str], files: list[Path]) -> list[str]:
    """``train location == stimulus location`` for each training line found in a stimulus."""
    found = []
    for path in files:
        for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            # a CSV row may carry the sentence beside other columns: test each field as well
            for field in {raw, *re.split(r"[,\t]", raw)}:
                key = normalise(field)
                if key in train:
                    found.append(f"{train[key]} == {where(path)}:{i}")
    return found


def test_the_checked_sets_are_there():
    """The check must see real files, or an empty glob would pass it vacuously."""
    files = {p.parent.name for p in stimulus_files(LOCALIZERS)}
    assert {"sentences", "nonwords", "word_lists", "jabberwocky", "animals"} <= files
    assert len(corpus_lines(TRAIN)) > 1000


def test_training_text_is_disjoint_from_localizer_stimuli():
    found = overlaps(corpus_lines(TRAIN), stimulus_files(LOCALIZERS))
    assert not found, "training lines inside localizer stimuli:\n" + "\n".join(found[:20])


def test_the_check_catches_a_planted_copy(tmp_path):
    """A localizer line copied into training text, re-cased and re-punctuated, is caught."""
    sentence = next(
        line
        for line in (LOCALIZERS / "language" / "sentences" / "sentences.txt")
        .read_text(encoding="utf-8")
        .splitlines()
        if line.strip()
    )
    train = tmp_path / "train"
    train.mkdir()
    (train / "leak.txt").write_text(
        "A line of its own that no localizer has.\n" + sentence.upper().rstrip(".") + " !\n",
        encoding="utf-8",
    )
    found = overlaps(corpus_lines(train), stimulus_files(LOCALIZERS))
    assert len(found) >= 1
    assert all(f.startswith(f"{where(train / 'leak.txt')}:2 == ") for f in found)


@pytest.mark.parametrize("text", ["Hello, World!", "  hello   world  ", "HELLO-world"])
def test_normalise_ignores_case_punctuation_and_spacing(text):
    assert normalise(text) == "hello world"


# ---------------------------------------------------------------------- spoken training text
def spoken_training_lines() -> dict[str, str]:
    """Normalised line -> ``file:line`` of every line the train-auditory set can speak."""
    from topocli.stimuli.builders.sets import _train_speech
    from topocli.stimuli.builders.sources import SOURCES, status

    statuses = {k: status(SOURCES[k]) for k in ("espeak-ng", "topo-corpus")}
    lines: dict[str, str] = {}
    for cand in _train_speech(statuses, 2.0):
        ref = cand.original.split(" (")[0]  # corpus/train/<file> line <i> (<voice>)
        rel, _, number = ref.rpartition(" line ")
        text = (ROOT / rel).read_text(encoding="utf-8").splitlines()[int(number) - 1]
        lines.setdefault(normalise(text), f"{rel}:{number}")
    return lines


def test_spoken_training_audio_reads_only_training_text():
    """train-auditory's espeak-ng speech is corpus/train, line for line, and none of it is
    localizer text (the voice and emfl-auditory sets speak the localizer text instead)."""
    spoken = spoken_training_lines()
    assert spoken.keys() == corpus_lines(TRAIN).keys()
    found = overlaps(spoken, stimulus_files(LOCALIZERS))
    assert not found, "spoken training lines inside localizer stimuli:\n" + "\n".join(found[:20])
