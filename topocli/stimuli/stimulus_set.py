"""Stimulus sets: folders of conditions (or a CSV manifest) of text, images or audio.

A stimulus set is a folder whose sub-folders are conditions. Inside a condition, every ``.txt``
file contributes one stimulus per non-empty line; image files (PNG, JPEG, ...) and audio files
(WAV, FLAC) are one stimulus each. A folder with files but no sub-folders is one condition named
after the folder. A CSV manifest (columns ``condition`` and ``text`` or ``path``, optional
``split``) lists stimuli explicitly; relative paths resolve against the CSV's folder.

Splits are deterministic: within each condition, stimuli are ordered (files by name, lines in
file order) and the i-th stimulus goes to split ``i % 2`` (0 = even, 1 = odd), the
cross-validation halves of the localizer method.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from topocli.errors import TopoInputError

TEXT_SUFFIXES = {".txt"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".flac"}
IGNORED_NAMES = {"README.md", "README.txt", "README", ".DS_Store", "LICENSE"}
MODALITIES = ("text", "image", "audio")


def modality_of(path: Path) -> str:
    """Modality of one stimulus file from its suffix; unsupported types are an input error."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    raise TopoInputError(
        f"unsupported file type {suffix or '(none)'!r}; use .txt, images "
        f"({', '.join(sorted(IMAGE_SUFFIXES))}) or audio (.wav, .flac)",
        path,
    )


@dataclass(frozen=True)
class Stimulus:
    """One stimulus: its condition, split, and either its text or its file."""

    condition: str
    split: int
    modality: str
    text: str | None = None
    path: Path | None = None
    line: int | None = None

    @property
    def id(self) -> str:
        where = self.path.name if self.path is not None else "manifest"
        return f"{self.condition}/{where}" + (f":{self.line}" if self.line is not None else "")

    @property
    def label(self) -> str:
        """A short human-readable label (text snippet or file name) for reports."""
        if self.text is not None:
            return self.text if len(self.text) <= 80 else self.text[:77] + "..."
        return self.path.name if self.path is not None else self.id

    def content_bytes(self) -> bytes:
        if self.text is not None:
            return self.text.encode("utf-8")
        assert self.path is not None
        return self.path.read_bytes()


@dataclass
class StimulusSet:
    """An ordered list of stimuli grouped into conditions with even/odd splits."""

    root: Path
    stimuli: list[Stimulus]
    conditions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.conditions:
            self.conditions = sorted({s.condition for s in self.stimuli})

    def __len__(self) -> int:
        return len(self.stimuli)

    def __iter__(self) -> Iterator[Stimulus]:
        return iter(self.stimuli)

    @property
    def modality(self) -> str:
        mods = {s.modality for s in self.stimuli}
        if len(mods) != 1:
            raise TopoInputError(f"mixes modalities {sorted(mods)}; use one per set", self.root)
        return mods.pop()

    @property
    def modalities(self) -> set[str]:
        return {s.modality for s in self.stimuli}

    def condition_index(self) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(self.conditions)}
        return np.array([lookup[s.condition] for s in self.stimuli], dtype=np.int64)

    def split_index(self) -> np.ndarray:
        return np.array([s.split for s in self.stimuli], dtype=np.int64)

    def group_index(self) -> np.ndarray:
        """Group id ``2 * condition + split`` used by the sufficient statistics."""
        return 2 * self.condition_index() + self.split_index()

    @property
    def n_groups(self) -> int:
        return 2 * len(self.conditions)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.conditions, 0)
        for s in self.stimuli:
            out[s.condition] += 1
        return out

    def require_min_per_split(self, minimum: int = 2) -> None:
        """Every condition needs ``minimum`` stimuli in each split for a variance."""
        for cond in self.conditions:
            for split in (0, 1):
                n = sum(1 for s in self.stimuli if s.condition == cond and s.split == split)
                if n < minimum:
                    raise TopoInputError(
                        f"condition {cond!r} has {n} stimuli in the "
                        f"{'even' if split == 0 else 'odd'} split; need at least {minimum}",
                        self.root,
                    )

    def subset(self, conditions: Sequence[str]) -> StimulusSet:
        missing = [c for c in conditions if c not in self.conditions]
        if missing:
            raise TopoInputError(
                f"unknown condition(s) {missing}; this set has {self.conditions}", self.root
            )
        keep = set(conditions)
        return StimulusSet(
            self.root, [s for s in self.stimuli if s.condition in keep], list(conditions)
        )

    def content_hash(self) -> str:
        """sha256 over every stimulus's condition, split and bytes, in order."""
        h = hashlib.sha256()
        for s in self.stimuli:
            h.update(f"{s.condition}\0{s.split}\0{s.modality}\0".encode())
            data = s.content_bytes()
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        return h.hexdigest()


def _read_text_lines(path: Path) -> list[str]:
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TopoInputError(f"not UTF-8 text (byte {exc.start})", path) from exc
    return [line.strip() for line in raw.splitlines()]


def _condition_stimuli(condition: str, folder: Path) -> list[Stimulus]:
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name not in IGNORED_NAMES and not p.name.startswith(".")
    )
    stimuli: list[Stimulus] = []
    for path in files:
        modality = modality_of(path)
        if modality == "text":
            for lineno, line in enumerate(_read_text_lines(path), start=1):
                if line:
                    stimuli.append(
                        Stimulus(condition, 0, "text", text=line, path=path, line=lineno)
                    )
        else:
            stimuli.append(Stimulus(condition, 0, modality, path=path))
    return stimuli


def _assign_splits(stimuli: list[Stimulus]) -> list[Stimulus]:
    seen: dict[str, int] = {}
    out = []
    for s in stimuli:
        i = seen.get(s.condition, 0)
        seen[s.condition] = i + 1
        out.append(Stimulus(s.condition, i % 2, s.modality, s.text, s.path, s.line))
    return out


def load_stimulus_set(source: str | Path, conditions: Sequence[str] | None = None) -> StimulusSet:
    """Read a stimulus folder or CSV manifest.

    Parameters
    ----------
    source : path
        A folder of condition sub-folders, a single condition folder, or a ``.csv`` manifest.
    conditions : sequence of str, optional
        Keep only these conditions (in this order).
    """
    root = Path(source)
    if not root.exists():
        raise TopoInputError("stimulus folder not found", root)
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise TopoInputError("expected a stimulus folder or a .csv manifest", root)
        stim_set = _load_manifest(root)
    else:
        subdirs = sorted(
            p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
        )
        stimuli: list[Stimulus] = []
        if subdirs:
            for sub in subdirs:
                found = _condition_stimuli(sub.name, sub)
                if not found:
                    raise TopoInputError(f"condition {sub.name!r} has no stimuli", sub)
                stimuli.extend(found)
        else:
            stimuli = _condition_stimuli(root.name, root)
        if not stimuli:
            raise TopoInputError("stimulus folder is empty", root)
        stim_set = StimulusSet(
            root, _assign_splits(stimuli), [s.name for s in subdirs] or [root.name]
        )
    stim_set.modality  # noqa: B018  (raises on mixed modalities)
    if conditions is not None:
        stim_set = stim_set.subset(conditions)
    return stim_set


def _load_manifest(path: Path) -> StimulusSet:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError as exc:
        raise TopoInputError("manifest is not UTF-8 text", path) from exc
    if not rows:
        raise TopoInputError("manifest has no rows", path)
    cols = set(rows[0])
    if "condition" not in cols or not ({"text", "path"} & cols):
        raise TopoInputError("manifest needs columns 'condition' and 'text' or 'path'", path)
    stimuli = []
    explicit_split = "split" in cols
    for i, row in enumerate(rows, start=2):
        cond = (row.get("condition") or "").strip()
        if not cond:
            raise TopoInputError(f"row {i} has no condition", path)
        text = (row.get("text") or "").strip()
        if text:
            stim = Stimulus(cond, 0, "text", text=text, line=i)
        else:
            rel = (row.get("path") or "").strip()
            if not rel:
                raise TopoInputError(f"row {i} has neither text nor path", path)
            file = (path.parent / rel).resolve()
            if not file.is_file():
                raise TopoInputError(f"row {i}: stimulus file not found: {rel}", path)
            stim = Stimulus(cond, 0, modality_of(file), path=file)
        if explicit_split:
            split = _parse_split(row.get("split"), i, path)
            stim = Stimulus(cond, split, stim.modality, stim.text, stim.path, stim.line)
        stimuli.append(stim)
    if not explicit_split:
        stimuli = _assign_splits(stimuli)
    order = list(dict.fromkeys(s.condition for s in stimuli))
    return StimulusSet(path, stimuli, order)


def _parse_split(value: str | None, row: int, path: Path) -> int:
    v = (value or "").strip().lower()
    if v in {"0", "even"}:
        return 0
    if v in {"1", "odd"}:
        return 1
    raise TopoInputError(f"row {row}: split must be 0/1 or even/odd, got {value!r}", path)


# ---------------------------------------------------------------------- decoding
def load_image(path: Path):
    """Open an image as RGB with PIL; a corrupt file is an input error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise TopoInputError(f"cannot read image ({exc.__class__.__name__})", path) from exc


def load_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Read a mono float32 waveform at ``sample_rate`` (resampled with scipy when needed)."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise TopoInputError(f"cannot read audio ({exc})", path) from exc
    wave = data.mean(axis=1)
    if wave.size == 0:
        raise TopoInputError("audio file has no samples", path)
    if rate != sample_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(rate), int(sample_rate))
        wave = resample_poly(wave, sample_rate // g, rate // g).astype(np.float32)
    return wave


def load_condition_folders(
    folders: dict[str, str | Path], root: str | Path | None = None
) -> StimulusSet:
    """Build one stimulus set from a folder per condition (e.g. a localizer's definition).

    Each folder's files are read as one condition named by the mapping's key, so a localizer
    can reuse another localizer's stimuli without copying them.
    """
    stimuli: list[Stimulus] = []
    for condition, folder in folders.items():
        folder = Path(folder)
        if not folder.is_dir():
            raise TopoInputError(f"stimulus folder for condition {condition!r} not found", folder)
        found = _condition_stimuli(condition, folder)
        if not found:
            raise TopoInputError(f"condition {condition!r} has no stimuli", folder)
        stimuli.extend(found)
    base = Path(root) if root is not None else Path(next(iter(folders.values()))).parent
    stim_set = StimulusSet(base, _assign_splits(stimuli), list(folders))
    stim_set.modality  # noqa: B018  (raises on mixed modalities)
    return stim_set
