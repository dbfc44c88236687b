"""Where the shipped localizer definitions and stimuli live (no heavy imports: ``--help`` reads it).

The installed data package ``topocli.localizer_data`` when it is a real folder with definitions,
else the repository's ``localizers/`` next to the ``topocli`` source folder.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path

_DATA_PACKAGES = ("topocli.localizer_data",)


def library_root() -> Path:
    """Folder holding the shipped definitions (``*.toml``) and stimuli."""
    for package in _DATA_PACKAGES:
        try:
            candidate = Path(str(importlib.resources.files(package)))
        except (ImportError, TypeError, ValueError, AttributeError):
            continue
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    return Path(__file__).resolve().parents[2] / "localizers"


def shipped_thresholds() -> dict[str, dict]:
    """Localizer name -> its ``[thresholds]`` table, as written in the shipped TOML files."""
    out = {}
    for path in sorted(library_root().glob("*.toml")):
        with path.open("rb") as fh:
            out[path.stem] = dict(tomllib.load(fh).get("thresholds") or {})
    return out
