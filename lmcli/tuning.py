"""Error rates of rescored N-best lists, and the weights that minimise them on a dev set.

A hypothesis's total is ``am_score + sum_k w_k * lm_logprob_k + bonus * units``: one weight
per language model, and a bonus per unit of the metric: per word for the word error rate
(WER), per character for the character error rate (CER). WER is the word-level
Levenshtein distance over whitespace tokens; CER the character-level one over the text with
all whitespace removed (as Chinese and Japanese recognisers are judged); both summed over
utterances and divided by the reference's words or characters (Levenshtein distances, by
rapidfuzz: the numbers jiwer gives, without its alignment bookkeeping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lmcli.errors import LmcliError
from lmcli.nbest import Hypothesis, Utterance

METRICS = ("wer", "cer")


@dataclass
class Weights:
    lm_weights: list[float] = field(default_factory=lambda: [1.0])  # one per model
    bonus: float = 0.0

    def total(self, hyp: Hypothesis, metric: str = "wer") -> float:
        lm = sum(w * lp for w, lp in zip(self.lm_weights, hyp.lm_logprobs, strict=True))
        return hyp.am_score + lm + self.bonus * units(hyp, metric)

    def flags(self) -> str:
        """The command-line flags that give these weights again."""
        return " ".join([*(f"--lm-weight {w:.6g}" for w in self.lm_weights), f"--bonus {self.bonus:.6g}"])


def units(hyp: Hypothesis, metric: str) -> int:
    """What the bonus is paid per: words (WER) or characters (CER)."""
    return hyp.num_chars if metric == "cer" else hyp.num_words


# ----------------------------------------------------------------------------- errors


def word_errors(ref: str, hyp: str) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions) over
    whitespace tokens."""
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(ref.split(), hyp.split()))


def char_errors(ref: str, hyp: str) -> int:
    """Character-level Levenshtein distance over the texts without whitespace."""
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance("".join(ref.split()), "".join(hyp.split())))


def attach_errors(utterances: list[Utterance]) -> None:
    """Word and character errors of every hypothesis of the utterances with references."""
    for utterance in utterances:
        if utterance.ref is not None:
            for hyp in utterance.hyps:
                hyp.word_errors = word_errors(utterance.ref, hyp.text)
                hyp.char_errors = char_errors(utterance.ref, hyp.text)


@dataclass
class _Matrix:
    """The utterances with references as padded arrays (utterances x hypotheses, and a
    last axis of models for the LM scores), so many weight vectors are judged at once."""

    am: np.ndarray
    lm: np.ndarray
    units: np.ndarray
    errors: dict[str, np.ndarray]
    valid: np.ndarray
    ref_units: dict[str, int]

    @classmethod
    def of(cls, utterances: list[Utterance], metric: str) -> _Matrix:
        scored = [u for u in utterances if u.ref is not None]
        if not scored:
            raise LmcliError("no utterance has a reference: error rates need them")
        attach_errors([u for u in scored if any(h.word_errors is None for h in u.hyps)])
        models = len(scored[0].hyps[0].lm_logprobs)
        shape = (len(scored), max(len(u.hyps) for u in scored))
        am, counts, words, chars = (np.zeros(shape) for _ in range(4))
        lm = np.zeros((*shape, models))
        valid = np.zeros(shape, dtype=bool)
        for row, u in enumerate(scored):
            for col, h in enumerate(u.hyps):
                am[row, col], lm[row, col], counts[row, col] = h.am_score, h.lm_logprobs, units(h, metric)
                words[row, col], chars[row, col] = h.word_errors, h.char_errors
                valid[row, col] = True
        return cls(am, lm, counts, {"wer": words, "cer": chars}, valid,
                   {"wer": sum(u.ref_words for u in scored), "cer": sum(u.ref_chars for u in scored)})

    def choices(self, lm_weights: np.ndarray, bonus: np.ndarray) -> np.ndarray:
        """The chosen hypothesis of every utterance, for each (weights (P, K), bonus (P,))."""
        total = (self.am[None] + np.einsum("pk,uhk->puh", lm_weights, self.lm)
                 + bonus[:, None, None] * self.units[None])  # (points, utterances, hyps)
        return np.where(self.valid[None], total, -np.inf).argmax(axis=2)

    def errors_at(self, lm_weights: np.ndarray, bonus: np.ndarray, metric: str) -> np.ndarray:
        """Total errors of the chosen hypotheses, for each point, in batches."""
        out = []
        for start in range(0, len(bonus), 64):
            best = self.choices(lm_weights[start:start + 64], bonus[start:start + 64])
            out.append(np.take_along_axis(self.errors[metric][None], best[..., None], axis=2)[..., 0].sum(axis=1))
        return np.concatenate(out)

    def rate(self, errors: float, metric: str) -> float:
        return errors / self.ref_units[metric] if self.ref_units[metric] else math.nan


@dataclass
class ErrorReport:
    utterances: int
    ref_words: int
    ref_chars: int
    am: dict[str, float]  # the recogniser's own 1-best (highest am_score): {"wer", "cer"}
    rescored: dict[str, float]
    oracle: dict[str, float]  # the best hypothesis of each list, by each metric
    weights: Weights
    metric: str  # what the bonus is paid per, and tuning minimised


def error_report(utterances: list[Utterance], weights: Weights, metric: str = "wer") -> ErrorReport:
    matrix = _Matrix.of(utterances, metric)
    zero = np.zeros((1, matrix.lm.shape[2]))
    rates: dict[str, dict[str, float]] = {"am": {}, "rescored": {}, "oracle": {}}
    for kind in METRICS:
        rates["am"][kind] = matrix.rate(matrix.errors_at(zero, np.zeros(1), kind)[0], kind)
        rates["rescored"][kind] = matrix.rate(matrix.errors_at(
            np.array([weights.lm_weights]), np.array([weights.bonus]), kind)[0], kind)
        oracle = np.where(matrix.valid, matrix.errors[kind], np.inf).min(axis=1).sum()
        rates["oracle"][kind] = matrix.rate(oracle, kind)
    return ErrorReport(len(matrix.am), matrix.ref_units["wer"], matrix.ref_units["cer"], rates["am"],
                       rates["rescored"], rates["oracle"], weights, metric)


# ----------------------------------------------------------------------------- tuning


@dataclass
class TuneResult:
    weights: Weights
    error_start: float  # the untuned start: every LM weight 1, no bonus
    error_after: float
    points: int  # weight vectors tried
    metric: str


def _spread(values: np.ndarray, valid: np.ndarray) -> float:
    """Median over utterances of (max - min) among their hypotheses."""
    high = np.where(valid, values, -np.inf).max(axis=1)
    low = np.where(valid, values, np.inf).min(axis=1)
    spread = high - low
    spread = spread[np.isfinite(spread) & (spread > 0)]
    return float(np.median(spread)) if len(spread) else 1.0


class _Search:
    """Weight vectors judged on the dev matrix; the best seen so far. A batch's ties go to
    the smaller |bonus|, then the smaller weights (the least intervention that reaches the
    lowest error); a later batch replaces the best only for a strict gain, so the start,
    judged first, is left only for a point that does better."""

    def __init__(self, matrix: _Matrix, metric: str) -> None:
        self.matrix, self.metric = matrix, metric
        self.am_spread = _spread(matrix.am, matrix.valid)
        self.points = 0
        self.best: tuple[float, np.ndarray, float] | None = None

    def lm_spread(self, weights: np.ndarray) -> float:
        return _spread(self.matrix.lm @ weights, self.matrix.valid)

    def bonuses(self, weights: np.ndarray, width: float, count: int, center: float = 0.0) -> np.ndarray:
        """Bonuses over +-width times the combined score's spread around ``center``."""
        scale = self.am_spread + self.lm_spread(weights)
        return center + scale * np.linspace(-width, width, count)

    def judge(self, candidates: list[tuple[np.ndarray, float]]) -> None:
        weights = np.array([c[0] for c in candidates])
        bonus = np.array([c[1] for c in candidates])
        errors = self.matrix.errors_at(weights, bonus, self.metric)
        self.points += len(candidates)
        first = int(np.lexsort((weights.sum(axis=1), np.abs(bonus), errors))[0])
        if self.best is None or errors[first] < self.best[0]:
            self.best = (float(errors[first]), weights[first], float(bonus[first]))


def tune(utterances: list[Utterance], metric: str = "wer") -> TuneResult:
    """The LM weights and bonus that minimise the error rate on utterances with references.

    The untuned start (each weight 1, no bonus) is judged first and is kept unless a point
    does strictly better. Then a grid along the models' summed score: a common weight over 0
    and 1/64 to 64 times the ratio of the acoustic to the LM spread (the median range of a
    score within a list), each with bonuses over +-half the combined spread, coarse then
    fine around the best. With several models, rounds of coordinate search follow: each
    weight in turn over 1/4 to 4 times its value (and 0), with bonuses around the current
    one, until a round changes nothing. One model is the grid alone.
    """
    matrix = _Matrix.of(utterances, metric)
    models = matrix.lm.shape[2]
    search = _Search(matrix, metric)
    start = np.ones(models)
    search.judge([(start, 0.0)])
    unit = search.am_spread / search.lm_spread(start)
    common = np.concatenate([[0.0], unit * 2.0 ** np.arange(-6, 6.01, 0.5)])
    search.judge([(w * start, b) for w in common for b in search.bonuses(w * start, 0.5, 21)])
    assert search.best is not None
    w0 = float(search.best[1][0]) if models == 1 else float(search.best[1].mean())
    around = (w0 if w0 > 0 else unit / 64) * 2.0 ** np.linspace(-0.5, 0.5, 11)
    b0 = search.best[2]
    search.judge([(w * start, b) for w in around for b in search.bonuses(w * start, 0.05, 21, center=b0)])
    for _ in range(8 if models > 1 else 0):
        before = search.best[0]
        for k in range(models):
            current, bonus = search.best[1].copy(), search.best[2]
            base = current[k] if current[k] > 0 else unit / 8
            candidates = []
            for value in np.concatenate([[0.0], base * 2.0 ** np.linspace(-2, 2, 17)]):
                weights = current.copy()
                weights[k] = value
                candidates += [(weights, b) for b in search.bonuses(weights, 0.1, 11, center=bonus)]
            search.judge(candidates)
        if search.best[0] >= before:
            break
    errors, weights, bonus = search.best
    start_errors = matrix.errors_at(start[None], np.zeros(1), metric)[0]
    return TuneResult(Weights([float(w) for w in weights], bonus), matrix.rate(start_errors, metric),
                      matrix.rate(errors, metric), search.points, metric)
