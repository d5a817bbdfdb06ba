"""A corpus made ready for training: its text read and fingerprinted, validation lines held
out, a vocabulary learned from the training lines, and both parts encoded into token
streams, kept in a token cache on disk when there is one.

A token stream is the concatenation of its sentences, each followed by ``<EOS>``, and
starts with an ``<EOS>``: the first sentence is predicted from the same implicit start
context as every later one (and as ``score`` uses). Streams are compact id arrays (uint16
for vocabularies up to 65,536 ids); the text is read a block of lines at a time, so
memory holds one block of text plus the id arrays.
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property, partial
from pathlib import Path

import numpy as np

from lmcli.direction import reverse_lines
from lmcli.errors import LmcliError, SettingError
from lmcli.script import vocabulary_script
from lmcli.forms import corpus_shapes
from lmcli.settings import check, setting
from lmcli.parallel import map_blocks, worker_count
from lmcli.text import BytesFn, CorpusScan, TextFiles, scan
from lmcli.tokencache import (CACHE_VERSION, TokenCache, TokenWriter, encode_to_file, fingerprint,
                              renumber_file, tokenizer_fingerprint)
from lmcli.tokenizers import EOS_ID, LEVELS, SPECIALS, Tokenizer, array_dtype, encode_block
from lmcli.vocabulary import build_tokenizer, check_vocabulary_settings, learn_words

Blocks = Iterable[Sequence[str]]
Streams = tuple[Tokenizer, np.ndarray, np.ndarray | None]
"""A tokenizer and the training and validation token streams it encoded."""
IntoCache = Callable[[TokenCache, Blocks, Blocks | None], Streams]
InMemory = Callable[[Blocks, Blocks | None], Streams]
# A named conversion of each line (the name keys the token cache).
Convert = tuple[str, Callable[[str], str]]
DataEvent = Callable[[str, dict[str, object]], None]
"""Called with ("phase", {"name", "total_bytes"}), ("bytes", {"n"}) or ("warning", {"message"})."""


DATA = "Data"


@dataclass
class DataConfig:
    """How a corpus becomes token streams (recorded in the checkpoint)."""

    level: str = setting("char", "Tokens: char, word, bpe or unigram.", panel=DATA, choices=LEVELS)
    vocab_size: int | None = setting(None, "Keep at most this many token types, <EOS> and <UNK> "
                                     "included.", panel=DATA, at_least=len(SPECIALS) + 1,
                                     default_text="all")
    min_freq: int = setting(1, "Keep char/word tokens seen at least this often; rarer ones become "
                            "<UNK>.", panel=DATA, at_least=1)
    lowercase: bool = setting(False, "Lowercase the text.", panel=DATA)
    valid_fraction: float = setting(0.05, "Share of corpus lines held out for validation (0 = "
                                    "none), at most 20,000 lines.", panel=DATA, at_least=0, below=1)
    encoding: str = setting("utf-8", "Text encoding of the files.", panel=DATA)
    errors: str = setting("strict", "On undecodable bytes: strict, replace or ignore.", panel=DATA,
                          choices=("strict", "replace", "ignore"))
    valid_file: str | None = setting(None, "Validation text file.", panel=DATA, flag="--valid",
                                     default_text="hold out {valid_fraction} of the corpus")

    def __post_init__(self) -> None:
        check(self)
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise SettingError(f"{{encoding}} {self.encoding!r} is not a text encoding Python "
                               "knows (utf-8, latin-1, gb18030, ...)") from None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> DataConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


MAX_HELD_OUT_LINES = 20_000  # validation lines held out of a corpus, at most


@dataclass(frozen=True)
class HeldOut:
    """Which corpus lines are held out for validation: the tail of each of up to 10
    contiguous blocks, so validation spans the whole corpus while neighbouring lines
    (often near-duplicates) stay on one side of the split."""

    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def fraction(cls, num_lines: int, fraction: float, cap: int | None = None) -> HeldOut:
        """``fraction`` of the lines, but at most ``cap`` lines (default
        :data:`MAX_HELD_OUT_LINES`): a share of a very large corpus would make every
        validation take longer than the training between them, while a capped number of
        sentences already measures perplexity closely (figures in FINDINGS.md)."""
        if not 0.0 <= fraction < 1.0:
            raise SettingError(f"{{valid_fraction}} must be in [0, 1), got {fraction}")
        if fraction == 0.0 or num_lines < 2:
            return cls()
        held = min(num_lines - 1, max(1, round(num_lines * fraction)),
                   MAX_HELD_OUT_LINES if cap is None else cap)
        blocks = min(10, held)
        ranges = []
        for j in range(blocks):
            end = (j + 1) * num_lines // blocks
            share = (j + 1) * held // blocks - j * held // blocks
            ranges.append((end - share, end))
        return cls(tuple(ranges))

    def mask(self, start: int, count: int) -> np.ndarray:
        """For lines start .. start+count-1: True where the line is held out."""
        index = np.arange(start, start + count)
        held = np.zeros(count, dtype=bool)
        for low, high in self.ranges:
            held |= (index >= low) & (index < high)
        return held

    def __bool__(self) -> bool:
        return bool(self.ranges)


def _split_blocks(files: TextFiles, held_out: HeldOut, want_held: bool,
                  on_bytes: BytesFn | None = None) -> Iterator[list[str]]:
    """Blocks of the training lines (``want_held`` False) or the held-out ones."""
    start = 0
    for lines in files.line_blocks(on_bytes):
        if held_out:
            mask = held_out.mask(start, len(lines))
            keep = mask if want_held else ~mask
            yield [line for line, k in zip(lines, keep.tolist()) if k]
        elif not want_held:
            yield lines
        start += len(lines)


class _ArrayBuilder:
    """Collects encoded chunks into one stream (peak memory: about twice the result)."""

    def __init__(self, dtype: np.dtype) -> None:
        self.parts: list[np.ndarray] = [np.array([EOS_ID], dtype=dtype)]
        self.dtype = dtype

    def add(self, ids: np.ndarray) -> None:
        if len(ids):
            self.parts.append(ids.astype(self.dtype, copy=False))

    def build(self) -> np.ndarray:
        array = np.concatenate(self.parts)
        self.parts = []
        return array


def encode_stream(tokenizer: Tokenizer, blocks: Blocks, workers: int = 1) -> np.ndarray:
    """The token stream of some blocks of lines: <EOS>, then each sentence and its <EOS>;
    encoded in ``workers`` processes when more than one."""
    builder = _ArrayBuilder(array_dtype(tokenizer.vocab_size))
    for ids in map_blocks(encode_block, tokenizer, blocks, workers, "encoding"):
        builder.add(ids)
    return builder.build()


@dataclass
class CorpusData:
    """A corpus ready for training: tokenizer, the two token streams, provenance."""

    tokenizer: Tokenizer
    train: np.ndarray
    valid: np.ndarray | None
    scan: CorpusScan
    files: TextFiles
    valid_files: TextFiles | None = None
    held_out: HeldOut = field(default_factory=HeldOut)

    @cached_property
    def script(self) -> str:
        """The Chinese script of the vocabulary (traditional, simplified or neither): worked
        out once, though every checkpoint records it."""
        return vocabulary_script(self.tokenizer.tokens)

    @cached_property
    def verse_shapes(self) -> list[list[object]]:
        """The commonest verse shapes of a Chinese verse corpus (empty for others): what
        ``generate`` writes when a poem's shape is left to the model."""
        return corpus_shapes(self.train, self.tokenizer)

    def read_backward(self) -> CorpusData:
        """The same corpus with every line's tokens reversed (a backward model's streams,
        in memory). Its verse shapes are none: generate's forms need a forward model."""
        data = replace(self, train=reverse_lines(self.train),
                       valid=reverse_lines(self.valid) if self.valid is not None else None)
        data.__dict__["verse_shapes"] = []
        return data

    def provenance(self) -> dict[str, object]:
        return {
            "corpus": [str(p) for p in self.files.paths],
            "corpus_sha256": self.scan.sha256,
            "corpus_bytes": self.scan.num_bytes,
            "corpus_lines": self.scan.num_lines,
            "valid": [str(p) for p in self.valid_files.paths] if self.valid_files else None,
            "train_tokens": int(len(self.train)),
            "valid_tokens": int(len(self.valid)) if self.valid is not None else 0,
            "script": self.script,
            "verse_shapes": self.verse_shapes,
        }


def load_corpus(paths: Sequence[str | Path], config: DataConfig, *,
                tokenizer: Tokenizer | None = None, on_event: DataEvent | None = None,
                cache: TokenCache | None = None, convert: Convert | None = None) -> CorpusData:
    """Read, split and encode a corpus; learn the tokenizer from the training lines unless
    one is given (as when resuming). Emits ("phase", {"name", "total_bytes"}) and
    ("bytes", {"n"}) events so a caller can draw progress.

    With a ``cache`` the token streams are written to disk as they are encoded and come
    back as read-only memory maps (memory bounded by the page cache, not the corpus), and
    a corpus seen before with the same settings skips the vocabulary and encoding passes.
    Without one they are built in memory. A word vocabulary is learned in the same pass
    that encodes the training lines (the phase "building vocabulary and encoding").
    ``convert`` (a name, a function) turns each line into what a given tokenizer reads."""
    return CorpusBuilder(paths, config, cache=cache, on_event=on_event, convert=convert).build(tokenizer)


def _ignore(kind: str, info: dict[str, object]) -> None:
    pass


@contextmanager
def _writing(cache: TokenCache, key: str) -> Iterator[Path]:
    """A new cache entry's private folder, removed if writing it fails or is interrupted."""
    folder = cache.new_entry(key)
    try:
        yield folder
    except BaseException:
        cache.discard(folder)
        raise


class CorpusBuilder:
    """Makes one corpus ready, one way: read (check and fingerprint the text, hold out the
    validation lines) -> count (learn the vocabulary, unless it is given or cached) ->
    encode -> cache -> streams. It owns the token cache, which may be None (streams in
    memory), and the number of worker processes a pass runs in. One :meth:`build` each:
    reading the text settles the held-out lines and the cache keys the rest goes by."""

    def __init__(self, paths: Sequence[str | Path], config: DataConfig, *,
                 cache: TokenCache | None = None, on_event: DataEvent | None = None,
                 convert: Convert | None = None) -> None:
        self.config = config
        self.convert = convert
        self.cache = cache
        self.emit: DataEvent = on_event or _ignore
        self.files = TextFiles.of(paths, config.encoding, config.errors)
        self.total = self.files.size_bytes()
        self.valid_files: TextFiles | None = None
        self.held_out = HeldOut()
        self.source: dict[str, object] = {}  # what decides the streams' bytes: the cache keys
        self.vocab_key = ""
        self.workers = 1

    def build(self, tokenizer: Tokenizer | None = None) -> CorpusData:
        """The corpus with ``tokenizer``'s streams, or those of the vocabulary it learns;
        refused if a file changed while it was read (the passes would disagree)."""
        stamps = self.files.stamps()
        data = self._build(tokenizer)
        self.files.check_unchanged(stamps)
        return data

    def _build(self, tokenizer: Tokenizer | None) -> CorpusData:
        corpus_scan = self._read()
        if tokenizer is None and self.cache is not None:
            tokenizer = self.cache.load_tokenizer(self.vocab_key)
        if tokenizer is None and self.config.level == "word":
            tokenizer, train, valid = self._learn_words()
        else:
            if tokenizer is None:
                tokenizer = self._learn_vocabulary()
            train, valid = self._encode(tokenizer)
        return self._checked(corpus_scan, tokenizer, train, valid)

    # -- read

    def _read(self) -> CorpusScan:
        """Check and fingerprint the text, and choose the validation lines."""
        config = self.config
        self.emit("phase", {"name": "reading corpus", "total_bytes": self.total})
        corpus_scan = scan(self.files, self._read_bytes)
        if corpus_scan.num_sentences == 0:
            what = "empty" if corpus_scan.num_bytes == 0 else "only blank lines"
            raise LmcliError(f"corpus has no text ({what}): {', '.join(map(str, self.files.paths))}")
        if config.valid_file:
            self.valid_files = TextFiles.of([config.valid_file], config.encoding, config.errors)
        else:
            self.held_out = HeldOut.fraction(corpus_scan.num_lines, config.valid_fraction)
        self.source = {"corpus": corpus_scan.sha256,
                       "valid": scan(self.valid_files).sha256 if self.valid_files else None,
                       "held_out": self.held_out.ranges, "encoding": config.encoding,
                       "errors": config.errors}
        if self.convert is not None:  # converted lines are other streams
            self.source["convert"] = self.convert[0]
        self.vocab_key = fingerprint(CACHE_VERSION, self.source, config.level, config.vocab_size,
                                     config.min_freq, config.lowercase)
        # Word counting and encoding are Python loops: a large corpus runs them in a process
        # per CPU (char encoding is numpy already, subwords are sentencepiece's).
        self.workers = worker_count(self.total) if config.level == "word" else 1
        return corpus_scan

    def _read_bytes(self, count: int) -> None:
        self.emit("bytes", {"n": count})

    def _training_bytes(self, raw: bytes) -> None:
        self.emit("bytes", {"n": len(raw)})

    def _blocks(self) -> tuple[Iterator[list[str]], Iterator[list[str]] | None]:
        """A fresh pass over the (training, validation) lines; validation may be None."""
        valid: Iterator[list[str]] | None = None
        if self.valid_files is not None:
            valid = self.valid_files.line_blocks()
        elif self.held_out:
            valid = _split_blocks(self.files, self.held_out, True)
        train = _split_blocks(self.files, self.held_out, False, self._training_bytes)
        if self.convert is not None:
            train, valid = (None if blocks is None else (list(map(self.convert[1], lines)) for lines in blocks)
                            for blocks in (train, valid))
        return train, valid

    # -- count

    def _learn_vocabulary(self) -> Tokenizer:
        """A char or subword vocabulary, learned in a pass of its own."""
        config = self.config
        self.emit("phase", {"name": "building vocabulary", "total_bytes": self.total})
        train_blocks, _ = self._blocks()
        tokenizer = build_tokenizer(config.level, ("\n".join(lines) + "\n" for lines in train_blocks),
                                    vocab_size=config.vocab_size, min_freq=config.min_freq,
                                    lowercase=config.lowercase)
        self._store(tokenizer)
        return tokenizer

    def _learn_words(self) -> Streams:
        """A word vocabulary, learned in the pass that encodes the training lines."""
        config = self.config
        check_vocabulary_settings(config.level, config.vocab_size, config.min_freq)
        streams = self._attempt("building vocabulary and encoding", self._words_into_cache,
                                self._words_in_memory)
        self._store(streams[0])
        return streams

    def _learn_words_from(self, blocks: Blocks, keep: Callable[[np.ndarray], None]
                          ) -> tuple[Tokenizer, np.ndarray]:
        config = self.config
        return learn_words(blocks, keep, vocab_size=config.vocab_size, min_freq=config.min_freq,
                           lowercase=config.lowercase, workers=self.workers)

    def _words_in_memory(self, train_blocks: Blocks, valid_blocks: Blocks | None) -> Streams:
        parts: deque[np.ndarray] = deque()
        tokenizer, table = self._learn_words_from(train_blocks, parts.append)
        builder = _ArrayBuilder(table.dtype)
        while parts:  # each block's provisional ids go as its final ones come
            builder.add(table[parts.popleft()])
        return tokenizer, builder.build(), self._valid_in_memory(tokenizer, valid_blocks)

    def _words_into_cache(self, cache: TokenCache, train_blocks: Blocks,
                          valid_blocks: Blocks | None) -> Streams:
        """The provisional ids go to a file of the entry, renumbered into its train.bin once
        the vocabulary is known (disk: 4 bytes a token, meanwhile)."""
        with _writing(cache, self.vocab_key) as folder:
            provisional = folder / "words.bin"
            with TokenWriter(provisional, np.dtype(np.int32)) as words:  # starts with 0, a line end
                tokenizer, table = self._learn_words_from(train_blocks, words.add)
            train_count = renumber_file(provisional, words.count, table, folder / "train.bin")
            provisional.unlink()
            return self._publish(cache, folder, tokenizer, train_count, valid_blocks)

    # -- encode

    def _encode(self, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray | None]:
        """The streams of a known vocabulary: from the cache where encoded before."""
        cached = self.cache.load_streams(self._streams_key(tokenizer)) if self.cache is not None else None
        if cached is not None:
            self.emit("phase", {"name": "encoded before (cached)", "total_bytes": 0})
            return cached
        _, train, valid = self._attempt("encoding", partial(self._encode_into_cache, tokenizer),
                                        partial(self._encode_in_memory, tokenizer))
        return train, valid

    def _encode_in_memory(self, tokenizer: Tokenizer, train_blocks: Blocks,
                          valid_blocks: Blocks | None) -> Streams:
        return (tokenizer, encode_stream(tokenizer, train_blocks, self.workers),
                self._valid_in_memory(tokenizer, valid_blocks))

    def _encode_into_cache(self, tokenizer: Tokenizer, cache: TokenCache, train_blocks: Blocks,
                           valid_blocks: Blocks | None) -> Streams:
        with _writing(cache, self._streams_key(tokenizer)) as folder:
            train_count = encode_to_file(tokenizer, train_blocks, folder / "train.bin", self.workers)
            return self._publish(cache, folder, tokenizer, train_count, valid_blocks)

    @staticmethod
    def _valid_in_memory(tokenizer: Tokenizer, blocks: Blocks | None) -> np.ndarray | None:
        return encode_stream(tokenizer, blocks) if blocks is not None else None

    # -- cache

    def _attempt(self, phase: str, into_cache: IntoCache, in_memory: InMemory) -> Streams:
        """Encode into the cache, or in memory where there is none or it cannot be written
        (full disk, read-only folder); each try gets a fresh pass over the lines."""
        self.emit("phase", {"name": phase, "total_bytes": self.total})
        if self.cache is not None:
            try:
                return into_cache(self.cache, *self._blocks())
            except OSError as error:
                self.emit("warning", {"message": f"token cache not written ({error}); encoding in memory"})
                self.emit("phase", {"name": phase, "total_bytes": self.total})
        return in_memory(*self._blocks())

    def _publish(self, cache: TokenCache, folder: Path, tokenizer: Tokenizer, train_count: int,
                 valid_blocks: Blocks | None) -> Streams:
        """Encode the validation lines beside the training ids, and publish the entry."""
        valid_count = (encode_to_file(tokenizer, valid_blocks, folder / "valid.bin")
                       if valid_blocks is not None else None)
        return tokenizer, *cache.commit(self._streams_key(tokenizer), folder,
                                        array_dtype(tokenizer.vocab_size), train_count, valid_count)

    def _streams_key(self, tokenizer: Tokenizer) -> str:
        return fingerprint(CACHE_VERSION, self.source, tokenizer_fingerprint(tokenizer))

    def _store(self, tokenizer: Tokenizer) -> None:
        if self.cache is not None:
            self.cache.store_tokenizer(self.vocab_key, tokenizer)

    # -- streams

    def _checked(self, corpus_scan: CorpusScan, tokenizer: Tokenizer, train: np.ndarray,
                 valid: np.ndarray | None) -> CorpusData:
        if self.valid_files is not None and valid is not None and len(valid) <= 1:
            raise LmcliError(f"validation file has no text: {self.valid_files.paths[0]}")
        if valid is not None and len(valid) <= 1:
            valid = None
        if len(train) <= 1:
            raise LmcliError("no training text is left after holding out validation lines")
        return CorpusData(tokenizer, train, valid, corpus_scan, self.files, self.valid_files,
                          self.held_out)
