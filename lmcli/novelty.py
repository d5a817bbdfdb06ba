"""Novelty: whether a sample copies the training text, answered from the run folder alone.

Training writes ``RUN/novelty.npz``: the hashes of every run of ``span`` consecutive units
of the training text, and of every verse line in it. ``generate --novel`` redraws a sample
that shares a run or a whole line with it, and ``--json`` reports the longest shared run.

Units are the training token ids, with two exceptions. At char level punctuation and
whitespace tokens (Unicode categories P* and Z*, and whitespace) are separators: they are
dropped before runs are formed, so a copied run is found across a comma, whatever
punctuation the sample puts there. ``<EOS>`` ends a line and ``<UNK>`` stands for text
nobody knows: no run crosses either, and no line holding an ``<UNK>`` is stored.

A verse line is a whole corpus line and, at char level, each stretch between separators;
either counts when it has at least :data:`MIN_LINE_UNITS` units.

Hashes are polynomial over the ids (+1, so id 0 still counts), wrapping mod 2**64 and
computed from prefix sums, so every run and line of a token array is hashed in a few numpy
passes: h(u_a .. u_{b-1}) = sum_k (u_{a+k} + 1) * B**k. The file holds them as sorted,
unique uint64 arrays; a lookup is a binary search.
"""

from __future__ import annotations

import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmcli.checkpoint import atomic_write
from lmcli.errors import InputError
from lmcli.tokencache import tokenizer_fingerprint
from lmcli.tokenizers import EOS_ID, UNK_ID, Tokenizer
from lmcli.units import format_count

if TYPE_CHECKING:
    from lmcli.corpus import CorpusData, DataEvent

INDEX = "novelty.npz"
INDEX_VERSION = 1
MIN_LINE_UNITS = 5
"""The shortest verse line: the five characters of a 五言 line. Shorter stretches between
commas (a name, an exclamation, 君不見) recur all over any large text: finding one in the
training text says nothing about copying."""
MAX_INDEX_TOKENS = 200_000_000
"""Training streams longer than this are not indexed: up to 8 bytes of hashes a token, and
sorting them takes twice that, on top of the trainer's own memory (figures in
benchmarks/quality/FINDINGS.md)."""
_CHUNK = 1 << 20  # tokens hashed at once while building: bounds the arrays in flight
HASH_BASE = 0x9E3779B97F4A7C15  # odd, so invertible mod 2**64: a run's hash needs B**-a
_BASE_INVERSE = pow(HASH_BASE, -1, 2**64)
UNIT, SEPARATOR, END, UNKNOWN = 0, 1, 2, 3  # what a token is to novelty


def span_for(level: str) -> int:
    """The run length, in units, that counts as copying at ``level``: 8 characters at char
    level (one more than a 七言 line: a run that long reaches across a break between verse
    lines, and whole lines are the line check's), 6 words at word level.

    Subwords (bpe, unigram) take 8 pieces, which is about the other two levels' spans in
    both kinds of text lmcli ships: English comes to a little over one piece per word at
    the vocabulary sizes lmcli trains, so 8 pieces are about 6 words; Chinese pieces are
    mostly single characters (punctuation a piece of its own), so 8 pieces are about 8
    characters (figures in benchmarks/quality/FINDINGS.md)."""
    return {"char": 8, "word": 6}.get(level, 8)


def is_separator(token: str) -> bool:
    """Whether a char-level token is punctuation or space: not part of a run."""
    return len(token) == 1 and (token.isspace() or unicodedata.category(token)[0] in "PZ")


def token_kinds(tokenizer: Tokenizer) -> np.ndarray:
    """For each id, what it is to novelty: UNIT, SEPARATOR, END (<EOS>) or UNKNOWN (<UNK>)."""
    kinds = np.full(tokenizer.vocab_size, UNIT, dtype=np.uint8)
    if tokenizer.level == "char":
        for i, token in enumerate(tokenizer.tokens):
            if is_separator(token):
                kinds[i] = SEPARATOR
    kinds[EOS_ID], kinds[UNK_ID] = END, UNKNOWN
    return kinds


def index_for_checkpoint(checkpoint_path: Path) -> Path:
    """Where a checkpoint's novelty index lives: in its run folder, beside best.pt and last.pt
    (a run folder itself is taken as it is)."""
    path = Path(checkpoint_path)
    return (path if path.is_dir() else path.parent) / INDEX


@dataclass(frozen=True)
class Copied:
    """What one sample shares with the training text.

    ``length`` is the longest run of consecutive units of the sample all of whose
    ``span``-unit runs are in the training text (they may come from different places in
    it), or 0 when none is: shorter shared runs are not tracked, so ``length`` is 0 or at
    least the span. ``text`` is that run as the tokenizer decodes it (separators inside it
    included); ``line`` the first verse line of the sample found whole in the training
    text, or None."""

    length: int
    text: str
    line: str | None

    @property
    def found(self) -> bool:
        """Whether the sample copies: a whole line, or a run of at least the span."""
        return self.line is not None or self.length > 0

    def to_dict(self) -> dict[str, object]:
        return {"length": self.length, "text": self.text, "line": self.line}


def _powers(base: int, count: int) -> np.ndarray:
    """base**0 .. base**(count-1) mod 2**64."""
    powers = np.full(count, base, dtype=np.uint64)
    if count:
        powers[0] = 1
        np.cumprod(powers, out=powers)
    return powers


@dataclass(frozen=True)
class _Units:
    """The units of a token sequence (separators dropped), each with where it stands."""

    codes: np.ndarray  # (n,) uint64: id + 1 of each unit or <UNK>
    positions: np.ndarray  # (n,) its index in the token sequence
    line: np.ndarray  # (n,) its line: the <EOS> count before it
    segment: np.ndarray  # (n,) its stretch between separators or <EOS>
    unknown: np.ndarray  # (n + 1,) how many <UNK> come before each unit, and in all

    @classmethod
    def of(cls, tokens: np.ndarray, kinds: np.ndarray) -> _Units:
        kind = kinds[tokens]
        ends = kind == END
        positions = np.flatnonzero((kind == UNIT) | (kind == UNKNOWN))
        unknown = np.zeros(len(positions) + 1, dtype=np.int64)
        np.cumsum(kind[positions] == UNKNOWN, out=unknown[1:])
        return cls(tokens[positions].astype(np.uint64) + np.uint64(1), positions,
                   np.cumsum(ends)[positions], np.cumsum(ends | (kind == SEPARATOR))[positions],
                   unknown)

    def hasher(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """hash(starts, ends): the hashes of the unit runs [start, end)."""
        count = len(self.codes)
        prefix = np.zeros(count + 1, dtype=np.uint64)
        np.cumsum(self.codes * _powers(HASH_BASE, count), out=prefix[1:])
        inverse = _powers(_BASE_INVERSE, count)
        return lambda starts, ends: (prefix[ends] - prefix[starts]) * inverse[starts]

    def windows(self, span: int) -> np.ndarray:
        """(n - span + 1,) bool: whether the run of ``span`` units starting at each unit
        stays in one line and holds no <UNK>."""
        starts = np.arange(max(0, len(self.codes) - span + 1))
        return ((self.line[starts] == self.line[starts + span - 1])
                & (self.unknown[starts + span] == self.unknown[starts]))

    def lines(self, segments: bool) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of the verse lines: the whole lines and, with ``segments``, the
        stretches between separators, at least MIN_LINE_UNITS long and without <UNK>."""
        groups = [self.line, self.segment] if segments else [self.line]
        starts, ends = [], []
        for group in groups:
            change = np.flatnonzero(np.diff(group)) + 1
            starts.append(np.concatenate(([0], change)) if len(group) else change)
            ends.append(np.concatenate((change, [len(group)])) if len(group) else change)
        start, end = np.concatenate(starts), np.concatenate(ends)
        keep = (end - start >= MIN_LINE_UNITS) & (self.unknown[end] == self.unknown[start])
        return start[keep], end[keep]


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique of a scratch array, sorted in place: numpy's hash-based unique is many
    times slower on random 64-bit values, and a copy would double the peak memory."""
    values.sort()
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _union(parts: list[np.ndarray]) -> np.ndarray:
    """The sorted unique values of some arrays, which it empties (one copy in memory)."""
    values = np.concatenate([np.zeros(0, dtype=np.uint64), *parts])
    parts.clear()
    return _sorted_unique(values)


def member(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each value is in the sorted array ``table``."""
    if not len(table):
        return np.zeros(len(values), dtype=bool)
    where = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return table[where] == values


def _longest_true(mask: np.ndarray) -> tuple[int, int]:
    """(start, length) of the first longest stretch of True in ``mask``; (0, 0) if none."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return 0, 0
    best = int(np.argmax(ends - starts))
    return int(starts[best]), int(ends[best] - starts[best])


def _line_chunks(ids: np.ndarray, size: int = _CHUNK) -> Iterator[np.ndarray]:
    """Pieces of about ``size`` tokens of a token stream, each cut just after an <EOS>."""
    line_ends = np.flatnonzero(ids == EOS_ID) + 1
    start = 0
    while start < len(ids):
        after = np.searchsorted(line_ends, start + size)
        cut = int(line_ends[after]) if after < len(line_ends) else len(ids)
        yield np.asarray(ids[start:cut])
        start = cut


def _missing(path: Path) -> InputError:
    return InputError(f"{path.parent} has no novelty index ({path.name}); runs trained before "
                      "lmcli wrote one lack it",
                      "resume the run with {resume} (with a larger {max_steps} or {epochs} if it "
                      "finished) to write it, or leave out {novel}")


def _damaged(path: Path, why: str) -> InputError:
    return InputError(f"{path} {why}", "delete it and resume the run with {resume} to write it "
                      "again, or leave out {novel}")


_META = {"version": int, "level": str, "span": int, "tokenizer": str, "corpus_sha256": str,
         "train_tokens": int, "skipped": str}
_HASHES = ("runs", "lines")


def _read(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """Some fields of an index file, the metadata as Python values and the hashes as
    arrays; every way the file can be wrong is one clear error."""
    if not path.is_file():
        raise _missing(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            fields = {name: archive[name] for name in names}
        for name in _HASHES:
            if name in fields and (fields[name].dtype != np.uint64 or fields[name].ndim != 1):
                raise ValueError(f"{name} are not uint64")
        return {name: _META[name](value.item()) if name in _META else value
                for name, value in fields.items()}
    except (OSError, ValueError, TypeError, AttributeError, EOFError, KeyError,
            zipfile.BadZipFile, zlib.error) as error:
        why = f"no {error}" if isinstance(error, KeyError) else str(error) or type(error).__name__
        raise _damaged(path, f"is not a readable novelty index ({why})") from None


@dataclass
class NoveltyIndex:
    """The hashes of a training text's ``span``-unit runs and verse lines (sorted, unique
    uint64), for ``tokenizer``'s ids. ``skipped`` says why a run's text was not indexed."""

    tokenizer: Tokenizer
    span: int
    runs: np.ndarray
    lines: np.ndarray
    corpus_sha256: str = ""
    train_tokens: int = 0
    skipped: str = ""

    def __post_init__(self) -> None:
        self._kinds = token_kinds(self.tokenizer)

    @classmethod
    def build(cls, train_ids: np.ndarray, tokenizer: Tokenizer, *, corpus_sha256: str = "",
              on_tokens: Callable[[int], None] | None = None) -> NoveltyIndex:
        """The index of a token stream (lines each ended by <EOS>), hashed a chunk at a
        time; ``on_tokens(n)`` hears of each chunk's tokens."""
        span, kinds = span_for(tokenizer.level), token_kinds(tokenizer)
        runs: list[np.ndarray] = []
        lines: list[np.ndarray] = []
        for chunk in _line_chunks(train_ids):
            units = _Units.of(chunk, kinds)
            hash_of = units.hasher()
            starts = np.flatnonzero(units.windows(span))
            runs.append(_sorted_unique(hash_of(starts, starts + span)))
            lines.append(_sorted_unique(hash_of(*units.lines(tokenizer.level == "char"))))
            if on_tokens is not None:
                on_tokens(len(chunk))
        return cls(tokenizer, span, _union(runs), _union(lines), corpus_sha256, len(train_ids))

    def save(self, path: Path) -> None:
        """Write the index atomically as an .npz of plain arrays."""
        arrays = {"version": np.int64(INDEX_VERSION), "level": np.str_(self.tokenizer.level),
                  "span": np.int64(self.span), "tokenizer": np.str_(tokenizer_fingerprint(self.tokenizer)),
                  "corpus_sha256": np.str_(self.corpus_sha256),
                  "train_tokens": np.int64(self.train_tokens), "skipped": np.str_(self.skipped),
                  "runs": self.runs, "lines": self.lines}
        atomic_write(Path(path), lambda handle: np.savez(handle, **arrays),
                     needed=sum(np.asarray(value).nbytes for value in arrays.values()))

    @classmethod
    def load(cls, path: Path, tokenizer: Tokenizer, *, corpus_sha256: str | None = None) -> NoveltyIndex:
        """Read an index for ``tokenizer`` (and, if given, the corpus of that fingerprint);
        a missing, damaged, foreign or skipped index is an :class:`InputError`."""
        path = Path(path)
        fields = _read(path, (*_META, *_HASHES))
        if fields["version"] != INDEX_VERSION:
            raise _damaged(path, f"is a novelty index of format {fields['version']}, not {INDEX_VERSION}")
        if fields["tokenizer"] != tokenizer_fingerprint(tokenizer):
            raise InputError(f"{path} was built for another vocabulary than this checkpoint's",
                             "use the checkpoint's own run folder, or leave out {novel}")
        if corpus_sha256 and fields["corpus_sha256"] not in ("", corpus_sha256):
            raise _damaged(path, "was built from another corpus than this checkpoint's")
        if fields["skipped"]:
            raise InputError(f"the training text of {path.parent} was not indexed: {fields['skipped']}",
                             "leave out {novel}")
        return cls(tokenizer, fields["span"], fields["runs"], fields["lines"],
                   fields["corpus_sha256"], fields["train_tokens"])

    def check(self, token_ids: list[int]) -> Copied:
        """What one sample (prime included; <EOS> ends a line, and so does the sample's
        end) shares with the training text."""
        tokens = np.asarray(token_ids, dtype=np.int64)
        units = _Units.of(tokens, self._kinds)
        hash_of = units.hasher()
        span = self.span
        hits = units.windows(span)
        starts = np.flatnonzero(hits)
        hits[starts] = member(self.runs, hash_of(starts, starts + span))
        first, count = _longest_true(hits)
        length = count + span - 1 if count else 0
        text = self._text(tokens, units, first, first + length) if length else ""
        line_starts, line_ends = units.lines(self.tokenizer.level == "char")
        found = np.flatnonzero(member(self.lines, hash_of(line_starts, line_ends)))
        line = None
        if len(found):  # the earliest line; of two starting together, the longer
            best = found[np.lexsort((-line_ends[found], line_starts[found]))[0]]
            line = self._text(tokens, units, int(line_starts[best]), int(line_ends[best]))
        return Copied(length, text, line)

    def _text(self, tokens: np.ndarray, units: _Units, start: int, end: int) -> str:
        """The decoded tokens from unit ``start`` to unit ``end - 1``, separators inside
        included."""
        first, last = int(units.positions[start]), int(units.positions[end - 1])
        return self.tokenizer.decode(tokens[first:last + 1].tolist())


# ----------------------------------------------------------------------------- run folders


def write_for_run(out_dir: Path, data: CorpusData, on_event: DataEvent | None = None) -> Path:
    """Index a run's training text into ``out_dir``; a text over MAX_INDEX_TOKENS gets a file
    that says why it was not indexed, so ``--novel`` can say so too."""
    path = Path(out_dir) / INDEX
    tokens, sha = len(data.train), data.scan.sha256
    if tokens > MAX_INDEX_TOKENS:
        reason = f"its {tokens:,} tokens are more than the {MAX_INDEX_TOKENS:,} lmcli indexes"
        empty = np.zeros(0, dtype=np.uint64)
        index = NoveltyIndex(data.tokenizer, span_for(data.tokenizer.level), empty, empty, sha,
                             tokens, skipped=reason)
    else:
        if on_event is not None:
            on_event("phase", {"name": "indexing training text", "total_bytes": int(data.train.nbytes)})
        itemsize = data.train.dtype.itemsize
        index = NoveltyIndex.build(data.train, data.tokenizer, corpus_sha256=sha, on_tokens=(
            None if on_event is None else lambda n: on_event("bytes", {"n": n * itemsize})))
    index.save(path)
    return path


def ensure_for_run(out_dir: Path, data: CorpusData, on_event: DataEvent | None = None) -> bool:
    """Write the run's index unless the one there was built from this corpus with this
    tokenizer; True if it was (re)written."""
    try:
        meta = _read(Path(out_dir) / INDEX, ("version", "tokenizer", "corpus_sha256"))
    except InputError:
        meta = None
    if meta == {"version": INDEX_VERSION, "tokenizer": tokenizer_fingerprint(data.tokenizer),
                "corpus_sha256": data.scan.sha256}:
        return False
    write_for_run(out_dir, data, on_event)
    return True


def describe(path: Path) -> str:
    """One line on a novelty index file (see :func:`index_for_checkpoint`), for ``lmcli info``."""
    path = Path(path)
    try:
        fields = _read(path, (*_META, *_HASHES))
    except InputError as error:
        return "none" if not path.is_file() else error.fact
    if fields["skipped"]:
        return f"not built: {fields['skipped']}"
    return (f"{path.name}: {len(fields['runs']):,} runs of {fields['span']} units, "
            f"{len(fields['lines']):,} lines, {format_count(path.stat().st_size)}B")
