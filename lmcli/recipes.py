"""Recipes: tested settings for a tokenizer level and a budget.

A setting's value comes from the flag the user gave, else from the recipe, else from its
declaration (:mod:`lmcli.settings`): two layers of defaults, no more. The recipe is the
one named with ``--recipe``, or the one that fits the budget. How each recipe was chosen,
with the runs that chose it: benchmarks/RESULTS.md and benchmarks/quality/FINDINGS.md.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import torch

from lmcli.checkpoint import DEFAULT_ROOT
from lmcli.corpus import DataConfig
from lmcli.errors import LmcliError, SettingError
from lmcli.model import ModelConfig
from lmcli.train import RunRequest, TrainConfig
from lmcli.train.config import split_settings
from lmcli.train.finetune import Origin, inherited_settings

RECIPE_NAMES = ("tiny", "small", "medium", "large")
RECIPE_BUDGETS = {"tiny": "minutes on a CPU", "small": "15-25 minutes on a CPU (char: to 2 hours)",
                  "medium": "half an hour and more on a CPU", "large": "hours on a GPU"}

# `lmcli train` with no corpus: the bundled Tang poems, as if these flags were given. Five
# minutes on a CPU write well-formed verse, and the 4,000 most frequent characters cover
# nearly all of the text (benchmarks/default_recipe.md).
BUNDLED_CORPUS = "tang_poems.txt"
BUNDLED_FLAGS: dict[str, Any] = {"level": "char", "recipe": "tiny", "time_limit": 300.0,
                                 "vocab_size": 4000, "valid_fraction": 0.02}

# Word level: SGD at a high rate with tight clipping, the rate decayed to zero over the
# budget; untied weights so that the adaptive softmax can pay where the vocabulary is
# large; the last half of the budget on whole sentences, as score and rerank see them.
_WORD_TINY: dict[str, Any] = {
    "min_freq": 2, "cell": "lstm", "layers": 2, "embed_dim": 200, "hidden_dim": 200,
    "tie_weights": False, "dropout": 0.2, "dropout_input": 0.2, "dropout_hidden": 0.2,
    "dropout_embed": 0.0, "weight_drop": 0.0, "optimizer": "sgd", "lr": 20.0, "clip": 0.25,
    "warmup": 0, "lr_schedule": "cosine", "seq_len": 35, "batch_size": 20, "batching": "stream",
    "sentence_phase": 0.5, "softmax": "auto",
}
_WORD_SMALL: dict[str, Any] = {**_WORD_TINY, "embed_dim": 300, "hidden_dim": 300, "dropout": 0.3}
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "word": {
        "tiny": _WORD_TINY,
        "small": _WORD_SMALL,
        "medium": {**_WORD_SMALL, "embed_dim": 400, "hidden_dim": 400, "dropout": 0.4},
        # AWD-LSTM's Penn Treebank recipe (Merity et al. 2018), NT-ASGD included.
        "large": {"min_freq": 2, "cell": "lstm", "layers": 3, "embed_dim": 400, "hidden_dim": 1150,
                  "tie_weights": True, "dropout": 0.4, "dropout_input": 0.65,
                  "dropout_hidden": 0.3, "dropout_embed": 0.1, "weight_drop": 0.5, "ar": 2.0,
                  "tar": 1.0, "optimizer": "ntasgd", "lr": 30.0, "clip": 0.25,
                  "weight_decay": 1.2e-6, "lr_schedule": "plateau", "seq_len": 70,
                  "batch_size": 80, "batching": "stream"},
    },
    "char": {
        # The bundled corpus's recipe, decayed over the budget.
        "tiny": {"min_freq": 2, "cell": "lstm", "layers": 1, "embed_dim": 128, "hidden_dim": 384,
                 "tie_weights": False, "dropout": 0.0, "optimizer": "adam", "lr": 4e-3,
                 "lr_schedule": "cosine", "seq_len": 64, "batch_size": 32, "batching": "stream"},
        # Few lanes: more updates a minute at nearly the same tokens a second.
        "small": {"min_freq": 2, "cell": "lstm", "layers": 1, "embed_dim": 64, "hidden_dim": 512,
                  "tie_weights": False, "dropout": 0.0, "optimizer": "adamw", "lr": 8e-3,
                  "warmup": 100, "lr_schedule": "cosine", "seq_len": 128, "batch_size": 12,
                  "batching": "stream"},
        "medium": {"min_freq": 2, "cell": "lstm", "layers": 2, "embed_dim": 128, "hidden_dim": 512,
                   "tie_weights": False, "dropout": 0.1, "dropout_input": 0.1,
                   "dropout_hidden": 0.1, "weight_drop": 0.1, "optimizer": "adamw", "lr": 2e-3,
                   "warmup": 200, "lr_schedule": "cosine", "seq_len": 150, "batch_size": 32,
                   "batching": "stream"},
        # AWD-LSTM's character-level Penn Treebank recipe.
        "large": {"min_freq": 2, "cell": "lstm", "layers": 3, "embed_dim": 200, "hidden_dim": 1000,
                  "tie_weights": True, "dropout": 0.1, "dropout_input": 0.1,
                  "dropout_hidden": 0.25, "dropout_embed": 0.0, "weight_drop": 0.5,
                  "ar": 2.0, "tar": 1.0, "optimizer": "adamw", "lr": 2e-3, "warmup": 500,
                  "lr_schedule": "cosine", "seq_len": 150, "batch_size": 128, "batching": "stream"},
    },
}
# Subword pieces are shorter than words: the same models over longer windows. Their
# vocabularies are small and sentencepiece ids are not sorted by frequency, so they keep
# the full softmax.
RECIPES["bpe"] = RECIPES["unigram"] = {
    name: {**{k: v for k, v in recipe.items() if k != "min_freq"}, "vocab_size": 4000,
           "seq_len": 2 * recipe["seq_len"], "softmax": "full"}
    for name, recipe in RECIPES["word"].items()}

# The longest time limit (seconds) each CPU recipe is picked for, per level; beyond the
# last, medium. Word level: where the measured crossing of small and medium lies; char
# level's medium is unmeasured, so small covers up to two hours there.
RECIPE_LIMITS: dict[str, tuple[tuple[str, float], ...]] = {
    "word": (("tiny", 600.0), ("small", 1500.0)),
    "char": (("tiny", 600.0), ("small", 7200.0)),
}


# Settings whose recipe values belong to the recipe's optimizer.
OPTIMIZER_TIED = ("lr", "clip", "lr_decay", "weight_decay")


def pick_recipe(given: dict[str, Any]) -> str:
    """The recipe for the budget: the one named, else on a CUDA device large, else by the
    time limit on a CPU (subword levels as word), small with none."""
    if given.get("recipe"):
        if given["recipe"] not in RECIPE_NAMES:
            raise SettingError(f"{{recipe}} must be one of {', '.join(RECIPE_NAMES)}; got {given['recipe']!r}")
        return str(given["recipe"])
    device = str(given.get("device") or "auto")
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return "large"
    seconds = given.get("time_limit")
    if seconds is None:
        return "small"
    level = str(given.get("level") or DataConfig.level)
    for name, limit in RECIPE_LIMITS["char" if level == "char" else "word"]:
        if seconds <= limit:
            return name
    return "medium"


def resolve(given: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The settings of a run from the flags given (``None`` = not given) and their recipe:
    (settings, recipe name). A setting neither sets keeps its declared default."""
    given = {key: value for key, value in given.items() if value is not None}
    recipe = pick_recipe(given)
    level = str(given.get("level") or DataConfig.level)
    chosen = dict(RECIPES[level][recipe])
    if given.get("optimizer", chosen.get("optimizer")) != chosen.get("optimizer"):
        # The recipe's rate, clipping and weight decay were tuned for its optimizer (SGD's
        # rate of 20 makes Adam diverge): another optimizer brings its own defaults.
        for key in OPTIMIZER_TIED:
            chosen.pop(key, None)
    settings = {**chosen, **given}
    settings.pop("recipe", None)
    # "Train for 15 minutes" means 15 minutes: a time or step budget without an epoch
    # count lifts the epoch limit (early stopping still applies).
    if "epochs" not in given and (given.get("time_limit") or given.get("max_steps")):
        settings["epochs"] = None
    return settings, recipe


def bundled_corpus(name: str = BUNDLED_CORPUS) -> Path:
    """Path of a bundled corpus file (next to the package source, or in ./corpora); a clear
    error when lmcli was installed without them."""
    folders = [Path(__file__).resolve().parent.parent / "corpora", Path.cwd() / "corpora"]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise LmcliError(f"the bundled corpus {name} is not here (looked in "
                     f"{', '.join(map(str, folders))}); run from a checkout of lmcli or pass a corpus file")


def default_out_dir(corpus: list[str], level: str, cell: str, root: Path = DEFAULT_ROOT) -> Path:
    """``checkpoints/CORPUS-LEVEL-MODEL-YYYYmmdd-HHMMSS``."""
    stem = Path(corpus[0]).name.split(".")[0] if corpus else "run"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{stem}-{level}-{cell}-{stamp}"


def make_request(corpus: list[str] | None, flags: dict[str, Any], *, out_dir: Path | None = None,
                 force: bool = False, init_from: str | Path | None = None) -> RunRequest:
    """A training request from the flags a user gave (``None`` = not given; ``recipe`` among
    them): no corpus means the bundled corpus and the flags it implies. With ``init_from``
    the model given there takes the recipe's place (:mod:`lmcli.train.finetune`)."""
    if init_from is not None:
        return _fine_tuning(corpus, flags, out_dir, force, Origin.load(init_from))
    paths = list(corpus) if corpus else [str(bundled_corpus())]
    given = flags if corpus else {**BUNDLED_FLAGS, **{k: v for k, v in flags.items() if v is not None}}
    settings, recipe = resolve(given)
    groups = split_settings(settings)
    data, model = DataConfig(**groups["data"]), ModelConfig(**groups["model"])
    train = TrainConfig(**groups["train"])
    out = out_dir or default_out_dir(paths, data.level, model.cell)
    return RunRequest(paths, data, model, train, Path(out), force, recipe)


def _fine_tuning(corpus: list[str] | None, flags: dict[str, Any], out_dir: Path | None, force: bool,
                 origin: Origin) -> RunRequest:
    """A run that starts from ``origin``'s weights: its settings below the flags given."""
    if not corpus:
        raise SettingError("{init_from} needs the corpus to fine-tune on")
    given = {key: value for key, value in flags.items() if value is not None}
    if given.get("recipe"):
        raise SettingError("{init_from} takes the model's own settings as its recipe; leave out {recipe}")
    settings = {**inherited_settings(origin, given), **given}
    if "epochs" not in given and (given.get("time_limit") or given.get("max_steps")):
        settings["epochs"] = None
    groups = split_settings(settings)
    data, model = DataConfig(**groups["data"]), ModelConfig(**groups["model"])
    out = out_dir or default_out_dir(list(corpus), data.level, model.cell)
    return RunRequest(list(corpus), data, model, TrainConfig(**groups["train"]), Path(out), force,
                      None, origin)

