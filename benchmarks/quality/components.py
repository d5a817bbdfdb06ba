"""What the quality benchmark runs: its components, their order and targets, and
the facts of the machine it runs on (shared by run.py, report.py and run_all.py)."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "benchmarks" / "quality"
DATA = REPO / "benchmarks" / ".cache" / "quality"
DEFAULT_RESULTS = HERE / "results"  # the JSONs are kept in git; logs/ is not
DEFAULT_REPORT = REPO / "benchmarks" / "RESULTS.md"

# `lmcli train` flags per lmcli component (added after the corpus, --valid, --time-limit,
# -o and --force). The level decides the table: word level in the word table, any other in
# the character table (bits per character compare across tokenizations).
WORD_SMALL = ["--level", "word", "--min-freq", "1", "--recipe", "small"]
CHAR_SMALL = ["--level", "char", "--min-freq", "1", "--recipe", "small"]


def adaptive(cutoffs: str, size: int, dropout: str) -> list[str]:
    """A word candidate with an adaptive softmax, spelled out in full."""
    return [*WORD_SMALL, "--softmax", "adaptive", "--cutoffs", cutoffs, "--embed-dim", str(size),
            "--hidden-dim", str(size), "--dropout", dropout]


LMCLI_COMPONENTS: dict[str, list[str]] = {
    "lmcli-word": [*WORD_SMALL],
    "lmcli-char": [*CHAR_SMALL],
    # Longer budgets, for the curve of perplexity against training time (run with --only;
    # the minutes are in the name and override --minutes).
    "lmcli-word-small-30m": [*WORD_SMALL],
    "lmcli-word-medium-30m": ["--level", "word", "--min-freq", "1", "--recipe", "medium"],
    # Adaptive softmax candidates (the 10k softmax was most of a step); spelled out, so
    # they stay what was measured when the recipes change.
    "lmcli-word-adaptive": adaptive("2000", 200, "0.2"),
    "lmcli-word-adaptive-1k4k": adaptive("1000,4000", 200, "0.2"),
    "lmcli-word-adaptive-300": adaptive("1000,4000", 300, "0.3"),
    "lmcli-word-adaptive-400": adaptive("1000,4000", 400, "0.4"),
    "lmcli-word-adaptive-300-30m": adaptive("1000,4000", 300, "0.3"),
    "lmcli-word-adaptive-400-30m": adaptive("1000,4000", 400, "0.4"),
    # The char recipe as it was before the learning-rate runs below, for the record.
    "lmcli-char-lr3": [*CHAR_SMALL, "--lr", "3e-3"],
    # A word candidate: SGD at 30 instead of 20 under the same clip and cosine.
    "lmcli-word-lr30": [*WORD_SMALL, "--lr", "30"],
    # Char learning-rate candidates: 5-minute probes put 8e-3 and 1.2e-2 far ahead of the
    # recipe's 3e-3 on validation.
    "lmcli-char-lr8": [*CHAR_SMALL, "--lr", "8e-3"],
    "lmcli-char-lr12": [*CHAR_SMALL, "--lr", "1.2e-2"],
    # After those: a little lower, and the same tokens a step as 64 lanes of 64 (wider
    # products, half the serial steps).
    "lmcli-char-lr6": [*CHAR_SMALL, "--lr", "6e-3"],
    "lmcli-char-lr8-b64x64": [*CHAR_SMALL, "--lr", "8e-3",
                              "--batch-size", "64", "--seq-len", "64"],
    # More text per minute at 8e-3: a GRU (three gates to the LSTM's four) and a narrower LSTM.
    "lmcli-char-gru": [*CHAR_SMALL, "--lr", "8e-3",
                       "--model", "gru"],
    "lmcli-char-h448": [*CHAR_SMALL, "--lr", "8e-3",
                        "--hidden-dim", "448"],
    # A closing phase on whole sentences from the empty context, as score and eval read
    # them (probes that fine-tuned a finished model on sentences pointed there).
    "lmcli-word-sp20": [*WORD_SMALL, "--sentence-phase", "0.2"],
    "lmcli-word-sp35": [*WORD_SMALL, "--sentence-phase", "0.35"],
    # After those: larger shares. 0.5 joined the small recipe (validation agrees: see
    # "Choices, on validation" in RESULTS.md), so its run is the single-seed lmcli-word.
    "lmcli-word-sp50": [*WORD_SMALL, "--sentence-phase", "0.5"],
    "lmcli-word-sp70": [*WORD_SMALL, "--sentence-phase", "0.7"],
    # More updates per minute at 8e-3: half the tokens a step, by shorter windows (the state
    # still carries across them) or by fewer lanes; 64 lanes were slower per token.
    "lmcli-char-s64": [*CHAR_SMALL, "--seq-len", "64"],
    "lmcli-char-b16": [*CHAR_SMALL, "--batch-size", "16"],
    # After those: fewer lanes again, and 16 lanes at a lower rate (a smaller batch's
    # noisier gradient).
    "lmcli-char-b8": [*CHAR_SMALL, "--batch-size", "8"],
    "lmcli-char-b16-lr6": [*CHAR_SMALL, "--batch-size", "16",
                           "--lr", "6e-3"],
    # After those: between 8 and 16 lanes, and 16 at a higher rate; 12 lanes joined the
    # small recipe.
    # After those, at 12 lanes: validation twice an epoch instead of four times, and a
    # narrower LSTM (more tokens a minute).
    "lmcli-char-b12-eval2": [*CHAR_SMALL, "--eval-every", "1234"],
    "lmcli-char-b12-h448": [*CHAR_SMALL, "--hidden-dim", "448"],
    # After those: 448 units joined the small recipe on a test figure, and plain-char and
    # lmcli-char were run again side by side; validation prefers 512, the recipe again.
    "lmcli-char-b12": [*CHAR_SMALL, "--batch-size", "12"],
    "lmcli-char-b16-lr10": [*CHAR_SMALL, "--batch-size", "16",
                            "--lr", "1e-2"],
    # The char recipe over 30 minutes, beside plain-char-30m: where the char target falls.
    "lmcli-char-30m": [*CHAR_SMALL],
}
DEFAULT_COMPONENTS = ["kn5", "baseline-word", "lmcli-word", "plain-char", "lmcli-char"]
# Candidates whose run became a recipe, and so the named component's result: not "not run".
BECAME = {"lmcli-word-sp50": "lmcli-word"}
# What the char runs' flags changed: the recipe they started from.
CHAR_NOTE = ("`--recipe small` in a char run means the recipe when it ran, and the flags shown "
             "are the changes to it: LSTM 1x512 with 32 lanes (`--batch-size 32`) up to "
             "lmcli-char-b16-lr10; 1x512 with 12 lanes for lmcli-char-b12-eval2 and "
             "lmcli-char-b12-h448; 1x448 with 12 lanes for lmcli-char (the single-seed run; "
             "the recipe is 1x512 with 12 lanes again, validation's choice).")


def component_minutes(name: str, default: float) -> float:
    """A budget written in a component's name (``...-60m``), else the runner's --minutes."""
    last = name.rsplit("-", 1)[-1]
    return float(last[:-1]) if last.endswith("m") and last[:-1].isdigit() else default


REFERENCES = ["kn5", "baseline-word", "plain-char"]
# The plain char LSTM trained longer, to compare lmcli's char runs of the same budget with.
LONGER_REFERENCES = ["plain-char-30m"]
# With --jobs 2 the runs go in these pairs, side by side: each model against its reference.
ORDER = ["kn5", "baseline-word", "lmcli-word", "plain-char", "lmcli-char"]

# The targets, as fractions below the reference.
TARGET_VS_KN5 = 0.25        # sentence-level test perplexity, word level
TARGET_VS_BASELINE = 0.10   # stream test perplexity, word level
TARGET_VS_PLAIN = 0.10      # stream test bits per character, char level


def components() -> list[str]:
    return ORDER + [name for name in LMCLI_COMPONENTS if name not in ORDER] + LONGER_REFERENCES


def split_seed(name: str) -> tuple[str, int | None]:
    """``lmcli-word-s2`` -> (``lmcli-word``, 2): a component run with its own seed."""
    base, _, last = name.rpartition("-s")
    return (base, int(last)) if base in components() and last.isdigit() else (name, None)


def seeded(names: list[str], seeds: list[int] | None) -> list[str]:
    """Each component once per seed, seed after seed, so that --jobs pairs stay pairs."""
    if not seeds:
        return names
    return [f"{name}-s{seed}" for seed in seeds for name in names if name != "kn5"]


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch
        torch_version = torch.__version__
        threads = torch.get_num_threads()
    except ImportError:
        torch_version, threads = "not installed", None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": usable, "torch": torch_version, "torch_threads": threads,
            "python": platform.python_version()}

