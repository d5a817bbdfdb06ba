"""lmcli: recurrent language models from the shell.

The package is a small library (tokenizers, data, model, training, scoring, checkpoints)
with a thin command-line layer: :mod:`lmcli.cli` (Typer), :mod:`lmcli.ui` (rich progress
bars, tables and messages) and ``__main__.py``. Only those three import typer, rich or
the CLI, and tests/test_layering.py checks it, so every other module can be used from
Python directly; :mod:`lmcli.api` is the stable entry for that (``lmcli.load``).
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``lmcli.load`` and ``lmcli.LanguageModel`` (:mod:`lmcli.api`) and ``lmcli.LmcliError``,
    imported when first used: ``import lmcli`` alone stays light for the command line."""
    if name in ("load", "LanguageModel"):
        from lmcli import api

        return getattr(api, name)
    if name == "LmcliError":
        from lmcli.errors import LmcliError

        return LmcliError
    raise AttributeError(f"module 'lmcli' has no attribute {name!r}")


__all__ = ["LanguageModel", "LmcliError", "load"]
