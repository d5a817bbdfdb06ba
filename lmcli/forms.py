"""Verse forms as the user names them, before they meet a vocabulary.

A :class:`Form` is a list of :class:`LineSpec` (length, the mark that ends the line, rhyme
letter, acrostic head), or, when the shape is left to the model, the line lengths and
counts it may choose from. ``5x4`` .. ``7x8`` are the regulated forms (絕句, 律詩) with
their rhyme lines; ``4,4,7,5,7`` any list of line lengths; a tune name (词牌) the shape of
:mod:`lmcli.tunes`. This module also reads a Chinese verse corpus's commonest shapes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from lmcli import rhyme as rhymes
from lmcli.errors import SettingError, escape
from lmcli.tokenizers import EOS_ID, UNK_ID, Tokenizer
from lmcli.tunes import Tune, find_tune

COMMA, STOP = "，", "。"
CLASSICAL_SHAPES = ((5, 4), (7, 4), (5, 8), (7, 8))  # 絕句 and 律詩 in five and seven
_REGULAR = re.compile(r"^(\d+)\s*[xX×*]\s*(\d+)$")
_LENGTHS = re.compile(r"^\d+(\s*,\s*\d+)+$|^\d+$")
_SCHEME = re.compile(r"^[A-Za-z\-]+$")


@dataclass(frozen=True)
class LineSpec:
    length: int | None = None  # units; None: the model's choice
    end: str = STOP  # the mark that ends it (cjk layout)
    rhyme: str | None = None  # scheme letter
    head: str | None = None  # the unit it starts with (acrostic)
    stanza_end: bool = False  # a stanza ends after it (printing only)


@dataclass(frozen=True)
class Form:
    """What the user asked for, before it meets a vocabulary."""

    lines: tuple[LineSpec, ...] = ()  # empty: the number of lines is the model's choice
    lengths: tuple[int, ...] = ()  # free-length lines: the lengths allowed
    counts: tuple[int, ...] = ()  # free number of lines: the counts allowed
    shapes: tuple[tuple[int, int], ...] = ()  # free shape: the (length, count) pairs allowed
    same_length: bool = True  # free-length lines all take the first line's length
    level_rhymes: bool = False  # regulated verse rhymes in level-tone groups only
    name: str = ""


def parse_form(text: str) -> Form:
    """``5x4``, ``7x8``, ``4,4,7,5,7`` or a tune (词牌) name."""
    text = text.strip()
    regular = _REGULAR.match(text)
    if regular:
        length, count = int(regular.group(1)), int(regular.group(2))
        return _regular_form(length, count, name=text)
    if _LENGTHS.match(text):
        lengths = [int(part) for part in text.split(",")]
        return _list_form(lengths, name=text)
    tune = find_tune(text)
    if tune is None:
        raise SettingError(f"{{form}}: {escape(text)!r} is neither a shape (5x4, 7x8, 4,4,7,5,7) nor a tune "
                           "in lmcli's table ({form} list shows them)")
    return _tune_form(tune)


def _mark(line: int, count: int) -> str:
    """，after odd lines and 。after even ones, as the regulated forms punctuate; 。 last."""
    return COMMA if line % 2 == 0 and line < count - 1 else STOP


def _check_lengths(lengths: Sequence[int]) -> None:
    if not lengths or len(lengths) > 64 or not all(1 <= n <= 64 for n in lengths):
        raise SettingError("{form}: line lengths go from 1 to 64, and a poem has 1 to 64 lines")


def _regular_form(length: int, count: int, name: str) -> Form:
    _check_lengths([length] * count)
    lines = tuple(LineSpec(length, _mark(i, count),
                           "A" if i % 2 == 1 or (i == 0 and length == 7) else None)
                  for i in range(count))
    return Form(lines=lines, level_rhymes=True, name=name)


def _list_form(lengths: Sequence[int], name: str) -> Form:
    _check_lengths(lengths)
    count = len(lengths)
    lines = tuple(LineSpec(n, _mark(i, count), "A" if i % 2 == 1 else None)
                  for i, n in enumerate(lengths))
    return Form(lines=lines, name=name)


def _tune_form(tune: Tune) -> Form:
    lines = tuple(LineSpec(line.length, line.mark, "A" if line.rhyme else None, stanza_end=line.stanza_end)
                  for line in tune.lines)
    return Form(lines=lines, name=tune.name)


def free_form(shapes: Sequence[tuple[int, int]], count: int | None = None) -> Form:
    """The corpus's usual regular shapes ((length, lines) pairs): line 1 picks the length,
    the others follow it; the poem ends at one of the usual counts (or after ``count``)."""
    lengths = tuple(sorted({length for length, _ in shapes}))
    counts = (count,) if count else tuple(sorted({lines for _, lines in shapes}))
    return Form(lengths=lengths, counts=counts, shapes=tuple(shapes), level_rhymes=True, name="usual shapes")


def with_scheme(form: Form, scheme: str | None) -> Form:
    """``scheme`` (letters, one per line; ``-`` or a letter used once: no rhyme) replaces the
    form's own rhyme positions; None keeps them."""
    if scheme is None:
        return form
    letters = [None if c == "-" or scheme.upper().count(c.upper()) < 2 else c.upper() for c in scheme]
    if form.lines:
        if len(letters) != len(form.lines):
            raise SettingError(f"{{rhyme}} {scheme} has {len(letters)} letters for a form of "
                               f"{len(form.lines)} lines")
        return replace(form, lines=tuple(replace(line, rhyme=letter) for line, letter in zip(form.lines, letters)))
    return replace(form, lines=tuple(LineSpec(None, _mark(i, len(letters)), letter)
                                     for i, letter in enumerate(letters)))


def with_acrostic(form: Form, heads: Sequence[str]) -> Form:
    if form.lines:
        if len(heads) != len(form.lines):
            raise SettingError(f"{{acrostic}} has {len(heads)} heads for a form of {len(form.lines)} "
                               "lines; give one per line")
        return replace(form, lines=tuple(replace(line, head=h) for line, h in zip(form.lines, heads)))
    count = len(heads)
    lines = tuple(LineSpec(None, _mark(i, count),
                           "A" if i % 2 == 1 and count > 1 else None, head=h) for i, h in enumerate(heads))
    return replace(form, lines=lines, counts=())


def parse_rhyme(value: str | None) -> tuple[str | None, str | None] | None:
    """``--rhyme`` as (book, scheme): ``auto`` / a book name / scheme letters / ``BOOK:SCHEME``."""
    if value is None:
        return None
    parts = [part.strip() for part in value.split(":")]
    book = parts[0].lower() if len(parts) == 2 else None
    scheme = parts[-1]
    if len(parts) > 2 or (book is not None and book not in rhymes.BOOKS):
        raise SettingError(f"{{rhyme}}: {escape(value)!r} is not BOOK:SCHEME with a book from "
                           f"{', '.join(rhymes.BOOKS)}")
    if scheme.lower() in rhymes.BOOKS and book is None:
        return scheme.lower(), None
    if scheme.lower() in ("", "auto"):
        return book, None
    if not _SCHEME.match(scheme):
        raise SettingError(f"{{rhyme}}: {escape(scheme)!r} is neither a rhyme book ({', '.join(rhymes.BOOKS)}) "
                           "nor a scheme such as AABB or ABAB")
    return book, scheme



# ----------------------------------------------------------------------------- corpora


def layout_of(tokenizer: Tokenizer) -> str:
    """``cjk`` when the vocabulary writes Chinese verse (ideographs, ，and 。), else ``lines``."""
    if tokenizer.level == "char":
        index = set(tokenizer.tokens)
        ideographs = sum(1 for t in tokenizer.tokens if rhymes.is_ideograph(t))
        if COMMA in index and STOP in index and ideographs * 2 > len(tokenizer.tokens):
            return "cjk"
    return "lines"


def corpus_shapes(train_ids: np.ndarray, tokenizer: Tokenizer, limit: int = 20_000_000, top: int = 32
                  ) -> list[list[object]]:
    """The commonest line shapes of a Chinese verse corpus (in its first ``limit`` tokens):
    ``[["5,5,5,5", count], ...]``, ideographs per verse line. Empty for other corpora."""
    if layout_of(tokenizer) != "cjk":
        return []
    is_unit = np.array([rhymes.is_ideograph(t) for t in tokenizer.tokens], dtype=bool)
    is_unit[UNK_ID] = True  # a rare character is still a character of the line
    ids = np.asarray(train_ids[:limit])
    breaks = np.flatnonzero(~is_unit[ids])  # marks and <EOS>
    before = np.cumsum(is_unit[ids])[breaks]
    runs = np.diff(np.concatenate([[0], before]))  # ideographs just before each break
    counts: dict[str, int] = {}
    lengths: list[str] = []
    for run, is_eos in zip(runs.tolist(), (ids[breaks] == EOS_ID).tolist()):
        if run:
            lengths.append(str(run))
        if is_eos:
            key = ",".join(lengths)
            counts[key] = counts.get(key, 0) + 1
            lengths = []
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [[shape, count] for shape, count in ranked]


def usual_shapes(profile: Sequence[Sequence[object]], share: float = 0.01) -> list[tuple[int, int]]:
    """The regular shapes (every line the same length) among ``profile`` that hold at least
    ``share`` of the counted lines: (line length, line count) pairs."""
    total = sum(int(count) for _, count in profile) or 1
    shapes = []
    for shape, count in profile:
        lengths = [int(n) for n in str(shape).split(",") if n]
        if lengths and len(set(lengths)) == 1 and int(count) >= share * total and len(lengths) > 1:
            shapes.append((lengths[0], len(lengths)))
    return shapes
