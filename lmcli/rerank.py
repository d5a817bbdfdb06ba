"""Rescoring speech-recognition N-best lists (read by :mod:`lmcli.nbest`) with the
language model.

Each hypothesis gets ``total = am_score + lm_weight * lm_logprob + bonus * words``:
``am_score`` is the recogniser's log score, ``lm_logprob`` the natural-log sentence
probability with ``<EOS>`` that ``lmcli score`` gives, and ``words`` the number of
whitespace-separated words. Word error rates are word-level Levenshtein distances over
whitespace tokens (jiwer), summed over utterances and divided by the reference words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmcli.errors import LmcliError
from lmcli.model import RNNLM
from lmcli.nbest import Hypothesis, NbestSource, Utterance, read_nbest  # noqa: F401  (rescoring's inputs)
from lmcli.scoring import Convert, score_sentences
from lmcli.tokenizers import Tokenizer


@dataclass
class Weights:
    lm_weight: float = 1.0
    bonus: float = 0.0

    def total(self, hyp: Hypothesis) -> float:
        return hyp.am_score + self.lm_weight * hyp.lm_logprob + self.bonus * hyp.num_words


# ----------------------------------------------------------------------------- reading


@dataclass
class ScoringStats:
    hypotheses: int
    unique_texts: int


def attach_lm_scores(utterances: list[Utterance], model: RNNLM, tokenizer: Tokenizer, *,
                     batch_size: int = 128, convert: Convert | None = None) -> ScoringStats:
    """Score every distinct hypothesis text once, in large length-sorted batches, with the
    checkpoint's own tokenization; the same numbers ``lmcli score`` gives (``convert``: into
    the model's Chinese script, as score does)."""
    texts = list(dict.fromkeys(h.text for u in utterances for h in u.hyps))
    scores = score_sentences(model, tokenizer, texts, batch_size=batch_size, convert=convert)
    logprobs = {text: result.logprob for text, result in zip(texts, scores)}
    count = 0
    for utterance in utterances:
        for hyp in utterance.hyps:
            hyp.lm_logprob = logprobs[hyp.text]
            count += 1
    return ScoringStats(count, len(texts))


# ----------------------------------------------------------------------------- errors


def word_errors(ref: str, hyp: str) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions) over
    whitespace tokens, computed by jiwer."""
    import jiwer

    ref_words, hyp_words = ref.split(), hyp.split()
    if not ref_words or not hyp_words:
        return max(len(ref_words), len(hyp_words))
    out = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
    return int(out.substitutions + out.deletions + out.insertions)


def attach_errors(utterances: list[Utterance]) -> None:
    for utterance in utterances:
        if utterance.ref is not None:
            for hyp in utterance.hyps:
                hyp.errors = word_errors(utterance.ref, hyp.text)


@dataclass
class _Matrix:
    """Utterances with references as padded arrays (utterances x hypotheses), so a pair of
    weights is judged with a few vectorised operations."""

    am: np.ndarray
    lm: np.ndarray
    words: np.ndarray
    errors: np.ndarray
    valid: np.ndarray
    ref_words: int

    @classmethod
    def of(cls, utterances: list[Utterance]) -> _Matrix:
        scored = [u for u in utterances if u.ref is not None]
        if not scored:
            raise LmcliError("no utterance has a reference: word error rates need them")
        width = max(len(u.hyps) for u in scored)
        shape = (len(scored), width)
        am, lm, words, errors = (np.zeros(shape) for _ in range(4))
        valid = np.zeros(shape, dtype=bool)
        for row, u in enumerate(scored):
            for col, h in enumerate(u.hyps):
                am[row, col], lm[row, col], words[row, col] = h.am_score, h.lm_logprob, h.num_words
                errors[row, col] = h.errors if h.errors is not None else word_errors(u.ref or "", h.text)
                valid[row, col] = True
        return cls(am, lm, words, errors, valid, sum(u.ref_words for u in scored))

    def errors_at(self, lm_weight: np.ndarray, bonus: np.ndarray) -> np.ndarray:
        """Total word errors of the chosen hypotheses for each (weight, bonus) pair."""
        total = (self.am[None] + lm_weight[:, None, None] * self.lm[None]
                 + bonus[:, None, None] * self.words[None])  # (pairs, utterances, hyps)
        total = np.where(self.valid[None], total, -np.inf)
        best = total.argmax(axis=2)
        return np.take_along_axis(self.errors[None], best[..., None], axis=2)[..., 0].sum(axis=1)

    def wer(self, errors: float) -> float:
        return errors / self.ref_words if self.ref_words else math.nan


@dataclass
class WerReport:
    utterances: int
    ref_words: int
    wer_am: float  # the recogniser's own 1-best (highest am_score)
    wer_rescored: float
    wer_oracle: float  # the best hypothesis in each list
    weights: Weights


def wer_report(utterances: list[Utterance], weights: Weights) -> WerReport:
    matrix = _Matrix.of(utterances)
    am_only = matrix.errors_at(np.array([0.0]), np.array([0.0]))[0]
    rescored = matrix.errors_at(np.array([weights.lm_weight]), np.array([weights.bonus]))[0]
    oracle = np.where(matrix.valid, matrix.errors, np.inf).min(axis=1).sum()
    return WerReport(len(matrix.am), matrix.ref_words, matrix.wer(am_only), matrix.wer(rescored),
                     matrix.wer(oracle), weights)


@dataclass
class TuneResult:
    weights: Weights
    wer_before: float
    wer_after: float
    grid_points: int


def _spread(values: np.ndarray, valid: np.ndarray) -> float:
    """Median over utterances of (max - min) among their hypotheses."""
    high = np.where(valid, values, -np.inf).max(axis=1)
    low = np.where(valid, values, np.inf).min(axis=1)
    spread = high - low
    spread = spread[np.isfinite(spread) & (spread > 0)]
    return float(np.median(spread)) if len(spread) else 1.0


def tune(utterances: list[Utterance]) -> TuneResult:
    """Grid-search lm_weight and bonus to minimise WER on utterances with references,
    coarse then fine.

    The grid is scaled to the data, by the median spread (max - min) of a score within an
    N-best list. The LM weight runs over 0 and 1/64 to 64 times the ratio of the acoustic
    to the LM spread. For each weight the bonus per word runs over +-half the combined
    score's spread (the acoustic spread plus the weight times the LM spread), then over a
    tenth of that around the best coarse point. Ties go to the smaller |bonus|, then the
    smaller weight: the least intervention that reaches the lowest error.
    """
    matrix = _Matrix.of(utterances)
    am_spread = _spread(matrix.am, matrix.valid)
    lm_spread = _spread(matrix.lm, matrix.valid)
    unit = am_spread / lm_spread

    def bonuses(weight: float, width: float, count: int, center: float = 0.0) -> np.ndarray:
        return center + (am_spread + weight * lm_spread) * np.linspace(-width, width, count)

    def search(pairs: list[tuple[float, float]]) -> tuple[float, float, float]:
        w = np.array([p[0] for p in pairs])
        b = np.array([p[1] for p in pairs])
        errors = np.concatenate([matrix.errors_at(w[i:i + 128], b[i:i + 128])
                                 for i in range(0, len(w), 128)])
        best = np.lexsort((w, np.abs(b), errors))[0]
        return float(w[best]), float(b[best]), float(errors[best])

    coarse = [(w, b) for w in np.concatenate([[0.0], unit * 2.0 ** np.arange(-6, 6.01, 0.5)])
              for b in bonuses(w, 0.5, 21)]
    w0, b0, _ = search(coarse)
    around = (w0 if w0 > 0 else unit / 64) * 2.0 ** np.linspace(-0.5, 0.5, 11)
    fine = coarse + [(w, b) for w in np.concatenate([[w0], around])
                     for b in bonuses(w, 0.05, 21, center=b0)]
    w1, b1, errors = search(fine)
    before = matrix.errors_at(np.array([0.0]), np.array([0.0]))[0]
    return TuneResult(Weights(w1, b1), matrix.wer(before), matrix.wer(errors), len(fine))


# ----------------------------------------------------------------------------- output


def ranked(utterance: Utterance, weights: Weights) -> dict[str, Any]:
    """The output record: hypotheses sorted best first (ties keep the input order)."""
    scored = [(weights.total(h), i, h) for i, h in enumerate(utterance.hyps)]
    scored.sort(key=lambda item: (-item[0], item[1]))
    return {
        "id": utterance.id,
        "best": scored[0][2].text,
        "hyps": [{"text": h.text, "am_score": h.am_score, "lm_logprob": h.lm_logprob, "total": total}
                 for total, _, h in scored],
    }
