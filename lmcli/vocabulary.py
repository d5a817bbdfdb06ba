"""Learning a vocabulary from text: which tokens a tokenizer keeps, and in what order.

Char and word levels count their tokens over the non-blank normalised lines and keep
those seen at least ``min_freq`` times, the most frequent first (``vocab_size`` cuts the
list), ties broken by the token's text so that the same corpus always gives the same ids;
bpe and unigram train a sentencepiece model in memory.

A word vocabulary can also be learned in the same pass that encodes the lines
(:func:`learn_words`): each block's tokens are kept under provisional numbers (a line end
is 0, words are numbered as they are first seen) while the words are counted, and
renumbered with a lookup table once the vocabulary is known. The worker's share
(splitting, numbering within the block, counting) is the cost of one encoding pass; what
is left is a dict update per distinct word of a block and a numpy gather per token.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from itertools import compress, count
from typing import NamedTuple, TypeVar

import numpy as np

from lmcli.errors import InputError, LmcliError, SettingError, UsageError
from lmcli.parallel import map_blocks
from lmcli.tokenizers import (CODE_POINTS, EOS, EOS_ID, LEVELS, SPECIALS, UNK, UNK_ID,
                              UNKNOWN_WORD_MARKERS, CharTokenizer, SentencePieceTokenizer, Tokenizer,
                              WordTokenizer, array_dtype, line_words, normalize_line, split_words)

T = TypeVar("T", bound=Tokenizer)


def check_vocabulary_settings(level: str, vocab_size: int | None, min_freq: int) -> None:
    """The checks :func:`build_tokenizer` makes before reading any text."""
    if level not in LEVELS:
        raise UsageError(f"unknown level {level!r}; choose one of {', '.join(LEVELS)}")
    if vocab_size is not None and vocab_size < len(SPECIALS) + 1:
        raise SettingError(f"{{vocab_size}} must be at least {len(SPECIALS) + 1}, got {vocab_size}")
    if min_freq < 1:
        raise SettingError(f"{{min_freq}} must be at least 1, got {min_freq}")


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


def _learned(tokenizer: T, min_freq: int) -> T:
    if tokenizer.vocab_size > len(SPECIALS):
        return tokenizer
    fact = "the corpus has no tokens to learn a vocabulary from"
    if min_freq > 1:
        raise InputError(f"{fact} (none is seen {min_freq} times)", "lower {min_freq}")
    raise LmcliError(fact)


def count_chars(chunks: Iterable[str], lowercase: bool) -> Counter[str]:
    """Code-point counts over non-blank normalised lines, counted with numpy (fast)."""
    totals = np.zeros(CODE_POINTS, dtype=np.int64)
    for chunk in chunks:
        texts = [t for t in (normalize_line(line, lowercase) for line in chunk.split("\n")) if t]
        if not texts:
            continue
        code_points = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4")
        totals += np.bincount(code_points, minlength=CODE_POINTS)
    present = np.flatnonzero(totals)
    return Counter({chr(cp): int(totals[cp]) for cp in present})


def _count_chunk(lowercase: bool, chunk: str) -> Counter[str]:
    return Counter(split_words(chunk.lower() if lowercase else chunk))


def count_words(chunks: Iterable[str], lowercase: bool, workers: int = 1) -> Counter[str]:
    """Word counts (KenLM whitespace split); literal <unk> markers are not words. With
    ``workers`` > 1 the chunks are counted in that many processes."""
    counts: Counter[str] = Counter()
    for part in map_blocks(_count_chunk, lowercase, chunks, workers, "counting the words of"):
        counts.update(part)  # merging a chunk's Counter costs what counting its list did
    _drop_markers(counts)
    return counts


def _drop_markers(counts: MutableMapping[str, int]) -> None:
    """Leave out of word counts the words that read as <UNK> (literal markers, ``<EOS>``)."""
    for marker in UNKNOWN_WORD_MARKERS | {EOS}:
        counts.pop(marker, None)


class BlockWords(NamedTuple):
    """One block of lines, surveyed: its distinct words in first-seen order, how often
    each occurs, and its tokens (int32: 0 a line end, ``i + 1`` the word ``words[i]``)."""

    words: list[str]
    counts: np.ndarray
    ids: np.ndarray


def survey_words(lowercase: bool, lines: Sequence[str]) -> BlockWords:
    """:class:`BlockWords` of some lines; a task for worker processes."""
    words, line_end = line_words(lines, lowercase)
    # One dict pass (most of the cost where a block has many distinct words: cache misses,
    # FINDINGS.md): each word gets 1 + the position where it first occurs, a line end 0;
    # numpy then numbers the first occurrences 1, 2, 3... in order.
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
        _drop_markers(counts)
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


def learn_words(blocks: Iterable[Sequence[str]], keep: Callable[[np.ndarray], None], *,
                vocab_size: int | None, min_freq: int, lowercase: bool, workers: int = 1
                ) -> tuple[WordTokenizer, np.ndarray]:
    """Learn a word vocabulary and encode the lines in the same pass (in ``workers``
    processes when more than one): ``keep`` gets each block's ids under provisional
    numbers, which the returned table maps to the tokenizer's ids. The tokenizer is the
    one :func:`build_tokenizer` learns from the same lines."""
    tally = WordTally()
    for block in map_blocks(survey_words, lowercase, blocks, workers, "reading the words of"):
        keep(tally.add(block))
    tokenizer = tally.tokenizer(vocab_size, min_freq, lowercase)
    return tokenizer, tally.renumbering(tokenizer)


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
