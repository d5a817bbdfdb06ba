"""The command-line program: parses options, calls the library, shows the results.

One module per group of commands, each registering its commands on the shared Typer app
(:mod:`lmcli.cli.common`). Only this package and :mod:`lmcli.ui` use typer and rich.
"""

from lmcli.cli import generate, inspect, plot, rerank, train, use  # noqa: F401  (each registers its commands)
from lmcli.cli.common import app, flag_of
from lmcli.cli.train import _StopFlag

__all__ = ["_StopFlag", "app", "flag_of", "main"]


def main() -> None:
    """Entry point of the ``lmcli`` command."""
    app()
