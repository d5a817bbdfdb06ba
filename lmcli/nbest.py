"""Reading speech-recognition N-best lists: the hypotheses of each utterance, with the
recogniser's scores and, where given, the reference.

Three input formats:

- JSON lines: ``{"id": ..., "hyps": [{"text": ..., "am_score": ...}, ...], "ref": ...}``
  (``ref`` optional);
- TSV: ``id<TAB>am_score<TAB>text``, an utterance's hypotheses on consecutive lines;
- Kaldi N-best text: ``uttid-K word word ...`` lines with the scores in a second file of
  ``uttid-K score`` lines (K numbers the hypotheses; the utterance id is what precedes the
  last ``-``).

References for TSV and Kaldi input come from a Kaldi-style text file (``uttid words...``).
``am_score`` is the recogniser's log score (higher is better; Kaldi's costs are negated
with ``am_is_cost``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmcli.errors import LmcliError, SettingError, UsageError
from lmcli.text import chunk_lines, iter_chunks

FORMATS = ("auto", "jsonl", "tsv", "kaldi")
Warn = Callable[[str], None]


@dataclass
class Hypothesis:
    text: str
    am_score: float
    lm_logprobs: list[float] = field(default_factory=list)  # one per language model, in order
    word_errors: int | None = None  # against the reference, when there is one
    char_errors: int | None = None

    @property
    def num_words(self) -> int:
        return len(self.text.split())

    @property
    def num_chars(self) -> int:
        """Characters, whitespace left out (as character error rates count them)."""
        return len("".join(self.text.split()))


@dataclass
class Utterance:
    id: str
    hyps: list[Hypothesis]
    ref: str | None = None

    @property
    def ref_words(self) -> int:
        return len(self.ref.split()) if self.ref is not None else 0

    @property
    def ref_chars(self) -> int:
        return len("".join(self.ref.split())) if self.ref is not None else 0


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
