"""Several models as one: the linear interpolation of their token probabilities.

    p(w_t | history) = sum_k lambda_k p_k(w_t | history),   lambda_k >= 0, sum_k lambda_k = 1

Token by token, so the models must read the same tokens in the same order: one
vocabulary, one direction. (Models that differ are combined log-linearly instead, one
weight each, as ``rerank`` does.) The weights that maximise the likelihood of dev text
come from EM (Jelinek and Mercer's estimation; SRILM's ``compute-best-mix``): each token's
posterior share of each model, averaged, is the next weight; the dev log-likelihood never
decreases from one iteration to the next.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from lmcli.errors import LmcliError, SettingError
from lmcli.rerank import LanguageModel
from lmcli.scoring import SentenceScore

MAX_ITERATIONS = 500
TOLERANCE = 1e-9  # relative change of the dev log-likelihood that ends EM


def check_mixable(models: Sequence[LanguageModel]) -> None:
    """Interpolation token by token needs lmcli models of one vocabulary and one reading
    direction."""
    for lm in models:
        if not isinstance(lm, LanguageModel):
            raise LmcliError(f"{lm.name} is not an lmcli model: a mixture adds probabilities token by token; "
                             "rerank and score take it as a column of its own")
    first = models[0]
    for lm in models[1:]:
        if lm.tokenizer.tokens != first.tokenizer.tokens or lm.tokenizer.level != first.tokenizer.level:
            raise LmcliError(f"{lm.name} and {first.name} have different vocabularies: a mixture adds "
                             "probabilities token by token; rerank combines such models one weight each")
        if lm.model.config.direction != first.model.config.direction:
            raise LmcliError(f"{lm.name} and {first.name} read in different directions: a mixture adds "
                             "probabilities token by token; rerank combines such models one weight each")


def normalized(weights: Sequence[float], models: int) -> list[float]:
    """Weights as given (``--mix 3,1``), checked and scaled to sum to 1."""
    if len(weights) != models:
        raise SettingError(f"{{mix}} has {len(weights)} weight(s) for {models} model(s): give one per -c")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise SettingError("{mix} weights must be non-negative numbers, not all zero")
    total = sum(weights)
    return [w / total for w in weights]


def each_model(models: Sequence[LanguageModel], sentences: Iterable[str], *, eos: bool = True,
               per_token: bool = False, batch_size: int = 64, group_size: int = 4096
               ) -> Iterator[tuple[SentenceScore, ...]]:
    """Every model's score of each sentence, in input order; the sentences are read and
    scored ``group_size`` at a time (each model scores a group in its own batches)."""
    group: list[str] = []
    for sentence in [*sentences, None]:
        if sentence is not None:
            group.append(sentence)
            if len(group) < group_size:
                continue
        yield from zip(*(lm.scores(group, eos=eos, per_token=per_token, batch_size=batch_size) for lm in models))
        group = []


def token_logprobs(models: Sequence[LanguageModel], sentences: Iterable[str], *, eos: bool = True,
                   batch_size: int = 64) -> Iterator[tuple[SentenceScore, np.ndarray]]:
    """Each sentence's score by the first model, and its per-token log-probabilities under
    every model, (tokens, models)."""
    for results in each_model(models, sentences, eos=eos, per_token=True, batch_size=batch_size):
        yield results[0], np.array([r.token_logprobs for r in results], dtype=np.float64).T


def mix_logprobs(columns: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Per-token log-probabilities of the mixture: log sum_k lambda_k p_k."""
    with np.errstate(divide="ignore"):
        return np.logaddexp.reduce(columns + np.log(np.asarray(weights, dtype=np.float64)), axis=1)


@dataclass
class MixFit:
    weights: list[float]
    iterations: int
    dev_tokens: int
    dev_perplexity: float  # of the mixture with these weights
    model_perplexities: list[float]  # each model alone on the same tokens


def fit_weights(columns: np.ndarray) -> MixFit:
    """EM for the interpolation weights on the per-token log-probabilities of dev text
    (tokens, models), from equal weights."""
    tokens, models = columns.shape
    if tokens == 0:
        raise LmcliError("no dev tokens to fit the mixture on")
    weights = np.full(models, 1.0 / models)
    previous = -math.inf
    for iteration in range(1, MAX_ITERATIONS + 1):
        joint = columns + np.log(np.maximum(weights, 1e-300))
        total = np.logaddexp.reduce(joint, axis=1)
        likelihood = float(total.sum())
        weights = np.exp(joint - total[:, None]).mean(axis=0)
        if likelihood - previous <= TOLERANCE * abs(likelihood):
            break
        previous = likelihood
    mixed = float(mix_logprobs(columns, weights).sum())
    return MixFit([float(w) for w in weights], iteration, tokens, math.exp(-mixed / tokens),
                  [math.exp(-float(columns[:, k].sum()) / tokens) for k in range(models)])


def mixed_score(first: SentenceScore, columns: np.ndarray, weights: Sequence[float]) -> SentenceScore:
    """The mixture's score of a sentence, in the shape of one model's."""
    per_token = mix_logprobs(columns, weights)
    unk = np.array([i == 1 for i in first.token_ids[:len(per_token)]], dtype=bool)
    return SentenceScore(first.text, float(per_token.sum()), first.num_tokens, first.oov,
                         float(per_token[unk].sum()), first.token_ids, per_token.tolist(), first.scored_text)
