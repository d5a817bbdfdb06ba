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

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from itertools import chain, filterfalse, repeat
from typing import Any, ClassVar

import numpy as np

from lmcli.errors import LmcliError

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
# or NUL splits with str.split() exactly where _WORD splits it, and faster (figure in
# benchmarks/quality/FINDINGS.md).
UNICODE_ONLY_SPACES = ("\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
                       "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_LINE_END = "\x00"  # ends each line's words on the fast path, where no word can be it
# Literal unknown-word markers (Penn Treebank style) read as <UNK> at word level.
UNKNOWN_WORD_MARKERS = frozenset({"<unk>", "<UNK>"})
CODE_POINTS = 0x110000  # Unicode's code points, surrogates included
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
            table = np.full(CODE_POINTS, UNK_ID, dtype=array_dtype(self.vocab_size))
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


# ----------------------------------------------------------------------------- words


def _holds_any(text: str, chars: str) -> bool:
    """Whether ``text`` holds any of ``chars``: a substring search per character runs at
    memchr speed, far faster than a regex character class (figure in FINDINGS.md)."""
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


def split_words(text: str) -> list[str]:
    """The words of a text, line breaks included among the spaces, split where KenLM splits."""
    return _WORD.findall(text) if _holds_any(text, UNICODE_ONLY_SPACES) else text.split()


def encode_block(tokenizer: Tokenizer, lines: Sequence[str]) -> np.ndarray:
    """``tokenizer.encode_lines(lines)`` as a function of both: a task for worker processes."""
    return tokenizer.encode_lines(lines)
