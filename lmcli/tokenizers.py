"""Tokenizers: char, word and sentencepiece (bpe / unigram) behind one small interface.

Every tokenizer maps a line of text to integer ids with the same fixed layout:

    id 0 = ``<EOS>``  ends every sentence (and is the implicit start context)
    id 1 = ``<UNK>``  whatever the vocabulary does not hold
    id 2... the vocabulary proper

There is no padding or start symbol, so the model's output layer covers exactly the tokens
that can occur. A tokenizer serialises to plain data (:meth:`Tokenizer.to_state`) that
loads with ``torch.load(weights_only=True)``; sentencepiece model bytes travel inside it.

Text normalisation, shared by all levels: a line is stripped of the whitespace KenLM
recognises (space, tab, CR, LF, VT, FF) at both ends, optionally lowercased, and skipped
when nothing is left. Word level splits on exactly those characters, as KenLM does, and
reads a literal ``<unk>`` or ``<UNK>`` as the unknown token.

Encoding a batch of lines returns a compact numpy array without keeping a Python object
per token: char level goes through a code-point lookup table, word level through one
``str.split`` (a regex where the text holds spaces KenLM does not split at) and a dict
lookup per chunk.
"""

from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain, compress, count, filterfalse, repeat
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np

from lmcli.errors import LmcliError, UsageError
from lmcli.parallel import map_blocks

EOS_ID = 0
UNK_ID = 1
EOS = "<EOS>"
UNK = "<UNK>"
SPECIALS = (EOS, UNK)
LEVELS = ("char", "word", "bpe", "unigram")

# KenLM's kSpaces: the C-locale isspace set. Word level splits on these and nothing else,
# so a no-break space or an ideographic space stays inside a word, as in KenLM.
WHITESPACE = " \t\n\r\v\f"
_WORD_OR_NEWLINE = re.compile(r"\n|[^ \t\n\r\v\f]+")
_WORD = re.compile(r"[^ \t\n\r\v\f]+")
# The characters str.split() and str.strip() take for spaces besides KenLM's (every
# code point whose isspace() is true; a test enumerates them). A line without them, "\n"
# or NUL splits with str.split() exactly where _WORD splits it, and 2-3x as fast.
UNICODE_ONLY_SPACES = ("\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
                       "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_LINE_END = "\x00"  # ends each line's words on the fast path, where no word can be it
# Literal unknown-word markers (Penn Treebank style) read as <UNK> at word level.
UNKNOWN_WORD_MARKERS = frozenset({"<unk>", "<UNK>"})
_MAX_CODE_POINT = 0x110000
# A lone surrogate (a command-line argument Python could not decode holds them) has no
# UTF-8 form, and sentencepiece takes UTF-8: it reads as U+FFFD there, which is <UNK>.
_SURROGATES = re.compile("[\ud800-\udfff]")


def _utf8_safe(text: str) -> str:
    return _SURROGATES.sub("\ufffd", text)


def normalize_line(line: str, lowercase: bool) -> str:
    """The text of one corpus line as every tokenizer sees it ('' means a blank line)."""
    line = line.strip(WHITESPACE)
    return line.lower() if lowercase else line


def array_dtype(vocab_size: int) -> np.dtype:
    """The smallest integer type that holds every id of a vocabulary."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


class Tokenizer(ABC):
    """Maps text to ids and back. Subclasses fill :attr:`tokens` (id -> token string)."""

    level: ClassVar[str]

    def __init__(self, tokens: Sequence[str], lowercase: bool) -> None:
        if list(tokens[:2]) != list(SPECIALS):
            raise LmcliError("tokenizer vocabulary must start with <EOS>, <UNK>")
        self.tokens: list[str] = list(tokens)
        self.lowercase = lowercase

    @property
    def vocab_size(self) -> int:
        """Number of ids, <EOS> and <UNK> included: the size of the model's output layer."""
        return len(self.tokens)

    def normalize(self, line: str) -> str:
        return normalize_line(line, self.lowercase)

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of one sentence, without the final <EOS>."""

    def encode_lines(self, lines: Iterable[str]) -> np.ndarray:
        """Ids of many lines as one flat array: each non-blank line's ids then <EOS>.

        Blank lines (nothing left after normalisation) contribute nothing.
        """
        pieces = [np.asarray(self.encode(text) + [EOS_ID], dtype=np.int64)
                  for text in map(self.normalize, lines) if text]
        if not pieces:
            return np.zeros(0, dtype=array_dtype(self.vocab_size))
        return np.concatenate(pieces).astype(array_dtype(self.vocab_size))

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of a run of ids; <EOS> becomes a newline, <UNK> the string ``<UNK>``."""

    def continuation(self, prefix: str, ids: Sequence[int]) -> str:
        """Text to append to ``prefix`` for the tokens ``ids`` that follow it."""
        return self.decode(ids)

    def pieces(self, text: str) -> list[str]:
        """How ``text`` splits into tokens, as token strings (for ``lmcli tokenize``)."""
        return [self.tokens[i] for i in self.encode(self.normalize(text))]

    def surface(self, text: str) -> list[str]:
        """The stretches of (normalised) ``text`` its tokens cover, one per token: what an
        ``<UNK>`` stood for."""
        return list(self.normalize(text))

    def to_state(self) -> dict[str, Any]:
        """Plain data (str, list, bool, bytes) that :func:`tokenizer_from_state` restores."""
        return {"level": self.level, "tokens": list(self.tokens), "lowercase": self.lowercase}


class CharTokenizer(Tokenizer):
    """One token per Unicode code point (Chinese, emoji and combining marks included)."""

    level = "char"

    def __init__(self, tokens: Sequence[str], lowercase: bool) -> None:
        super().__init__(tokens, lowercase)
        for token in self.tokens[2:]:
            if len(token) != 1:
                raise LmcliError(f"char vocabulary holds a token of length {len(token)}")
        self._index = {token: i for i, token in enumerate(self.tokens) if i >= len(SPECIALS)}
        self._lookup: np.ndarray | None = None

    def _table(self) -> np.ndarray:
        # A code point -> id table (2-4 MB), built on first use: encoding a chunk is then
        # one UTF-32 conversion and one gather.
        if self._lookup is None:
            table = np.full(_MAX_CODE_POINT, UNK_ID, dtype=array_dtype(self.vocab_size))
            for token, i in self._index.items():
                table[ord(token)] = i
            table[ord("\n")] = EOS_ID
            self._lookup = table
        return self._lookup

    def encode(self, text: str) -> list[int]:
        index = self._index
        return [index.get(ch, UNK_ID) for ch in text]

    def encode_lines(self, lines: Iterable[str]) -> np.ndarray:
        texts = [text for text in map(self.normalize, lines) if text]
        if not texts:
            return np.zeros(0, dtype=array_dtype(self.vocab_size))
        joined = "\n".join(texts) + "\n"
        code_points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        return self._table()[code_points]

    def decode(self, ids: Iterable[int]) -> str:
        tokens = self.tokens
        return "".join("\n" if i == EOS_ID else tokens[i] for i in ids)


class WordTokenizer(Tokenizer):
    """Whitespace-separated words, split exactly where KenLM splits."""

    level = "word"

    def __init__(self, tokens: Sequence[str], lowercase: bool) -> None:
        super().__init__(tokens, lowercase)
        self._index: dict[str, int] = {token: i for i, token in enumerate(self.tokens)
                                       if i >= len(SPECIALS)}
        for marker in UNKNOWN_WORD_MARKERS | {EOS}:
            self._index[marker] = UNK_ID
        self._with_line_end: dict[str, dict[str, int]] = {}

    def encode(self, text: str) -> list[int]:
        index = self._index
        return [index.get(word, UNK_ID) for word in _WORD.findall(text)]

    def encode_lines(self, lines: Iterable[str]) -> np.ndarray:
        words, line_end = line_words(list(lines), self.lowercase)
        index = self._with_line_end.get(line_end)
        if index is None:  # built once per marker, not per block
            index = self._with_line_end[line_end] = {**self._index, line_end: EOS_ID}
        return np.fromiter(map(index.get, words, repeat(UNK_ID)),
                           dtype=array_dtype(self.vocab_size), count=len(words))

    def surface(self, text: str) -> list[str]:
        return _WORD.findall(self.normalize(text))

    def decode(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        line: list[str] = []
        for i in ids:
            if i == EOS_ID:
                out.append(" ".join(line) + "\n")
                line = []
            else:
                line.append(self.tokens[i])
        return "".join(out) + " ".join(line)

    def continuation(self, prefix: str, ids: Sequence[int]) -> str:
        text = self.decode(ids)
        return f" {text}" if prefix and ids and ids[0] != EOS_ID else text


class SentencePieceTokenizer(Tokenizer):
    """Subwords from a sentencepiece model (bpe or unigram) kept as bytes in the state."""

    level = "bpe"

    def __init__(self, model_bytes: bytes, level: str, lowercase: bool) -> None:
        import sentencepiece as spm

        self.level = level  # type: ignore[misc]
        self.model_bytes = bytes(model_bytes)
        self._processor = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        tokens = [self._processor.id_to_piece(i) for i in range(self._processor.get_piece_size())]
        super().__init__(tokens, lowercase)

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(_utf8_safe(text))

    def surface(self, text: str) -> list[str]:
        # As strings, sentencepiece spells an unknown piece as the text it covers.
        return [piece.replace("\u2581", " ")
                for piece in self._processor.encode(_utf8_safe(self.normalize(text)), out_type=str)]

    def encode_lines(self, lines: Iterable[str]) -> np.ndarray:
        texts = [_utf8_safe(text) for text in map(self.normalize, lines) if text]
        if not texts:
            return np.zeros(0, dtype=array_dtype(self.vocab_size))
        encoded = self._processor.encode(texts)
        for ids in encoded:
            ids.append(EOS_ID)
        total = sum(map(len, encoded))
        return np.fromiter(chain.from_iterable(encoded), dtype=array_dtype(self.vocab_size),
                           count=total)

    def decode(self, ids: Iterable[int]) -> str:
        lines: list[str] = []
        current: list[int] = []
        for i in ids:
            if i == EOS_ID:
                lines.append(self._decode_line(current) + "\n")
                current = []
            else:
                current.append(int(i))
        return "".join(lines) + self._decode_line(current)

    def continuation(self, prefix: str, ids: Sequence[int]) -> str:
        text = self.decode(ids)
        new_word = bool(ids) and ids[0] != EOS_ID and self.tokens[ids[0]].startswith("\u2581")
        return f" {text}" if prefix and new_word else text

    def _decode_line(self, ids: list[int]) -> str:
        # sentencepiece renders <UNK> as " ⁇ "; keep our own spelling instead.
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if i == UNK_ID:
                parts.append(self._processor.decode(run))
                parts.append(UNK)
                run = []
            else:
                run.append(i)
        parts.append(self._processor.decode(run))
        return "".join(parts)

    def to_state(self) -> dict[str, Any]:
        return {"level": self.level, "model_bytes": self.model_bytes, "lowercase": self.lowercase}


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from :meth:`Tokenizer.to_state` data (e.g. out of a checkpoint)."""
    try:
        level = state["level"]
        lowercase = bool(state["lowercase"])
        if level in ("bpe", "unigram"):
            return SentencePieceTokenizer(state["model_bytes"], level, lowercase)
        if level == "char":
            return CharTokenizer(state["tokens"], lowercase)
        if level == "word":
            return WordTokenizer(state["tokens"], lowercase)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise LmcliError(f"tokenizer state is damaged ({error})") from error
    raise LmcliError(f"unknown tokenizer level {level!r}")


# ----------------------------------------------------------------------------- building


def encode_block(tokenizer: Tokenizer, lines: Sequence[str]) -> np.ndarray:
    """``tokenizer.encode_lines(lines)`` as a function of both: a task for worker processes."""
    return tokenizer.encode_lines(lines)


def _select_vocabulary(counts: Mapping[str, int], vocab_size: int | None, min_freq: int) -> list[str]:
    """Specials, then tokens seen at least ``min_freq`` times, most frequent first.

    Ties break by the token's text so the same corpus always gives the same ids.
    """
    tokens = sorted(token for token, n in counts.items() if n >= min_freq and token not in SPECIALS)
    frequency = np.fromiter(map(counts.__getitem__, tokens), dtype=np.int64, count=len(tokens))
    order = np.argsort(-frequency, kind="stable")  # most frequent first, ties in text order
    if vocab_size is not None:
        order = order[: max(0, vocab_size - len(SPECIALS))]
    return [*SPECIALS, *map(tokens.__getitem__, order.tolist())]


def count_chars(chunks: Iterable[str], lowercase: bool) -> Counter[str]:
    """Code-point counts over non-blank normalised lines, counted with numpy (fast)."""
    totals = np.zeros(_MAX_CODE_POINT, dtype=np.int64)
    for chunk in chunks:
        texts = [t for t in (normalize_line(line, lowercase) for line in chunk.split("\n")) if t]
        if not texts:
            continue
        code_points = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4")
        totals += np.bincount(code_points, minlength=_MAX_CODE_POINT)
    present = np.flatnonzero(totals)
    return Counter({chr(cp): int(totals[cp]) for cp in present})


def _holds_any(text: str, chars: str) -> bool:
    """Whether ``text`` holds any of ``chars``: a substring search per character (memchr
    speed) is some 40x faster than a regex character class here."""
    return any(char in text for char in chars)


def line_words(lines: Sequence[str], lowercase: bool) -> tuple[list[str], str]:
    """The words of the non-blank (normalised) lines, each line's followed by a line-end
    marker, and that marker: a string no word of these lines equals.

    Where the text holds only KenLM's spaces (nearly always), the lines are joined with
    the marker between them and cut by ``str.split``; otherwise one regex pass over the
    normalised lines does it, with ``"\\n"`` as the marker."""
    kept = list(filter(str.strip, lines))  # the non-blank lines, if only KenLM's spaces occur
    text = f" {_LINE_END} ".join(kept) + f" {_LINE_END}" if kept else ""
    if lowercase:
        text = text.lower()
    if (text.count(_LINE_END) == len(kept) and not _holds_any(text, "\n" + UNICODE_ONLY_SPACES)
            and (len(kept) == len(lines)
                 or not any(line.strip(WHITESPACE) for line in filterfalse(str.strip, lines)))):
        return text.split(), _LINE_END
    texts = [text for text in (normalize_line(line, lowercase) for line in lines) if text]
    return (_WORD_OR_NEWLINE.findall("\n".join(texts) + "\n") if texts else []), "\n"


def _count_chunk(lowercase: bool, chunk: str) -> Counter[str]:
    text = chunk.lower() if lowercase else chunk
    return Counter(_WORD.findall(text) if _holds_any(text, UNICODE_ONLY_SPACES) else text.split())


def count_words(chunks: Iterable[str], lowercase: bool, workers: int = 1) -> Counter[str]:
    """Word counts (KenLM whitespace split); literal <unk> markers are not words. With
    ``workers`` > 1 the chunks are counted in that many processes."""
    counts: Counter[str] = Counter()
    for part in map_blocks(_count_chunk, lowercase, chunks, workers, "counting the words of"):
        counts.update(part)  # merging a chunk's Counter costs what counting its list did
    for marker in UNKNOWN_WORD_MARKERS | {EOS}:
        counts.pop(marker, None)
    return counts


def check_vocabulary_settings(level: str, vocab_size: int | None, min_freq: int) -> None:
    """The checks :func:`build_tokenizer` makes before reading any text."""
    if level not in LEVELS:
        raise UsageError(f"unknown level {level!r}; choose one of {', '.join(LEVELS)}")
    if vocab_size is not None and vocab_size < len(SPECIALS) + 1:
        raise UsageError(f"--vocab-size must be at least {len(SPECIALS) + 1}, got {vocab_size}")
    if min_freq < 1:
        raise UsageError(f"--min-freq must be at least 1, got {min_freq}")


T = TypeVar("T", bound="Tokenizer")


def _learned(tokenizer: T, min_freq: int) -> T:
    if tokenizer.vocab_size <= len(SPECIALS):
        raise LmcliError("the corpus has no tokens to learn a vocabulary from"
                         + (f" (none is seen {min_freq} times; lower --min-freq)" if min_freq > 1 else ""))
    return tokenizer


def build_tokenizer(level: str, chunks: Iterable[str], *, vocab_size: int | None = None,
                    min_freq: int = 1, lowercase: bool = False, workers: int = 1) -> Tokenizer:
    """Learn a tokenizer from text ``chunks`` (each a run of whole lines, streamed).

    ``vocab_size`` counts every id, <EOS> and <UNK> included (the output layer's size);
    ``min_freq`` keeps char and word tokens seen at least that many times. ``workers``
    processes count words (the other levels ignore it).
    """
    check_vocabulary_settings(level, vocab_size, min_freq)
    if level == "char":
        counts = count_chars(chunks, lowercase)
        tokenizer: Tokenizer = CharTokenizer(_select_vocabulary(counts, vocab_size, min_freq), lowercase)
    elif level == "word":
        counts = count_words(chunks, lowercase, workers)
        tokenizer = WordTokenizer(_select_vocabulary(counts, vocab_size, min_freq), lowercase)
    else:
        tokenizer = train_sentencepiece(level, chunks, vocab_size=vocab_size or 8000,
                                        lowercase=lowercase)
    return _learned(tokenizer, min_freq)


# Learning a word vocabulary and encoding with it in one pass over the text: each block's
# tokens are kept under provisional numbers (a line end is 0, words are numbered as they
# are first seen) while the words are counted, and renumbered with a lookup table once
# the vocabulary is known. The worker's share (splitting, numbering within the block,
# counting) is the cost of one encoding pass; what is left is a dict update per distinct
# word of a block and a numpy gather per token.


class BlockWords(NamedTuple):
    """One block of lines, surveyed: its distinct words in first-seen order, how often
    each occurs, and its tokens (int32: 0 a line end, ``i + 1`` the word ``words[i]``)."""

    words: list[str]
    counts: np.ndarray
    ids: np.ndarray


def survey_words(lowercase: bool, lines: Sequence[str]) -> BlockWords:
    """:class:`BlockWords` of some lines; a task for worker processes."""
    words, line_end = line_words(lines, lowercase)
    # One dict pass (the cost, when a block has 100k distinct words: cache misses): each
    # word gets 1 + the position where it first occurs, a line end 0; numpy then numbers
    # the first occurrences 1, 2, 3... in order.
    first_at = {line_end: 0}
    where = np.fromiter(map(first_at.setdefault, words, count(1)), dtype=np.int64, count=len(words))
    first = np.zeros(len(words) + 1, dtype=bool)
    first[0] = True
    first[where] = True
    ids = (np.cumsum(first, dtype=np.int32) - 1)[where]
    counts = np.bincount(ids, minlength=len(first_at))
    return BlockWords(list(compress(words, first[1:].tolist())), counts[1:], ids)


class WordTally:
    """Word counts over surveyed blocks, and provisional numbers for their tokens that
    stay the same from block to block (0 a line end, then the words as first seen)."""

    def __init__(self) -> None:
        self.number: dict[str, int] = {}
        self.counts = np.zeros(1 << 16, dtype=np.int64)  # by provisional number

    def add(self, block: BlockWords) -> np.ndarray:
        """The block's tokens under provisional numbers (int32)."""
        number, known = self.number, len(self.number)
        # One dict pass: a word seen before gets its number, a new one a placeholder above
        # every number given so far; then the new ones are numbered in first-seen order.
        table = np.zeros(len(block.words) + 1, dtype=np.int64)
        table[1:] = np.fromiter(map(number.setdefault, block.words, count(known + 1)),
                                dtype=np.int64, count=len(block.words))
        fresh = table > known
        new = int(fresh.sum())
        if new:
            if known + new >= np.iinfo(np.int32).max:
                raise LmcliError("the corpus has over 2 billion distinct words; is it text?")
            numbers = np.arange(known + 1, known + 1 + new)
            number.update(zip(compress(block.words, fresh[1:].tolist()), numbers.tolist()))
            table[fresh] = numbers
        if known + new >= len(self.counts):
            grown = np.zeros(2 * (known + new), dtype=np.int64)
            grown[:len(self.counts)] = self.counts
            self.counts = grown
        self.counts[table[1:]] += block.counts  # the numbers within a block are distinct
        return table.astype(np.int32)[block.ids]

    def tokenizer(self, vocab_size: int | None, min_freq: int, lowercase: bool) -> WordTokenizer:
        """The vocabulary :func:`build_tokenizer` learns from the same lines."""
        counts = dict(zip(self.number, self.counts[1:len(self.number) + 1].tolist()))
        for marker in UNKNOWN_WORD_MARKERS | {EOS}:
            counts.pop(marker, None)
        return _learned(WordTokenizer(_select_vocabulary(counts, vocab_size, min_freq), lowercase),
                        min_freq)

    def renumbering(self, tokenizer: WordTokenizer) -> np.ndarray:
        """Provisional number -> the tokenizer's id (<UNK> for words it does not keep);
        ``table[provisional]`` is the encoded stream, in the tokenizer's array dtype."""
        table = np.full(len(self.number) + 1, UNK_ID, dtype=array_dtype(tokenizer.vocab_size))
        table[0] = EOS_ID
        kept = tokenizer.tokens[len(SPECIALS):]
        where = np.fromiter(map(self.number.__getitem__, kept), dtype=np.int64, count=len(kept))
        table[where] = np.arange(len(SPECIALS), tokenizer.vocab_size)
        return table


def _sentences(chunks: Iterable[str], lowercase: bool) -> Iterator[str]:
    for chunk in chunks:
        for line in chunk.split("\n"):
            text = normalize_line(line, lowercase)
            if text:
                yield text


def train_sentencepiece(level: str, chunks: Iterable[str], *, vocab_size: int,
                        lowercase: bool, max_sentences: int = 2_000_000) -> SentencePieceTokenizer:
    """Train a bpe or unigram sentencepiece model in memory, ids aligned with ours.

    The text is not normalised by sentencepiece (identity rule, spaces kept) so that
    decoding gives back exactly the text that went in; ``max_sentences`` bounds the
    memory used on a large corpus (sentencepiece samples that many lines).
    """
    import sentencepiece as spm

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_sentences(chunks, lowercase),
            model_writer=model,
            model_type=level,
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # a small corpus gives fewer pieces instead of failing
            character_coverage=0.9995,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            eos_id=EOS_ID, eos_piece=EOS,
            unk_id=UNK_ID, unk_piece=UNK,
            bos_id=-1, pad_id=-1,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as error:
        message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        raise LmcliError(f"sentencepiece could not train a {level} model: {message}") from error
    return SentencePieceTokenizer(model.getvalue(), level, lowercase)
