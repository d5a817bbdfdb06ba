"""Default settings: per tokenizer level, and the recipe for the bundled default corpus.

Resolution order for every setting: a flag the user gave, then the bundled corpus recipe
(only when no corpus is given), then the level's defaults, then the dataclass defaults.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import torch

from lmcli.checkpoint import DEFAULT_ROOT
from lmcli.corpus import DataConfig
from lmcli.errors import LmcliError, UsageError
from lmcli.train import RunRequest, TrainConfig

# Model shape and window per level. Char-level text needs long windows and little
# embedding; word and subword vocabularies are large, so the softmax is tied to the
# embedding to halve the parameters it costs.
LEVEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "char": {"embed_dim": 128, "hidden_dim": 512, "layers": 2, "dropout": 0.2,
             "seq_len": 128, "batch_size": 32, "min_freq": 2, "tie_weights": False},
    "word": {"embed_dim": 256, "hidden_dim": 256, "layers": 2, "dropout": 0.3,
             "seq_len": 35, "batch_size": 32, "min_freq": 2, "tie_weights": True},
    "bpe": {"embed_dim": 256, "hidden_dim": 256, "layers": 2, "dropout": 0.3,
            "seq_len": 64, "batch_size": 32, "vocab_size": 4000, "tie_weights": True},
    "unigram": {"embed_dim": 256, "hidden_dim": 256, "layers": 2, "dropout": 0.3,
                "seq_len": 64, "batch_size": 32, "vocab_size": 4000, "tie_weights": True},
}

DEFAULT_CORPUS_NAME = "tang_poems.txt"

# `lmcli train` with no corpus: Tang poems at char level, chosen by timed runs on two CPU
# cores (benchmarks/default_recipe.md): within five minutes it writes well-formed five- and
# seven-character verse. Training sees under two epochs, so dropout only slows it down; the
# 4,000 most frequent characters cover 99.5% of the text and keep the softmax affordable.
# The rate decays to zero over the five minutes (cosine): validation perplexity 100.8
# against 103.1 with plateau decay (bf16, 2 cores, 2026-11-24).
DEFAULT_CORPUS_RECIPE: dict[str, Any] = {
    "level": "char", "model": "lstm", "layers": 1, "embed_dim": 128, "hidden_dim": 384,
    "dropout": 0.0, "vocab_size": 4000, "min_freq": 2, "seq_len": 64, "batch_size": 32,
    "lr": 4e-3, "lr_schedule": "cosine", "time_limit": 300.0, "valid_fraction": 0.02,
}


def corpora_dirs() -> list[Path]:
    """Where bundled corpora may live: next to the package source, then the current folder."""
    here = Path(__file__).resolve().parent.parent / "corpora"
    return [here, Path.cwd() / "corpora"]


def bundled_corpus(name: str = DEFAULT_CORPUS_NAME) -> Path:
    """Path of a bundled corpus file; a clear error when lmcli was installed without them."""
    for directory in corpora_dirs():
        candidate = directory / name
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(d) for d in corpora_dirs())
    raise LmcliError(f"the bundled corpus {name} is not here (looked in {looked}); "
                     "run from a checkout of lmcli or pass a corpus file")


RECIPE_NAMES = ("tiny", "small", "medium", "large")
RECIPE_BUDGETS = {"tiny": "minutes on a CPU", "small": "15-25 minutes on a CPU (char: to 2 hours)",
                  "medium": "half an hour and more on a CPU", "large": "hours on a GPU"}

# Recipes per level and budget (benchmarks/RESULTS.md has the runs that chose them):
# tiny ~5 minutes and small ~15 minutes on a 2-core CPU, medium ~an hour on a CPU, large
# hours on a GPU. A short budget sees few epochs, so its recipes regularise lightly and
# decay the learning rate to zero over the budget; longer budgets grow the model and the
# AWD-LSTM regularisers with it.
# SGD at a high rate with tight clipping (the word_language_model defaults) learned far
# faster per minute than Adam at 2e-3 in timed runs, and in 15 minutes an untied 2x200
# LSTM beat a tied 2x256 one on streamed text and matched it on sentences
# (benchmarks/quality/FINDINGS.md); the cosine decay to zero over the budget replaces the
# example's divide-by-4-on-stall. The adaptive softmax (untied: the clusters have their own
# output matrices) made a step 3.5x faster on a 10k vocabulary; with the time saved a 2x300
# LSTM (locked dropout 0.2 in and between, 0.3 out) reached sentence-level 34.4 in 15
# minutes, against 34.8 for 2x200 at 0.2 (which stopped early, overfitting) and 40.1 for
# 2x200 with the full softmax. Spending the second half of the budget on whole sentences
# from an empty context (--sentence-phase 0.5) then took it to 32.03 (shares 0.2, 0.35,
# 0.7: 32.50, 32.23, 32.63), streamed text 31.39 instead of 30.24: score, eval and rerank
# start every sentence from the empty context, which stream training never shows the model.
_WORD_TINY: dict[str, Any] = {
    "model": "lstm", "layers": 2, "embed_dim": 200, "hidden_dim": 200, "tie_weights": False,
    "dropout": 0.2, "dropout_input": 0.2, "dropout_hidden": 0.2, "dropout_embed": 0.0,
    "weight_drop": 0.0, "optimizer": "sgd", "lr": 20.0, "clip": 0.25, "warmup": 0,
    "lr_schedule": "cosine", "seq_len": 35, "batch_size": 20, "batching": "stream",
    "sentence_phase": 0.5, "softmax": "auto",
}
_WORD_SMALL: dict[str, Any] = {**_WORD_TINY, "embed_dim": 300, "hidden_dim": 300, "dropout": 0.3}
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "word": {
        "tiny": _WORD_TINY,
        "small": _WORD_SMALL,
        # Half an hour and more: LSTM 2x400, output dropout 0.4, adaptive softmax. In 30
        # minutes on one core: sentence-level 30.40 (29.6% below KN5; 32.74 without the
        # sentence phase), against 39.22 for the tied AWD-style 2x400 (weight-drop 0.2,
        # AR/TAR) that held this place before, which is 2.1x slower per token with the
        # full softmax.
        "medium": {**_WORD_SMALL, "embed_dim": 400, "hidden_dim": 400, "dropout": 0.4},
        # GPU hours: AWD-LSTM's Penn Treebank recipe (Merity et al. 2018), NT-ASGD included.
        "large": {"model": "lstm", "layers": 3, "embed_dim": 400, "hidden_dim": 1150,
                  "tie_weights": True, "dropout": 0.4, "dropout_input": 0.65,
                  "dropout_hidden": 0.3, "dropout_embed": 0.1, "weight_drop": 0.5, "ar": 2.0,
                  "tar": 1.0, "optimizer": "ntasgd", "lr": 30.0, "clip": 0.25,
                  "weight_decay": 1.2e-6, "lr_schedule": "plateau", "seq_len": 70,
                  "batch_size": 80, "batching": "stream"},
    },
    "char": {
        # The bundled-corpus recipe (benchmarks/default_recipe.md), decayed over the budget.
        "tiny": {"model": "lstm", "layers": 1, "embed_dim": 128, "hidden_dim": 384,
                 "tie_weights": False, "dropout": 0.0, "optimizer": "adam", "lr": 4e-3,
                 "lr_schedule": "cosine", "seq_len": 64, "batch_size": 32, "batching": "stream"},
        # 15 minutes on one core: the rate 8e-3 gave 1.332 test bits (stream), against
        # 1.346 at 6e-3, 1.340 at 1.2e-2 and 1.400 at the 3e-3 that held this place. Then
        # fewer lanes, for more updates a minute at nearly the same tokens a second: 12
        # gave 1.322 (1.368 by sentence), 8 1.323 (1.364), 16 1.321 (1.393), 32 1.336 (1.404).
        # At 12 lanes a 1x448 LSTM, 30% more tokens a second, gave 1.311 (1.381 by
        # sentence); run again beside the plain LSTM, 1.314 against 1.452: 9.5% below.
        "small": {"model": "lstm", "layers": 1, "embed_dim": 64, "hidden_dim": 448,
                  "tie_weights": False, "dropout": 0.0, "optimizer": "adamw", "lr": 8e-3,
                  "warmup": 100, "lr_schedule": "cosine", "seq_len": 128, "batch_size": 12,
                  "batching": "stream"},
        "medium": {"model": "lstm", "layers": 2, "embed_dim": 128, "hidden_dim": 512,
                   "tie_weights": False, "dropout": 0.1, "dropout_input": 0.1,
                   "dropout_hidden": 0.1, "weight_drop": 0.1, "optimizer": "adamw", "lr": 2e-3,
                   "warmup": 200, "lr_schedule": "cosine", "seq_len": 150, "batch_size": 32,
                   "batching": "stream"},
        # GPU hours: AWD-LSTM's character-level Penn Treebank recipe.
        "large": {"model": "lstm", "layers": 3, "embed_dim": 200, "hidden_dim": 1000,
                  "tie_weights": True, "dropout": 0.1, "dropout_input": 0.1,
                  "dropout_hidden": 0.25, "dropout_embed": 0.0, "weight_drop": 0.5,
                  "ar": 2.0, "tar": 1.0, "optimizer": "adamw", "lr": 2e-3, "warmup": 500,
                  "lr_schedule": "cosine", "seq_len": 150, "batch_size": 128, "batching": "stream"},
    },
}
# Subword pieces are shorter than words: the same models over longer windows. Their
# vocabularies are small (4,000 by default) and sentencepiece ids are not sorted by
# frequency, so they keep the full softmax.
RECIPES["bpe"] = RECIPES["unigram"] = {name: {**recipe, "seq_len": 2 * recipe["seq_len"], "softmax": "full"}
                                       for name, recipe in RECIPES["word"].items()}


# The longest --time-limit (seconds) each CPU recipe is picked for, per level; beyond the
# last, medium. Word level, sentence-level test perplexity on one core: small (2x300) won at
# 15 minutes (34.35 against 37.27 for the 2x400 medium, both streamed throughout) and medium
# at 30 (32.74 against 33.51 streamed throughout; 30.40 against 30.94 with the sentence
# phase); straight lines through the streamed points cross at about 27 minutes. Char level's
# medium is unmeasured, so small covers up to two hours there.
WORD_SMALL_LIMIT = 1500.0  # 25 minutes: between the measured 15 (small won) and 30 (medium won)
RECIPE_LIMITS: dict[str, tuple[tuple[str, float], ...]] = {
    "word": (("tiny", 600.0), ("small", WORD_SMALL_LIMIT)),
    "char": (("tiny", 600.0), ("small", 7200.0)),
}


def pick_recipe(settings: dict[str, Any]) -> str:
    """The recipe for the budget: named by --recipe, else chosen by --time-limit on a CPU
    (RECIPE_LIMITS; subword levels as word); a CUDA device gets large; no time limit on a
    CPU gets small."""
    if settings.get("recipe"):
        return str(settings["recipe"])
    device = str(settings.get("device") or "auto")
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return "large"
    seconds = settings.get("time_limit")
    if seconds is None:
        return "small"
    level = str(settings.get("level", "char"))
    for name, limit in RECIPE_LIMITS["char" if level == "char" else "word"]:
        if seconds <= limit:
            return name
    return "medium"


def resolve_settings(given: dict[str, Any], *, use_default_corpus: bool) -> dict[str, Any]:
    """Merge flags the user gave (``None`` = not given) with the recipe and level defaults."""
    settings = {k: v for k, v in given.items() if v is not None}
    if use_default_corpus:
        for key, value in DEFAULT_CORPUS_RECIPE.items():
            settings.setdefault(key, value)
    level = settings.get("level", "char")
    settings["level"] = level
    if not use_default_corpus or "recipe" in settings:
        settings["recipe"] = pick_recipe(settings)
        if settings["recipe"] not in RECIPE_NAMES:
            raise UsageError(f"unknown --recipe {settings['recipe']!r}; choose one of {', '.join(RECIPE_NAMES)}")
        for key, value in RECIPES.get(level, {}).get(settings["recipe"], {}).items():
            settings.setdefault(key, value)
    for key, value in LEVEL_DEFAULTS.get(level, {}).items():
        settings.setdefault(key, value)
    # "Train for 15 minutes" means 15 minutes: a time or step budget without --epochs lifts
    # the epoch limit (early stopping still applies).
    if "epochs" not in settings and (settings.get("time_limit") or settings.get("max_steps")):
        settings["epochs"] = None
    return settings


DATA_FIELDS = ("level", "vocab_size", "min_freq", "lowercase", "valid_fraction", "encoding",
               "errors", "valid_file")
MODEL_FIELDS = ("layers", "embed_dim", "hidden_dim", "dropout", "tie_weights", "dropout_input",
                "dropout_hidden", "dropout_embed", "weight_drop", "softmax", "cutoffs")
TRAIN_FIELDS = ("seq_len", "batch_size", "epochs", "max_steps", "time_limit", "optimizer", "lr",
                "clip", "weight_decay", "lr_decay", "lr_schedule", "warmup", "ar", "tar", "nonmono",
                "batching", "sentence_phase", "patience", "lr_patience", "eval_every", "seed", "device", "amp",
                "compile")


def default_out_dir(corpus: list[str], level: str, cell: str, root: Path = DEFAULT_ROOT) -> Path:
    """``checkpoints/CORPUS-LEVEL-MODEL-YYYYmmdd-HHMMSS``."""
    stem = Path(corpus[0]).name.split(".")[0] if corpus else "run"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{stem}-{level}-{cell}-{stamp}"


def make_request(corpus: list[str] | None, flags: dict[str, Any], *, out_dir: Path | None = None,
                 force: bool = False) -> RunRequest:
    """A training request from the flags a user gave (``None`` = not given): no corpus
    means the bundled default corpus and its recipe."""
    unknown = set(flags) - {*DATA_FIELDS, *MODEL_FIELDS, *TRAIN_FIELDS, "model", "recipe"}
    if unknown:
        raise UsageError(f"unknown settings: {', '.join(sorted(unknown))}")
    paths = list(corpus) if corpus else [str(bundled_corpus())]
    settings = resolve_settings(flags, use_default_corpus=not corpus)
    data = DataConfig(**{k: settings[k] for k in DATA_FIELDS if k in settings})
    train = TrainConfig(**{k: settings[k] for k in TRAIN_FIELDS if k in settings})
    model = {"cell": settings.get("model", "lstm"),
             **{k: settings[k] for k in MODEL_FIELDS if k in settings}}
    out = out_dir or default_out_dir(paths, data.level, model["cell"])
    return RunRequest(paths, data, model, train, Path(out), force, settings.get("recipe"))
