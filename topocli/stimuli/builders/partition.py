"""The one rule that keeps training stimuli and localizer stimuli apart.

Every original file of a Debian source that a training set draws from (tuxpaint stamps and
sounds, MATE wallpapers, asterisk prompts, sonic-pi samples) is either *reserved for
training* or *localizer material*, decided by its stable name alone:

    reserved  <=>  int(sha256(stable name)[:8 bytes]) % 4 == 0   (and the name is not pinned)

The stable name is the file's installed path below ``usr/share`` of the source root
(``tuxpaint/stamps/animals/cat.png``), so it does not depend on where the source root is, on
the seed, on the per-condition count or on which folder of the package a set looks in. The
localizer sets never draw a reserved original and the training sets draw nothing else (apart
from material topo generates), so no seed or count can put one original in both.

A cryptographic hash, not crc32: crc32 is affine in its input, so names that differ in one
character (``cat1.png``, ``cat2.png``) share their low bits and whole families of names would
fall on one side. The originals a localizer set names by hand (the four landscape
photographs of ``categories-visual``, the only landscape photographs Debian carries) are
pinned to the localizer side: the hash would otherwise take two of the four.

Sources a training set does not use (Noto Color Emoji, the localizer text, the DejaVu font)
are not partitioned: every one of their originals stays localizer material. Training text
comes from ``corpus/train``, which the localizer text never contains (``tests/test_disjoint.py``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from topocli.stimuli.builders.sources import SourceStatus

MODULUS = 4
SPLITS = ("localizer", "train")
_DATA_PREFIX = ("usr", "share")
#: originals a localizer set picks by name: never reserved (``sets.LANDSCAPE_PHOTOS``)
PINNED = frozenset(
    f"backgrounds/mate/nature/{name}"
    for name in ("Dune.jpg", "Storm.jpg", "GreenMeadow.jpg", "Aqua.jpg")
)


def stable_name(st: SourceStatus, path: Path) -> str:
    """The installed path of ``path`` below the source root's ``usr/share`` (POSIX form).

    Parameters
    ----------
    st : SourceStatus
        The present source ``path`` belongs to (its ``path`` is ``root / location``).
    path : Path
        A file below ``st.path``.

    Returns
    -------
    str
        E.g. ``backgrounds/mate/nature/Dune.jpg``, whichever of the MATE sources found it.
    """
    rel = PurePosixPath(st.source.location) / Path(path).relative_to(st.path).as_posix()
    parts = rel.parts
    if parts[: len(_DATA_PREFIX)] == _DATA_PREFIX:
        parts = parts[len(_DATA_PREFIX) :]
    return "/".join(parts)


def is_reserved(name: str) -> bool:
    """Whether the original with this stable name is reserved for training."""
    if name in PINNED:
        return False
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % MODULUS == 0


def keeps(st: SourceStatus, path: Path, split: str) -> bool:
    """Whether a set of ``split`` (``"localizer"`` or ``"train"``) may draw this original."""
    return is_reserved(stable_name(st, path)) == (split == "train")
