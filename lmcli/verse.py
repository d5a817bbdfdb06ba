"""Verse forms for the sampler: shapes, acrostics and rhymes, guaranteed by masking.

A :class:`VersePlan` says what each line of a poem must look like: how many units (Chinese
characters, or words at word level), what ends it (a punctuation mark inside a one-poem-a-
line Chinese corpus, ``<EOS>`` at word level), which token starts it (acrostic) and which
rhyme letter its last unit carries. :class:`VerseConstraint` follows every sample of a
batch through its plan and gives, at each step, the tokens that keep it inside the form.
The sampler removes the others from the logits before temperature, top-k and top-p, so
every sample has the form by construction and the tokens left keep the model's
probability ratios.

Two layouts:

- ``cjk`` (character level, a vocabulary of ideographs with ，and 。): a poem is one corpus
  line; a verse line is a run of ideographs ended by a mark; ``<EOS>`` ends the poem.
- ``lines`` (word level; at character level only the acrostic): a verse line is a corpus
  line, ended by ``<EOS>``; a poem is several of them, the state carried across.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from lmcli import rhyme as rhymes
from lmcli.errors import SettingError, escape
from lmcli.forms import (CLASSICAL_SHAPES, COMMA, STOP, Form, free_form, layout_of, parse_form, parse_rhyme,
                         with_acrostic, with_scheme)
from lmcli.tokenizers import EOS_ID, UNK_ID, Tokenizer

# The longest line a sample may write when its length is free and its end is <EOS>.
FREE_CAP = {"word": 32, "char": 160}


# ----------------------------------------------------------------------------- plans


@dataclass
class VersePlan:
    """A form met with a vocabulary: token ids and masks, checked before sampling."""

    form: Form
    layout: str
    vocab_size: int
    content: torch.Tensor  # (vocab,) bool: what may stand inside a line
    ends: list[int]  # per line: the token that ends it
    heads: list[int | None]  # per line: the token it must start with
    letters: list[str | None]  # per line: rhyme letter (None: free)
    table: torch.Tensor | None = None  # (vocab, groups) bool: token ends a line rhyming in group
    viable: dict[str, torch.Tensor] = field(default_factory=dict)  # letter -> (groups,) bool
    free_cap: int = 0  # the longest free-length line (lines layout)
    tones: Tones | None = None  # level/oblique pattern of regulated verse
    same_word: dict[int, list[int]] = field(default_factory=dict)  # token -> tokens of its rhyme word
    first_rhymes: bool = False  # a free-length first line rhymes when it has 7 characters

    @functools.cached_property
    def table_f(self) -> torch.Tensor:
        assert self.table is not None
        return self.table.float()

    @property
    def fixed_count(self) -> int | None:
        return len(self.form.lines) or None

    def letter(self, line: int) -> str | None:
        if self.fixed_count:
            return self.letters[line]
        return "A" if self.table is not None and line % 2 == 1 else None

    def end_of(self, line: int) -> int:
        if self.fixed_count:
            return self.ends[line]
        return self.ends[line % 2]

    def max_tokens(self) -> int:
        """The most tokens a poem of this plan can take, <EOS> included."""
        count = self.fixed_count or max(self.form.counts)
        longest = max([spec.length or 0 for spec in self.form.lines] + list(self.form.lengths) + [0])
        return count * ((longest or self.free_cap) + 1) + 1

    @property
    def eos_lines(self) -> int:
        """How many <EOS> a sample writes: one per poem (cjk), one per line (lines)."""
        return 1 if self.layout == "cjk" else (self.fixed_count or 1)


def compile_plan(form: Form, tokenizer: Tokenizer, rhyme: tuple[str | None, str | None] | None,
                 tones: bool = False) -> VersePlan:
    """``form`` for ``tokenizer``'s vocabulary; a SettingError names what the vocabulary
    cannot do (a head it lacks, a mark it lacks, a rhyme with too few members)."""
    layout = layout_of(tokenizer)
    if rhyme is not None:
        form = with_scheme(form, rhyme[1])
    rhymed = [line.rhyme is not None for line in form.lines]  # end level, with --tones
    if rhyme is None:
        form = replace(form, lines=tuple(replace(line, rhyme=None) for line in form.lines))
    _check_layout(form, tokenizer, layout, rhyme)
    content = _content_mask(tokenizer, layout)
    index = {token: i for i, token in enumerate(tokenizer.tokens)}
    heads = [_head_id(line.head, index, tokenizer) for line in form.lines]
    if layout == "cjk":
        ends = [_mark_id(line.end, index, last=i == len(form.lines) - 1) for i, line in enumerate(form.lines)]
        if not form.lines:
            ends = [_mark_id(COMMA, index, False), _mark_id(STOP, index, True)]
    else:
        ends = [EOS_ID] * max(1, len(form.lines))
        form = replace(form, same_length=False)
    plan = VersePlan(form, layout, tokenizer.vocab_size, content, ends, heads,
                     [line.rhyme for line in form.lines], free_cap=FREE_CAP.get(tokenizer.level, 0))
    if rhyme is not None:
        _add_rhymes(plan, tokenizer, rhyme[0], rhyme[1])
    if tones:
        _add_tones(plan, tokenizer, rhymed)
    return plan


def _check_layout(form: Form, tokenizer: Tokenizer, layout: str, rhyme: object) -> None:
    if layout == "cjk":
        return
    if tokenizer.level in ("bpe", "unigram"):
        raise SettingError("{form}, {acrostic} and {rhyme} work with character-level Chinese "
                           "verse models and word-level models, not subword ones")
    if tokenizer.level == "char" and (rhyme is not None or any(line.length for line in form.lines)):
        raise SettingError("{form} and {rhyme} at character level need a Chinese verse vocabulary "
                           "(ideographs with ，and 。); for English, train a word-level model")
    if not form.lines:
        raise SettingError("this model's lines end with <EOS>: give the lines with {form} (word "
                           "counts), {acrostic} or a {rhyme} scheme such as ABAB")


def _content_mask(tokenizer: Tokenizer, layout: str) -> torch.Tensor:
    if layout == "cjk":
        mask = torch.tensor([rhymes.is_ideograph(t) for t in tokenizer.tokens], dtype=torch.bool)
    else:
        mask = torch.ones(tokenizer.vocab_size, dtype=torch.bool)
    mask[EOS_ID] = mask[UNK_ID] = False
    return mask


def _head_id(head: str | None, index: dict[str, int], tokenizer: Tokenizer) -> int | None:
    if head is None:
        return None
    token = tokenizer.normalize(head)
    if token not in index or index[token] in (EOS_ID, UNK_ID):
        raise SettingError(f"{{acrostic}}: {escape(head)!r} is not in the model's vocabulary, so no line can "
                           "start with it")
    return index[token]


def _mark_id(mark: str, index: dict[str, int], last: bool) -> int:
    """A tune's mark, or the nearest the vocabulary has (，inside, 。 at a full stop)."""
    if mark in index:
        return index[mark]
    fallback = STOP if last or mark in "。？！" else COMMA
    if fallback not in index:
        raise SettingError(f"{{form}}: the vocabulary has neither {mark} nor {fallback} to end a line")
    return index[fallback]


def _add_rhymes(plan: VersePlan, tokenizer: Tokenizer, book_name: str | None, scheme: str | None) -> None:
    name = book_name or ("pingshui" if plan.layout == "cjk" else "cmu")
    if (name == "cmu") != (plan.layout == "lines"):
        raise SettingError(f"{{rhyme}}: the {name} rhyme book does not fit this model's "
                           f"{'Chinese' if plan.layout == 'cjk' else 'non-Chinese'} vocabulary")
    book = rhymes.book(name)
    plan.table = rhymes.group_table(book, tokenizer.tokens, plan.content,
                                    level_only=plan.form.level_rhymes and name == "pingshui")
    # "LORD;" and "lord" are one word: it rhymes once, and a group counts its words.
    words: dict[str, list[int]] = {}
    for token_id in plan.table.any(1).nonzero()[:, 0].tolist():
        words.setdefault(book.key(tokenizer.tokens[token_id]), []).append(token_id)
    plan.same_word = {t: ids for ids in words.values() if len(ids) > 1 for t in ids}
    firsts = torch.tensor([ids[0] for ids in words.values()], dtype=torch.long)
    members = plan.table[firsts].sum(0) if len(firsts) else plan.table.sum(0)
    count = plan.fixed_count or max(plan.form.counts)
    first = plan.form.lines[0] if plan.form.lines else None
    plan.first_rhymes = plan.layout == "cjk" and not scheme and (first is None or not first.length)
    letters = ["A" if i == 0 and plan.first_rhymes else plan.letter(i) for i in range(count)]
    for letter in set(letters) - {None}:
        needed = letters.count(letter)
        plan.viable[letter] = members >= needed
        if not bool(plan.viable[letter].any()):
            raise SettingError(f"{{rhyme}}: no {name} rhyme group has {needed} members in this "
                               "model's vocabulary")


# ----------------------------------------------------------------------------- tones


@dataclass
class Tones:
    """The level (平) and oblique (仄) pattern of regulated verse, by the Pingshui table.

    Line i's second character sets its pattern: level or oblique there, the opposite at the
    fourth, the same again at the sixth; the last character is level where the line rhymes,
    oblique where it does not (the first, third and fifth are free: 一三五不論). Lines pair
    up (對: the second of a couplet is the opposite of the first) and stick together (粘:
    a couplet's first line follows the line before it), so line i is like line 1 when
    i mod 4 is 0 or 3 and opposite otherwise; line 1's second character, the model's
    choice, decides (平起 or 仄起)."""

    level: torch.Tensor  # (vocab,) bool: can be read in a level tone
    oblique: torch.Tensor  # (vocab,) bool: can be read in an oblique tone
    rhymed: list[bool]  # per line: it rhymes, so it ends level

    def second_tone(self, token: int) -> bool:
        return bool(self.level[token])

    def allowed(self, row: _Row, pos: int, length: int) -> torch.Tensor | bool:
        if pos == length - 1:
            return self.level if self.rhymed[row.line] else self.oblique
        if pos not in (1, 3, 5) or (pos == 5 and length != 7):
            return True
        tone = row.tone if row.line else (self.second_tone(row.units[1]) if pos > 1 else None)
        if tone is None:  # line 1's second character: one reading only, so it decides
            return self.level ^ self.oblique
        line_level = tone if row.line % 4 in (0, 3) else not tone
        wants_level = line_level if pos in (1, 5) else not line_level
        return self.level if wants_level else self.oblique


def _add_tones(plan: VersePlan, tokenizer: Tokenizer, rhymed: list[bool]) -> None:
    lengths = {line.length for line in plan.form.lines}
    regulated = plan.form.level_rhymes and plan.fixed_count and (lengths == {5} or lengths == {7})
    if plan.layout != "cjk" or not regulated:
        raise SettingError("{tones} needs a regulated form of Chinese verse: {form} 5x4, 7x4, 5x8 or 7x8")
    book = rhymes.pingshui()
    level = torch.zeros(plan.vocab_size, dtype=torch.bool)
    oblique = torch.zeros(plan.vocab_size, dtype=torch.bool)
    for token_id in plan.content.nonzero()[:, 0].tolist():
        for group in book.groups_of(tokenizer.tokens[token_id]):
            (level if book.level[group] else oblique)[token_id] = True
    plan.tones = Tones(level, oblique, rhymed)


# ----------------------------------------------------------------------------- decoding


@dataclass
class _Row:
    line: int = 0  # lines finished
    units: list[int] = field(default_factory=list)  # the current line's units so far
    length: int | None = None  # chosen by the first free-length line (same_length forms)
    groups: dict[str, torch.Tensor] = field(default_factory=dict)  # letter -> groups still open
    used: dict[str, set[int]] = field(default_factory=dict)  # letter -> its rhyme units (never twice)
    tone: bool | None = None  # whether line 1's second character is level (平起), once known
    done: bool = False


class VerseConstraint:
    """Follows ``rows`` samples through ``plan``: :meth:`allowed` before each step,
    :meth:`advance` with the tokens chosen."""

    def __init__(self, plan: VersePlan, rows: int) -> None:
        self.plan = plan
        self.rows = [_Row() for _ in range(rows)]
        self._all = torch.ones(plan.vocab_size, dtype=torch.bool)
        self._cache: dict[object, torch.Tensor] = {}

    def allowed(self) -> torch.Tensor:
        """(rows, vocab) bool: the tokens each sample may take next."""
        return torch.stack([self._allowed(row) for row in self.rows])

    def advance(self, token_ids: Sequence[int]) -> None:
        for row, token in zip(self.rows, token_ids):
            if not row.done:
                self._advance(row, int(token))

    def feed(self, token_ids: Sequence[int]) -> int | None:
        """Push the same tokens (a prime) through every row; the position of the first
        token the form does not allow, or None."""
        for position, token in enumerate(token_ids):
            if not bool(self._allowed(self.rows[0])[token]):
                return position
            self.advance([token] * len(self.rows))
        return None

    # -- one row

    def _line_length(self, row: _Row) -> int | None:
        plan = self.plan
        if plan.fixed_count and plan.form.lines[row.line].length:
            return plan.form.lines[row.line].length
        return row.length if plan.form.same_length else None

    def _allowed(self, row: _Row) -> torch.Tensor:
        plan = self.plan
        if row.done:
            return self._all
        if plan.fixed_count is not None and row.line >= plan.fixed_count:
            return self._only(EOS_ID)
        mask = self._inside(row)
        if not row.units and row.line and plan.layout == "cjk" and not plan.fixed_count:
            counts = [n for length, n in plan.form.shapes if length == row.length] or plan.form.counts
            if row.line in counts:  # a usual number of lines: the poem may end here
                mask = self._only(EOS_ID) if row.line >= max(counts) else mask | self._only(EOS_ID)
        return mask

    def _inside(self, row: _Row) -> torch.Tensor:
        plan = self.plan
        pos, length = len(row.units), self._line_length(row)
        letter = plan.letter(row.line)
        head = plan.heads[row.line] if plan.fixed_count else None
        if length is not None:
            if pos >= length:
                return self._only(plan.end_of(row.line))
            if pos == 0 and head is not None:
                return self._only(head)
            mask = self._rhymes(row, letter) if pos == length - 1 and letter else plan.content
            if plan.tones is not None:
                mask = mask & plan.tones.allowed(row, pos, length)
            return mask
        lengths = plan.form.lengths or range(1, plan.free_cap + 1)
        longest = max(lengths)
        last_letter = self._letter(row, longest)
        if pos == 0 and head is not None:
            mask = self._only(head)
        elif pos == longest - 1 and last_letter:
            mask = self._rhymes(row, last_letter)
        else:
            mask = plan.content if pos < longest else torch.zeros_like(self._all)
        if pos in lengths:
            letter = self._letter(row, pos)
            if not letter or bool(self._rhymes(row, letter)[row.units[-1]]):
                mask = mask | self._only(plan.end_of(row.line))
        return mask

    def _letter(self, row: _Row, length: int) -> str | None:
        """The rhyme letter of the current line if it has ``length`` units: a free first
        line of Chinese verse rhymes when it has seven characters, as in 7x4 and 7x8."""
        if row.line == 0 and self.plan.first_rhymes:
            return "A" if length == 7 else None
        return self.plan.letter(row.line)

    def _rhymes(self, row: _Row, letter: str) -> torch.Tensor:
        plan = self.plan
        assert plan.table is not None
        groups = self._open_groups(row, letter)
        key = (letter, groups.numpy().tobytes())
        mask = self._cache.get(key)
        if mask is None:  # a few distinct group sets per batch: each computed once
            mask = self._cache[key] = (plan.table_f @ groups.float()) > 0
        used = row.used.get(letter)
        if used:
            mask = mask.clone()
            mask[list(used)] = False
        return mask

    def _open_groups(self, row: _Row, letter: str) -> torch.Tensor:
        """The groups ``letter``'s next rhyme may be in: those its rhymes so far share, or
        for its first, any group with room for all its lines that no other letter holds
        (ABAB: B is another rhyme than A), where there is one."""
        if letter in row.groups:
            return row.groups[letter]
        viable = self.plan.viable[letter]
        if not row.groups:
            return viable
        taken = torch.stack(list(row.groups.values())).any(0)
        free = viable & ~taken
        return free if bool(free.any()) else viable

    def _only(self, token: int) -> torch.Tensor:
        mask = self._cache.get(token)
        if mask is None:
            mask = self._cache[token] = torch.zeros_like(self._all)
            mask[token] = True
        return mask

    def _advance(self, row: _Row, token: int) -> None:
        if self.plan.layout == "cjk":
            if token == EOS_ID:
                row.done = True
            elif not self.plan.content[token]:  # the mark that ends the line
                self._end_line(row)
            else:
                row.units.append(token)
        elif token == EOS_ID:
            self._end_line(row)
        else:
            row.units.append(token)

    def _end_line(self, row: _Row) -> None:
        plan = self.plan
        if plan.tones is not None and row.line == 0:
            row.tone = plan.tones.second_tone(row.units[1])
        letter = self._letter(row, len(row.units))
        if letter and row.units:
            last = row.units[-1]
            assert plan.table is not None
            row.groups[letter] = self._open_groups(row, letter) & plan.table[last]
            row.used.setdefault(letter, set()).update(plan.same_word.get(last, [last]))
        if row.length is None and plan.form.same_length:
            row.length = len(row.units)
        row.units = []
        row.line += 1
        if plan.layout == "lines" and row.line >= (plan.fixed_count or 1):
            row.done = True


_MARKS = "，。、？！；：,.;:?!"


def verse_lines(text: str, layout: str) -> list[str]:
    """A poem's lines for printing: after each mark (cjk), or its text lines."""
    if layout == "cjk":
        return [line for line in re.findall(f"[^{_MARKS}]*[{_MARKS}]+|[^{_MARKS}]+$", text) if line]
    return text.split("\n")


# ----------------------------------------------------------------------------- entry points


def build_plan(tokenizer: Tokenizer, *, form: str | None = None, acrostic: str | None = None,
               rhyme: str | None = None, tones: bool = False, shapes: Sequence[tuple[int, int]] = ()
               ) -> VersePlan | None:
    """The plan for ``lmcli generate``'s verse options (None when none is given). Without
    ``form``, or with ``auto``, a Chinese verse model writes one of its corpus's usual
    regular ``shapes`` ((line length, line count) pairs; the classical four when unknown);
    ``auto`` alone asks nothing of other models."""
    if form is None and acrostic is None and rhyme is None and not tones:
        return None
    layout = layout_of(tokenizer)
    rhyme_spec = parse_rhyme(rhyme)
    if form is not None and form.strip().lower() != "auto":
        chosen = parse_form(form)
    elif layout == "cjk":
        chosen = free_form(shapes or CLASSICAL_SHAPES)
    elif form is not None and acrostic is None and rhyme is None:
        return None  # auto: no verse shape known for this vocabulary
    else:
        chosen = Form()
    if acrostic is not None:
        heads = acrostic.split() if tokenizer.level == "word" else [c for c in acrostic if not c.isspace()]
        if not heads:
            raise SettingError("{acrostic} is empty")
        chosen = with_acrostic(chosen, heads)
    return compile_plan(chosen, tokenizer, rhyme_spec, tones)


