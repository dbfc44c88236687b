"""Errors the CLI turns into one-line messages.

``TopoInputError`` is bad input from the user: the CLI prints its message on one line and exits
with code 2. ``NotBuiltError`` marks a feature that does not exist yet: exit code 1, said plainly.
"""

from __future__ import annotations

from pathlib import Path


class TopoInputError(ValueError):
    """Bad user input: a file, folder, option or model that cannot be used as given."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class NotBuiltError(RuntimeError):
    """A command or option that is planned but not implemented."""
