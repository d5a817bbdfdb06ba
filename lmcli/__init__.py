"""lmcli: recurrent language models from the shell.

The package is a small library (tokenizers, data, model, training, scoring, checkpoints)
with a thin command-line layer: :mod:`lmcli.cli` (Typer), :mod:`lmcli.ui` (rich progress
bars, tables and messages) and ``__main__.py``. Only those three import typer, rich or
the CLI, and tests/test_layering.py checks it, so every other module can be used from
Python directly.
"""

__version__ = "0.1.0"
