"""The ``topo`` command line (Typer); see :mod:`topocli.cli.app`."""

from topocli.cli.app import Context, app, entry, main

__all__ = ["Context", "app", "entry", "main"]
