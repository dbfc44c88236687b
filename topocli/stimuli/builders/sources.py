"""Where the material of the buildable sets comes from: packages, versions, licences.

A :class:`Source` is one installed package (Debian or Python), program or the project's own
text. Debian material is looked up below a *source root* (``/`` normally; tests point
``TOPO_STIMULI_SOURCE_ROOT`` or the ``root`` argument at a small fake tree with the same
layout, including ``var/lib/dpkg/status`` for the versions). Licences come from the package's
Debian ``copyright`` file (machine-readable DEP-5: the last ``Files:`` paragraph that matches a
file wins), so a file gets the licence of its own paragraph, not only the package default.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path, PurePosixPath

from topocli.errors import TopoInputError

ROOT_ENV = "TOPO_STIMULI_SOURCE_ROOT"
KINDS = ("debian", "python", "program", "project")


@dataclass(frozen=True)
class Source:
    """One source of material.

    Attributes
    ----------
    name : str
        Short key used in set definitions and ``PROVENANCE.csv``.
    kind : str
        ``"debian"`` (files below the source root), ``"python"`` (files inside an installed
        Python package), ``"program"`` (a command on ``PATH``) or ``"project"`` (topo's own).
    package : str
        Debian / PyPI package or program name.
    location : str
        Debian: the path below the source root (``usr/share/...``); python: the path inside
        the package folder; program: the command; project: a folder below the localizer
        library.
    licence : str
        Licence used when the copyright file names none for a file (SPDX-like identifier).
    licence_files : tuple of str
        Licence texts to copy into a built set (Debian: paths below the source root).
    dep5_key : str or None
        A ``Files:`` pattern of the copyright file that holds this source's licence (asterisk
        packs several languages in one copyright file); None: match the file's own path;
        ``""``: always ``licence``.
    description : str
        What the material is, for ``topo stimuli list``.
    """

    name: str
    kind: str
    package: str
    location: str
    licence: str
    licence_files: tuple[str, ...] = ()
    dep5_key: str | None = None
    description: str = ""

    @property
    def install(self) -> str:
        """The one line that installs this source."""
        if self.kind == "debian" or self.kind == "program":
            return f"apt-get install -y {self.package}"
        if self.kind == "python":
            return f"pip install {self.package}"
        if self.location.startswith(".."):
            return "(part of a topo source checkout)"
        return "(part of topo)"


@dataclass(frozen=True)
class SourceStatus:
    """Whether a source is present on this machine, where, and in which version."""

    source: Source
    present: bool
    path: Path | None
    version: str

    @property
    def needs(self) -> str:
        """``""`` when present, else ``"needs: apt-get install -y PKG"``."""
        return "" if self.present else f"needs: {self.source.install}"


def source_root(root: str | Path | None = None) -> Path:
    """Folder Debian material is looked up below: ``root``, ``$TOPO_STIMULI_SOURCE_ROOT``, /."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(ROOT_ENV) or "/")


def status(source: Source, root: str | Path | None = None) -> SourceStatus:
    """Find a source and its version.

    Parameters
    ----------
    source : Source
    root : str or Path, optional
        Source root (see :func:`source_root`).

    Returns
    -------
    SourceStatus
    """
    base = source_root(root)
    if source.kind == "debian":
        path = base / source.location
        version = dpkg_versions(str(base)).get(source.package, "unknown (not in dpkg status)")
        return SourceStatus(source, path.exists(), path if path.exists() else None, version)
    if source.kind == "python":
        folder = _python_package_dir(source.package)
        path = None if folder is None else folder / source.location
        present = path is not None and path.exists()
        version = _dist_version(source.package)
        return SourceStatus(source, present, path if present else None, version)
    if source.kind == "program":
        found = shutil.which(source.location)
        version = _program_version(found) if found else "not installed"
        return SourceStatus(source, found is not None, Path(found) if found else None, version)
    from topocli.stimuli.library import library_root

    path = (library_root() / source.location).resolve()
    return SourceStatus(source, path.exists(), path if path.exists() else None, _topo_version())


def require(sources: list[Source], root: str | Path | None = None) -> dict[str, SourceStatus]:
    """Statuses of the sources a set needs; any missing one is an input error naming the install.

    Raises
    ------
    TopoInputError
        One line listing every missing source and the command that installs it.
    """
    found = {s.name: status(s, root) for s in sources}
    missing = [st for st in found.values() if not st.present]
    if missing:
        apt = sorted({st.source.package for st in missing if st.source.kind != "python"})
        pip = sorted({st.source.package for st in missing if st.source.kind == "python"})
        parts = []
        if apt:
            parts.append(f"apt-get install -y {' '.join(apt)}")
        if pip:
            parts.append(f"pip install {' '.join(pip)}")
        where = ", ".join(f"{st.source.package} ({st.source.location})" for st in missing)
        raise TopoInputError(f"missing source(s) {where}; needs: {' and '.join(parts)}")
    return found


# ---------------------------------------------------------------------- versions
@lru_cache(maxsize=8)
def dpkg_versions(root: str) -> dict[str, str]:
    """Installed Debian package -> version, read from ``<root>/var/lib/dpkg/status``."""
    path = Path(root) / "var/lib/dpkg/status"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out = {}
    for para in text.split("\n\n"):
        fields = {}
        for line in para.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
        if (
            "Package" in fields
            and "Version" in fields
            and "installed" in fields.get("Status", "install ok installed").split()
        ):
            out[fields["Package"]] = fields["Version"]
    return out


def _python_package_dir(package: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _dist_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _program_version(path: str) -> str:
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    words = done.stdout.split()
    # "eSpeak NG text-to-speech: 1.51  Data at: ..." -> the token after the first colon
    for i, word in enumerate(words[:-1]):
        if word.endswith(":"):
            return words[i + 1]
    return " ".join(words[:3]) or "unknown"


def _topo_version() -> str:
    from topocli import __version__

    return str(__version__)


# ---------------------------------------------------------------------- licences
@lru_cache(maxsize=64)
def dep5_paragraphs(copyright_file: str) -> tuple[tuple[tuple[str, ...], str], ...]:
    """``(patterns, licence)`` of every ``Files:`` paragraph of a DEP-5 copyright file."""
    try:
        text = Path(copyright_file).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    out = []
    for para in text.split("\n\n"):
        patterns: list[str] = []
        licence = None
        key = None
        for line in para.splitlines():
            if line[:1].isspace():
                if key == "Files":
                    patterns.extend(line.split())
                continue
            key, _, value = line.partition(":")
            if key == "Files":
                patterns = value.split()
            elif key == "License" and licence is None:
                licence = value.strip()
        if patterns and licence:
            out.append((tuple(patterns), licence))
    return tuple(out)


def licence_for(source: Source, original: Path | None, root: str | Path | None = None) -> str:
    """Licence of one file of a source (its DEP-5 paragraph, else the source's default)."""
    if source.kind != "debian" or not source.licence_files or source.dep5_key == "":
        return source.licence
    copyright_file = source_root(root) / source.licence_files[0]
    paragraphs = dep5_paragraphs(str(copyright_file))
    best = None
    for patterns, licence in paragraphs:
        if source.dep5_key is not None:
            if source.dep5_key in patterns:
                best = licence
            continue
        if original is not None and any(_dep5_match(p, original) for p in patterns):
            best = licence  # DEP-5: the last matching paragraph wins
    if best is None and source.dep5_key is not None:
        best = next((lic for pats, lic in paragraphs if "*" in pats), None)
    return best or source.licence


def _dep5_match(pattern: str, path: Path) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("debian/"):
        return False
    parts = PurePosixPath(path.as_posix()).parts
    depth = pattern.count("/") + 1
    tail = "/".join(parts[-depth:])
    if fnmatch.fnmatchcase(tail, pattern):
        return True
    # upstream paths (etc/samples/x.flac) differ from the installed ones: compare the name
    # and its folder's name (samples/x.flac), never the name alone (vendor/* is no sample)
    pattern_parts = pattern.split("/")
    return (
        len(pattern_parts) > 1
        and len(parts) > 1
        and pattern_parts[-2] == parts[-2]
        and fnmatch.fnmatchcase(path.name, pattern_parts[-1])
    )


def licence_texts(status_: SourceStatus, root: str | Path | None = None) -> list[Path]:
    """Existing licence files of a present source (absolute paths)."""
    source = status_.source
    if source.kind == "debian":
        base = source_root(root)
        return [base / f for f in source.licence_files if (base / f).is_file()]
    if source.kind == "python":
        folder = _python_package_dir(source.package)
        out = []
        for rel in source.licence_files:
            candidate = Path(rel) if os.path.isabs(rel) else (folder / rel if folder else None)
            if candidate is not None and candidate.is_file():
                out.append(candidate)
        out.extend(_dist_licence_files(source.package))
        return out
    return [Path(f) for f in source.licence_files if Path(f).is_file()]


def _dist_licence_files(package: str) -> list[Path]:
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return []
    found = []
    for f in dist.files or []:
        name = PurePosixPath(str(f)).name.upper()
        if name.startswith(("LICENSE", "LICENCE", "COPYING")):
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                found.append(path)
    return found


# ---------------------------------------------------------------------- the sources
def _debian(name, package, location, licence, description, dep5_key=None, extra=()):
    files = (f"usr/share/doc/{package}/copyright", *extra)
    return Source(name, "debian", package, location, licence, files, dep5_key, description)


_ASTERISK = {
    # language tag: (folder, DEP-5 paragraph of the shared copyright file)
    "en": ("en_US_f_Allison", "*"),
    "es": ("es_MX_f_Allison", "*"),
    "fr": ("fr_CA_f_June", "fr-*"),
    "it": ("it_IT_m_Carlo", "it-*"),
    "ru": ("ru_RU_f_IvrvoiceRU", "ru-*"),
}

SOURCES: dict[str, Source] = {
    "tuxpaint": _debian(
        "tuxpaint",
        "tuxpaint-stamps-default",
        "usr/share/tuxpaint/stamps",
        "GPL-2",
        "Tux Paint stamps: photographic cut-outs (PNG), sound effects and spoken names (OGG)",
        extra=("usr/share/common-licenses/GPL-2",),
    ),
    "emoji": _debian(
        "emoji",
        "fonts-noto-color-emoji",
        "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
        "Apache-2.0 (emoji images) AND OFL-1.1 (font)",
        "Noto Color Emoji: people, bodies, places and objects rendered as images",
        dep5_key="",  # one licence pair for every glyph: no per-file paragraphs
        extra=("usr/share/common-licenses/Apache-2.0",),
    ),
    "mate": _debian(
        "mate",
        "mate-backgrounds",
        "usr/share/backgrounds/mate/nature",
        "GPL-2+",
        "MATE wallpapers: landscape photographs",
        extra=("usr/share/common-licenses/GPL-2",),
    ),
    "mate-all": _debian(
        "mate-all",
        "mate-backgrounds",
        "usr/share/backgrounds/mate",
        "GPL-2+",
        "MATE wallpapers, every folder (nature, abstract, desktop): square crops for training",
        extra=("usr/share/common-licenses/GPL-2",),
    ),
    **{
        f"asterisk-{lang}": _debian(
            f"asterisk-{lang}",
            f"asterisk-core-sounds-{lang}-wav",
            f"usr/share/asterisk/sounds/{folder}",
            "CC-BY-SA-3.0",
            f"Asterisk telephone prompts, one speaker ({lang}, 8 kHz WAV)",
            dep5_key=key,
        )
        for lang, (folder, key) in _ASTERISK.items()
    },
    "sonic-pi": _debian(
        "sonic-pi",
        "sonic-pi-samples",
        "usr/share/sonic-pi/samples",
        "CC0",
        "Sonic Pi samples: drums, instruments, electronic and ambient sounds (FLAC)",
    ),
    "espeak-ng": Source(
        "espeak-ng",
        "program",
        "espeak-ng",
        "espeak-ng",
        "GPL-3.0-or-later (program; the synthesised audio is program output)",
        ("/usr/share/doc/espeak-ng-data/copyright", "/usr/share/doc/espeak-ng/copyright"),
        None,
        "eSpeak NG speech synthesiser: sentences and stories spoken in several voices",
    ),
    "dejavu": Source(
        "dejavu",
        "python",
        "matplotlib",
        "mpl-data/fonts/ttf/DejaVuSans-Bold.ttf",
        "Bitstream-Vera AND DejaVu (free font licence), shipped with matplotlib",
        (),
        None,
        "DejaVu Sans Bold (shipped inside matplotlib): the font of the rendered words",
    ),
    "topo-text": Source(
        "topo-text",
        "project",
        "topo",
        ".",
        "Apache-2.0 (written for the topo project)",
        (),
        None,
        "topo's shipped localizer text: stories, arithmetic, sentences, nonwords",
    ),
    "topo-corpus": Source(
        "topo-corpus",
        "project",
        "topo",
        "../corpus/train",
        "Apache-2.0 (written for the topo project)",
        (),
        None,
        "topo's training text (corpus/train of a source checkout; never localizer text)",
    ),
    "topo-generated": Source(
        "topo-generated",
        "project",
        "topo",
        ".",
        "Apache-2.0 (generated by topo)",
        (),
        None,
        "material topo generates from the seed: gratings, noise, shapes, noise bursts, "
        "chirps, tone complexes",
    ),
}
