"""Rescoring speech-recognition N-best lists with the language model.

Each hypothesis gets ``total = am_score + lm_weight * lm_logprob + bonus * words``:
``am_score`` is the recogniser's log score (higher is better; Kaldi's costs are negated
with ``am_is_cost``), ``lm_logprob`` the natural-log sentence probability with ``<EOS>``
that ``lmcli score`` gives, and ``words`` the number of whitespace-separated words.

Three input formats:

- JSON lines: ``{"id": ..., "hyps": [{"text": ..., "am_score": ...}, ...], "ref": ...}``
  (``ref`` optional);
- TSV: ``id<TAB>am_score<TAB>text``, an utterance's hypotheses on consecutive lines;
- Kaldi N-best text: ``uttid-K word word ...`` lines with the scores in a second file of
  ``uttid-K score`` lines (K numbers the hypotheses; the utterance id is what precedes the
  last ``-``).

References for TSV and Kaldi input come from a Kaldi-style text file (``uttid words...``).
Word error rates are word-level Levenshtein distances over whitespace tokens (jiwer),
summed over utterances and divided by the reference words.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmcli.errors import LmcliError, SettingError, UsageError
from lmcli.model import RNNLM
from lmcli.scoring import score_sentences
from lmcli.text import chunk_lines, iter_chunks
from lmcli.tokenizers import Tokenizer

FORMATS = ("auto", "jsonl", "tsv", "kaldi")
Warn = Callable[[str], None]


@dataclass
class Hypothesis:
    text: str
    am_score: float
    lm_logprob: float = math.nan
    errors: int | None = None  # word errors against the reference, when there is one

    @property
    def num_words(self) -> int:
        return len(self.text.split())


@dataclass
class Utterance:
    id: str
    hyps: list[Hypothesis]
    ref: str | None = None

    @property
    def ref_words(self) -> int:
        return len(self.ref.split()) if self.ref is not None else 0


@dataclass
class Weights:
    lm_weight: float = 1.0
    bonus: float = 0.0

    def total(self, hyp: Hypothesis) -> float:
        return hyp.am_score + self.lm_weight * hyp.lm_logprob + self.bonus * hyp.num_words


# ----------------------------------------------------------------------------- reading


def _lines(path: str | Path | None, lines: Iterable[str] | None, encoding: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) from a file, streamed, or from given lines."""
    if lines is None:
        assert path is not None
        lines = (line for chunk in iter_chunks(path, encoding) for line in chunk_lines(chunk))
    for number, line in enumerate(lines, start=1):
        yield number, line.rstrip("\r\n")


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LmcliError(f"{where}: {what} must be a number, got {json.dumps(value)}")
    try:
        number = float(value)
    except ValueError:
        raise LmcliError(f"{where}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise LmcliError(f"{where}: {what} must be finite, got {value!r}")
    return number


class _Collector:
    """Gathers utterances, refusing (or, with skip_bad, dropping with a warning) bad ones."""

    def __init__(self, name: str, skip_bad: bool, warn: Warn) -> None:
        self.name = name
        self.skip_bad = skip_bad
        self.warn = warn
        self.utterances: list[Utterance] = []
        self.seen: set[str] = set()
        self.skipped = 0

    def problem(self, message: str) -> None:
        if not self.skip_bad:
            raise LmcliError(message + " (the skip_bad setting skips such utterances)")
        self.skipped += 1
        self.warn(message + "; skipped")

    def add(self, utterance: Utterance, where: str) -> None:
        if utterance.id in self.seen:
            self.problem(f"{where}: utterance {utterance.id!r} appears twice")
            return
        if not utterance.hyps:
            self.problem(f"{where}: utterance {utterance.id!r} has no hypotheses")
            return
        self.seen.add(utterance.id)
        self.utterances.append(utterance)


def read_jsonl(lines: Iterable[tuple[int, str]], name: str, *, am_is_cost: bool = False,
               skip_bad: bool = False, warn: Warn = lambda m: None) -> list[Utterance]:
    collect = _Collector(name, skip_bad, warn)
    for number, line in lines:
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise LmcliError(f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict) or "id" not in record:
            raise LmcliError(f'{where}: expected an object with "id" and "hyps"')
        uid = str(record["id"])
        hyps_field = record.get("hyps")
        if not isinstance(hyps_field, list):
            collect.problem(f'{where}: utterance {uid!r} has no "hyps" list')
            continue
        hyps: list[Hypothesis] = []
        bad = False
        for index, item in enumerate(hyps_field):
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise LmcliError(f'{where}: hypothesis {index + 1} of {uid!r} needs a "text" string')
            if item.get("am_score") is None:
                collect.problem(f'{where}: hypothesis {index + 1} of {uid!r} has no "am_score"')
                bad = True
                break
            score = _number(item["am_score"], where, "am_score")
            hyps.append(Hypothesis(item["text"], -score if am_is_cost else score))
        if bad:
            continue
        ref = record.get("ref")
        if ref is not None and not isinstance(ref, str):
            raise LmcliError(f'{where}: "ref" must be a string')
        collect.add(Utterance(uid, hyps, ref), where)
    return collect.utterances


def read_tsv(lines: Iterable[tuple[int, str]], name: str, *, am_is_cost: bool = False,
             skip_bad: bool = False, warn: Warn = lambda m: None) -> list[Utterance]:
    collect = _Collector(name, skip_bad, warn)
    current: Utterance | None = None
    first_line = 0
    bad = False

    def finish() -> None:
        if current is not None and not bad:
            collect.add(current, f"{name}:{first_line}")

    for number, line in lines:
        if not line.strip():
            continue
        where = f"{name}:{number}"
        parts = line.split("\t", 2)
        if len(parts) < 2:
            raise LmcliError(f"{where}: expected id<TAB>am_score<TAB>text, found no tab")
        uid = parts[0]
        if current is None or current.id != uid:
            finish()
            current, first_line, bad = Utterance(uid, []), number, False
        if bad:
            continue
        if not parts[1].strip():
            collect.problem(f"{where}: a hypothesis of {uid!r} has no am_score")
            bad = True
            continue
        score = _number(parts[1], where, "am_score")
        text = parts[2] if len(parts) == 3 else ""
        current.hyps.append(Hypothesis(text, -score if am_is_cost else score))
    finish()
    return collect.utterances


def _split_kaldi_key(key: str, where: str) -> tuple[str, int]:
    uid, dash, index = key.rpartition("-")
    if not dash or not uid or not index.isdigit():
        raise LmcliError(f"{where}: expected an N-best key like UTTID-1, got {key!r}")
    return uid, int(index)


def read_kaldi(text_lines: Iterable[tuple[int, str]], score_lines: Iterable[tuple[int, str]],
               text_name: str, score_name: str, *, am_is_cost: bool = False,
               skip_bad: bool = False, warn: Warn = lambda m: None) -> list[Utterance]:
    scores: dict[str, float] = {}
    for number, line in score_lines:
        if not line.strip():
            continue
        where = f"{score_name}:{number}"
        parts = line.split()
        if len(parts) != 2:
            raise LmcliError(f"{where}: expected 'UTTID-K score'")
        scores[parts[0]] = _number(parts[1], where, "score")
    collect = _Collector(text_name, skip_bad, warn)
    order: list[str] = []
    grouped: dict[str, list[tuple[int, Hypothesis, str]]] = {}
    missing: set[str] = set()
    for number, line in text_lines:
        if not line.strip():
            continue
        where = f"{text_name}:{number}"
        key, _, text = line.strip(" \t").partition(" ")
        key = key.split("\t")[0]
        uid, index = _split_kaldi_key(key, where)
        if key not in scores:
            missing.add(uid)
            collect.problem(f"{where}: {key} has no score in {score_name}")
            continue
        score = scores[key]
        if uid not in grouped:
            grouped[uid] = []
            order.append(uid)
        grouped[uid].append((index, Hypothesis(text.strip(), -score if am_is_cost else score), where))
    for uid in order:
        if uid in missing:
            continue
        items = sorted(grouped[uid], key=lambda item: item[0])
        collect.add(Utterance(uid, [hyp for _, hyp, _ in items]), items[0][2])
    return collect.utterances


def read_refs(path: str | Path, encoding: str = "utf-8") -> dict[str, str]:
    """Kaldi-style references: ``uttid word word ...`` per line."""
    refs: dict[str, str] = {}
    for number, line in _lines(path, None, encoding):
        if not line.strip():
            continue
        uid, _, text = line.strip(" \t").partition(" ")
        uid = uid.split("\t")[0]
        if uid in refs:
            raise LmcliError(f"{path}:{number}: reference for {uid!r} appears twice")
        refs[uid] = text.strip()
    return refs


def detect_format(first_line: str) -> str:
    stripped = first_line.strip()
    if stripped.startswith("{"):
        return "jsonl"
    if stripped.count("\t") >= 1 and len(stripped.split("\t")) >= 2:
        return "tsv"
    raise SettingError("cannot tell the N-best format from its first line; set {format}, or "
                       "give Kaldi N-best text its scores ({scores}, or {dev_scores} for a "
                       "{tune} list)")


@dataclass
class NbestSource:
    """Where an N-best list comes from and how to read it."""

    path: str | Path  # "-" for stdin
    format: str = "auto"
    scores: str | Path | None = None  # Kaldi: the uttid-K score file
    refs: str | Path | None = None  # references for TSV / Kaldi input
    am_is_cost: bool = False
    encoding: str = "utf-8"


def read_nbest(source: NbestSource, *, stdin: Iterable[str] | None = None, skip_bad: bool = False,
               warn: Warn = lambda m: None) -> list[Utterance]:
    """Read an N-best list in any of the three formats; attach references if given."""
    if source.format not in FORMATS:
        raise SettingError(f"{{format}} must be one of {', '.join(FORMATS)}, got {source.format!r}")
    name = "stdin" if str(source.path) == "-" else str(source.path)
    raw = list(stdin) if str(source.path) == "-" and stdin is not None else None
    if str(source.path) == "-" and raw is None:
        raise UsageError("reading the N-best list from stdin needs standard input")
    fmt = source.format
    if fmt == "auto":
        if source.scores is not None:
            fmt = "kaldi"
        else:
            first = next((line for _, line in _lines(source.path, raw, source.encoding) if line.strip()), None)
            if first is None:
                raise LmcliError(f"{name}: the N-best list is empty")
            fmt = detect_format(first)
    lines = _lines(source.path, raw, source.encoding)
    options = {"am_is_cost": source.am_is_cost, "skip_bad": skip_bad, "warn": warn}
    if fmt == "jsonl":
        utterances = read_jsonl(lines, name, **options)
    elif fmt == "tsv":
        utterances = read_tsv(lines, name, **options)
    else:
        if source.scores is None:
            raise SettingError("Kaldi N-best text needs its scores, lines 'UTTID-K score' "
                               "({scores}, or {dev_scores} for a {tune} list)")
        utterances = read_kaldi(lines, _lines(source.scores, None, source.encoding), name,
                                str(source.scores), **options)
    if not utterances:
        raise LmcliError(f"{name}: no utterances to rerank")
    if source.refs is not None:
        refs = read_refs(source.refs, source.encoding)
        for utterance in utterances:
            if utterance.id in refs:
                utterance.ref = refs[utterance.id]
    return utterances


# ----------------------------------------------------------------------------- scoring


@dataclass
class ScoringStats:
    hypotheses: int
    unique_texts: int


def attach_lm_scores(utterances: list[Utterance], model: RNNLM, tokenizer: Tokenizer, *,
                     batch_size: int = 128) -> ScoringStats:
    """Score every distinct hypothesis text once, in large length-sorted batches, with the
    checkpoint's own tokenization; the same numbers ``lmcli score`` gives."""
    texts = list(dict.fromkeys(h.text for u in utterances for h in u.hyps))
    logprobs = {text: result.logprob for text, result in
                zip(texts, score_sentences(model, tokenizer, texts, batch_size=batch_size))}
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
