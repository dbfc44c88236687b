"""The one rule that keeps training stimuli and localizer stimuli apart.

Every original file of a Debian source that a training set draws from (tuxpaint stamps and
sounds, MATE wallpapers, asterisk prompts, sonic-pi samples) is either *reserved for
training* or *localizer material*, decided by its stable name alone:

    reserved  <=>  crc32(stable name) % 4 == 0

The stable name is the file's installed path below ``usr/share`` of the source root
(``tuxpaint/stamps/animals/cat.png``), so it does not depend on where the source root is, on
the seed, on the per-condition count or on which folder of the package a set looks in. The
localizer sets never draw a reserved original and the training sets draw nothing else (apart
from material topo generates), so no seed or count can put one original in both.

Sources a training set does not use (Noto Color Emoji, the localizer text, the DejaVu font)
are not partitioned: every one of their originals stays localizer material. Training text
comes from ``corpus/train``, which the localizer text never contains (``tests/test_disjoint.py``).
"""

from __future__ import annotations

import zlib
from pathlib import Path, PurePosixPath

from topocli.stimuli.builders.sources import SourceStatus

MODULUS = 4
SPLITS = ("localizer", "train")
_DATA_PREFIX = ("usr", "share")


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
    return zlib.crc32(name.encode("utf-8")) % MODULUS == 0


def keeps(st: SourceStatus, path: Path, split: str) -> bool:
    """Whether a set of ``split`` (``"localizer"`` or ``"train"``) may draw this original."""
    return is_reserved(stable_name(st, path)) == (split == "train")
