"""Recipes: two layers of defaults under the flags given (the recipe, then the settings'
declarations), a recipe that follows the budget, and the bundled corpus's implied flags.
Nothing here depends on whether a GPU is present: the device is always given or faked."""

from __future__ import annotations

import pytest

from lmcli import recipes
from lmcli.errors import UsageError
from lmcli.recipes import RECIPES, make_request, resolve


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipes.torch.cuda, "is_available", lambda: False)


def test_flags_override_the_recipe_and_budgets_lift_the_epoch_limit() -> None:
    word, recipe = resolve({"level": "word", "hidden_dim": 99})
    assert recipe == "small" and word["hidden_dim"] == 99
    assert word["tie_weights"] is False and word["seq_len"] == 35 and word["min_freq"] == 2
    assert "epochs" not in word  # the declared default (10) applies
    assert resolve({"level": "char", "time_limit": 60.0})[0]["epochs"] is None
    assert resolve({"time_limit": 60.0, "epochs": 3})[0]["epochs"] == 3
    assert resolve({"max_steps": 10})[0]["epochs"] is None


def test_another_optimizer_brings_its_own_rate() -> None:
    """The word recipes' SGD rate of 20 would make Adam diverge: a different --optimizer
    drops the recipe's rate, clipping and weight decay (its defaults apply); flags given
    with it, or the recipe's own optimizer named again, keep what was said."""
    settings, _ = resolve({"level": "word", "recipe": "small", "optimizer": "adam"})
    assert settings["optimizer"] == "adam" and "lr" not in settings and "clip" not in settings
    assert resolve({"level": "word", "recipe": "small", "optimizer": "adam", "lr": 1e-3})[0]["lr"] == 1e-3
    assert resolve({"level": "word", "recipe": "small", "optimizer": "sgd"})[0]["lr"] == 20.0
    assert resolve({"level": "word", "recipe": "small"})[0]["lr"] == 20.0


def test_the_recipe_follows_the_budget() -> None:
    def pick(**given: object) -> str:
        return resolve(given)[1]

    assert pick(level="word", time_limit=300.0) == "tiny"
    assert pick(level="word", time_limit=900.0) == "small"
    assert pick(level="word") == "small"
    assert pick(level="word", time_limit=1500.0) == "small"
    assert pick(level="word", time_limit=1800.0) == "medium"
    assert pick(level="bpe", time_limit=1800.0) == "medium"
    assert pick(level="char", time_limit=3600.0) == "small"
    assert pick(level="word", device="cuda") == "large"
    assert pick(level="word", device="cpu", time_limit=5 * 3600.0) == "medium"
    small, _ = resolve({"level": "word", "time_limit": 900.0})
    assert {k: small[k] for k in RECIPES["word"]["small"]} == RECIPES["word"]["small"]


def test_a_named_recipe_with_flags_over_it() -> None:
    mine, recipe = resolve({"level": "char", "recipe": "large", "hidden_dim": 64, "lr": 0.01})
    assert recipe == "large" and mine["hidden_dim"] == 64 and mine["lr"] == 0.01 and mine["layers"] == 3
    assert resolve({"level": "bpe", "recipe": "small"})[0]["seq_len"] == 70
    assert resolve({"level": "bpe", "recipe": "small"})[0]["vocab_size"] == 4000
    with pytest.raises(UsageError, match="recipe"):
        resolve({"level": "word", "recipe": "huge"})


@pytest.mark.parametrize("level", sorted(RECIPES))
@pytest.mark.parametrize("name", recipes.RECIPE_NAMES)
def test_every_recipe_is_a_valid_run(level: str, name: str) -> None:
    request = make_request(["x.txt"], {"level": level, "recipe": name})
    assert request.recipe == name and request.data.level == level
    request.model.for_vocabulary(10_000)  # checked against a vocabulary too


def test_no_corpus_means_the_bundled_poems_and_their_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    request = make_request(None, {})
    assert request.corpus[0].endswith(recipes.BUNDLED_CORPUS)
    assert request.recipe == "tiny" and request.data.level == "char" and request.data.vocab_size == 4000
    assert request.train.time_limit == 300.0 and request.train.epochs is None
    assert request.model.layers == 1 and request.model.hidden_dim == 384
    # A CUDA machine gets the same five-minute run: the bundled corpus names its recipe.
    monkeypatch.setattr(recipes.torch.cuda, "is_available", lambda: True)
    assert make_request(None, {}).recipe == "tiny"
    shorter = make_request(None, {"time_limit": 60.0, "hidden_dim": 64})
    assert shorter.train.time_limit == 60.0 and shorter.model.hidden_dim == 64
