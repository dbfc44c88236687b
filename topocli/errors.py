"""Errors the CLI turns into one-line messages.

``TopoInputError`` is bad input from the user: the CLI prints its message on one line and exits
with code 2. ``NotBuiltError`` marks a feature that does not exist yet: exit code 1, said plainly.
``TopoInterrupted`` is a command stopped by a signal: one line saying what was kept, exit code
128 + the signal number (130 for Ctrl-C).
"""

from __future__ import annotations

from pathlib import Path


class TopoInputError(ValueError):
    """Bad user input: a file, folder, option or model that cannot be used as given."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class TopoInterrupted(Exception):
    """A command stopped by a signal (SIGINT / SIGTERM); the message says what was kept."""

    def __init__(self, message: str, signum: int = 2) -> None:
        self.signum = int(signum)
        super().__init__(message)


class TopoWarning(UserWarning):
    """Something the user must know that does not stop the command (printed as one line)."""


def warn(message: str) -> None:
    """Tell the user something that does not stop the command (the CLI prints one line)."""
    import warnings

    warnings.warn(message, TopoWarning, stacklevel=3)


class NotBuiltError(RuntimeError):
    """A command or option that is planned but not implemented."""
