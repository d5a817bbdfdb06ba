"""lmcli: recurrent language models from the shell.

The package is a small library (tokenizers, data, model, training, scoring, checkpoints)
with a thin Typer command-line layer in :mod:`lmcli.cli`. Nothing outside ``cli.py`` and
``__main__.py`` imports typer or rich, so every part can be used from Python directly.
"""

__version__ = "0.1.0"
