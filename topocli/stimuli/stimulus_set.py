"""Stimulus sets: folders of conditions (or a CSV manifest) of text, images or audio.

A stimulus set is a folder whose sub-folders are conditions. Inside a condition, every ``.txt``
file contributes one stimulus per non-empty line; image files (PNG, JPEG, ...) and audio files
(WAV, FLAC) are one stimulus each. A folder with files but no sub-folders is one condition named
after the folder. A CSV manifest (columns ``condition`` and ``text`` or ``path``, optional
``split``) lists stimuli explicitly; relative paths resolve against the CSV's folder, and a path
that ends up outside that folder (``../x.png``, an absolute path, a symlink out) is refused
unless the caller allows it (``--allow-outside``). A ``path`` to a ``.txt`` file gives one
stimulus per non-empty line, in file order, like a folder's ``.txt`` files. The same condition
with the same text or file on two rows is refused.

Splits are deterministic: within each condition, stimuli are ordered (files by name, lines in
file order) and the i-th stimulus goes to split ``i % 2`` (0 = even, 1 = odd), the
cross-validation halves of the localizer method.
"""

from __future__ import annotations

import csv
import hashlib
import struct
import warnings
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
# what a decoder raises on a corrupt or truncated file (besides its own error class)
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)


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

    def referenced_files(self) -> list[Path]:
        """Every file the stimuli are read from (images, audio, ``.txt``), once each, in order.

        A manifest's text rows read no file; the manifest itself is not listed (see
        :meth:`input_paths`).
        """
        return list(dict.fromkeys(s.path for s in self.stimuli if s.path is not None))

    def input_paths(self) -> list[Path]:
        """What a results manifest should hash for these stimuli.

        A CSV manifest: the CSV, then every file it references (an edited image changes the
        record, not only an edited CSV). A folder set: its condition folders (each hashed as a
        tree), or the root when no stimulus names a file.
        """
        root = Path(self.root)
        if root.is_file():
            return [root, *self.referenced_files()]
        parents = [s.path.parent for s in self.stimuli if s.path is not None]
        return list(dict.fromkeys(parents)) or [root]


def _read_text_lines(path: Path) -> list[str]:
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TopoInputError(f"not UTF-8 text (byte {exc.start})", path) from None
    except OSError as exc:
        raise TopoInputError(f"cannot read text file ({exc.strerror or exc})", path) from None
    return [line.strip() for line in raw.splitlines()]


def _text_file_stimuli(condition: str, path: Path) -> list[Stimulus]:
    """One stimulus per non-empty line of a ``.txt`` file; a file without any is an error."""
    stimuli = [
        Stimulus(condition, 0, "text", text=line, path=path, line=lineno)
        for lineno, line in enumerate(_read_text_lines(path), start=1)
        if line
    ]
    if not stimuli:
        # (worded without "empty" / "no stimuli": callers map those to a whole-set error)
        raise TopoInputError("text file has no text (every line is blank)", path)
    return stimuli


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
            stimuli.extend(_text_file_stimuli(condition, path))
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


def load_stimulus_set(
    source: str | Path,
    conditions: Sequence[str] | None = None,
    allow_outside: bool = False,
) -> StimulusSet:
    """Read a stimulus folder or CSV manifest.

    Parameters
    ----------
    source : path
        A folder of condition sub-folders, a single condition folder, or a ``.csv`` manifest.
    conditions : sequence of str, optional
        Keep only these conditions (in this order).
    allow_outside : bool
        Let a manifest's ``path`` column name files outside the manifest's folder (after
        resolving ``..`` and symlinks); ``--allow-outside`` on the command line. Refused
        otherwise.
    """
    root = Path(source)
    if not root.exists():
        raise TopoInputError("stimulus folder not found", root)
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise TopoInputError("expected a stimulus folder or a .csv manifest", root)
        stim_set = _load_manifest(root, allow_outside)
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


def _load_manifest(path: Path, allow_outside: bool = False) -> StimulusSet:
    rows = _read_manifest_rows(path)
    if not rows:
        raise TopoInputError("manifest has no rows", path)
    cols = set(rows[0][1])
    if "condition" not in cols or not ({"text", "path"} & cols):
        raise TopoInputError("manifest needs columns 'condition' and 'text' or 'path'", path)
    folder = path.parent.resolve()
    explicit_split = "split" in cols
    stimuli: list[Stimulus] = []
    first_row: dict[tuple[str, str, str], int] = {}
    for i, row in rows:
        cond = (row.get("condition") or "").strip()
        if not cond:
            raise TopoInputError(f"row {i} has no condition", path)
        text = (row.get("text") or "").strip()
        if text:
            key = (cond, "text", text)
            found = [Stimulus(cond, 0, "text", text=text, line=i)]
        else:
            rel = (row.get("path") or "").strip()
            if not rel:
                raise TopoInputError(f"row {i} has neither text nor path", path)
            file = _manifest_file(path, folder, i, rel, allow_outside)
            key = (cond, "file", str(file))
            found = _manifest_file_stimuli(path, i, rel, cond, file)
        if key in first_row:
            what = "text" if key[1] == "text" else f"file {rel!r}"
            raise TopoInputError(
                f"rows {first_row[key]} and {i} repeat condition {cond!r} with the same {what}; "
                "list each stimulus once",
                path,
            )
        first_row[key] = i
        if explicit_split:
            split = _parse_split(row.get("split"), i, path)
            found = [Stimulus(cond, split, s.modality, s.text, s.path, s.line) for s in found]
        stimuli.extend(found)
    if not explicit_split:
        stimuli = _assign_splits(stimuli)
    order = list(dict.fromkeys(s.condition for s in stimuli))
    return StimulusSet(path, stimuli, order)


def _read_manifest_rows(path: Path) -> list[tuple[int, dict]]:
    """The manifest's rows with the line each one ends on (the header is row 1)."""
    out: list[tuple[int, dict]] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for row in reader:
                out.append((reader.line_num, row))
    except UnicodeDecodeError as exc:
        raise TopoInputError(f"manifest is not UTF-8 text (byte {exc.start})", path) from None
    except csv.Error as exc:
        raise TopoInputError(f"manifest is not a readable CSV ({exc})", path) from None
    except OSError as exc:
        raise TopoInputError(f"cannot read manifest ({exc.strerror or exc})", path) from None
    return out


def _manifest_file(path: Path, folder: Path, row: int, rel: str, allow_outside: bool) -> Path:
    """A manifest row's file, resolved against the manifest's folder and kept inside it."""
    try:
        file = (folder / rel).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL byte, symlink loop
        reason = " ".join(str(exc).split())
        raise TopoInputError(f"row {row}: unusable path {rel!r} ({reason})", path) from None
    if not allow_outside and not file.is_relative_to(folder):
        raise TopoInputError(
            f"row {row}: path {rel!r} resolves outside the manifest's folder {folder}; "
            "pass --allow-outside to read it",
            path,
        )
    if not file.is_file():
        raise TopoInputError(f"row {row}: stimulus file not found: {rel}", path)
    return file


def _manifest_file_stimuli(
    path: Path, row: int, rel: str, condition: str, file: Path
) -> list[Stimulus]:
    """The stimuli of a manifest row's file; errors name the CSV, the row and the file."""
    try:
        modality = modality_of(file)
        if modality != "text":
            return [Stimulus(condition, 0, modality, path=file)]
        return _text_file_stimuli(condition, file)
    except TopoInputError as exc:
        reason = str(exc).removeprefix(f"{exc.path}: ") if exc.path else str(exc)
        raise TopoInputError(f"row {row}: {rel}: {reason}", path) from None


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
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TopoInputError(
            f"image refused as a possible decompression bomb ({' '.join(str(exc).split())})", path
        ) from None
    except (UnidentifiedImageError, *_DECODE_ERRORS) as exc:
        raise TopoInputError(f"cannot read image ({exc.__class__.__name__})", path) from None


def load_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Read a mono float32 waveform at ``sample_rate`` (resampled with scipy when needed)."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, ValueError, EOFError, OSError) as exc:
        reason = " ".join(str(exc).split()) or exc.__class__.__name__
        raise TopoInputError(f"cannot read audio ({reason})", path) from None
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
