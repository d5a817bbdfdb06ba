"""Corpus data: reading text files, holding out validation lines, encoding to a flat id
array, and cutting that array into truncated-BPTT batches.

Files are read in blocks of whole lines (a few MB each), so memory holds one block of text
at a time plus the compact id arrays (uint16 for vocabularies up to 65,536 ids). A token
stream is the concatenation of its sentences, each followed by ``<EOS>``, and starts with an
``<EOS>``: the first sentence is predicted from the same implicit start context as every
later one (and as ``score`` uses).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import lzma
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from lmcli.errors import LmcliError, SettingError, UsageError
from lmcli.settings import check, setting
from lmcli.tokencache import (CACHE_VERSION, TokenCache, TokenWriter, encode_to_file, fingerprint,
                              renumber_file, tokenizer_fingerprint)
from lmcli.parallel import map_blocks, worker_count
from lmcli.tokenizers import (EOS_ID, Tokenizer, WordTally, array_dtype, build_tokenizer,
                              check_vocabulary_settings, encode_block, normalize_line, survey_words,
                              LEVELS, SPECIALS)

CHUNK_BYTES = 4 << 20
PAD_TARGET = -100  # a target that is padding: cross_entropy's ignore_index, never scored
UTF8_BOM = codecs.BOM_UTF8
_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}

ProgressFn = Callable[[int], None]
"""Called with the number of bytes just read, for progress bars."""
Blocks = Iterable[Sequence[str]]
Streams = tuple[Tokenizer, np.ndarray, np.ndarray | None]
"""A tokenizer and the training and validation token streams it encoded."""
EncodeFn = Callable[[Blocks, Blocks | None], Streams]


# ----------------------------------------------------------------------------- reading


def check_readable(path: str | Path, what: str = "file") -> Path:
    """The path, if it names a readable regular file; a one-line error otherwise."""
    path = Path(path)
    if not path.exists():
        raise LmcliError(f"{what} not found: {path}")
    if path.is_dir():
        raise LmcliError(f"{what} is a directory, not a file: {path}")
    if not os.access(path, os.R_OK):
        raise LmcliError(f"{what} is not readable (permission denied): {path}")
    return path


def _open_binary(path: Path) -> BinaryIO:
    opener = _COMPRESSED.get(path.suffix.lower())
    if opener is not None:
        return opener(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _line_of_offset(path: Path, offset: int) -> int:
    """1-based line number of a byte offset (bytes counted as stored, after decompression)."""
    line = 1
    with _open_binary(path) as handle:
        remaining = offset
        while remaining > 0:
            block = handle.read(min(remaining, CHUNK_BYTES))
            if not block:
                break
            line += block.count(b"\n")
            remaining -= len(block)
    return line


def _where_nul(path: Path, raw: bytes, consumed: int, encoding: str) -> str:
    if codecs.lookup(encoding).name in ("utf-8", "ascii", "latin-1"):
        offset = consumed + raw.find(b"\x00")
        return f"byte {offset} (line {_line_of_offset(path, offset)})"
    return "a block near byte " + str(consumed)


def iter_chunks(path: str | Path, encoding: str = "utf-8", errors: str = "strict", *,
                chunk_bytes: int = CHUNK_BYTES, on_bytes: Callable[[bytes], None] | None = None
                ) -> Iterator[str]:
    """The decoded text of a file in blocks that each end at a line break (the last block
    may lack one). ``.gz``, ``.bz2`` and ``.xz`` files are decompressed on the fly; a UTF-8
    byte-order mark is dropped. Undecodable bytes raise a one-line :class:`LmcliError`
    naming the file, the byte offset and the line, unless ``errors`` says otherwise.
    ``on_bytes`` sees every raw block (for hashing and progress).
    """
    path = check_readable(path, "corpus file")
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors)
    except LookupError:
        raise UsageError(f"unknown text encoding {encoding!r}") from None
    is_utf8 = codecs.lookup(encoding).name == "utf-8"
    carry = ""
    consumed = 0
    first = True
    try:
        with _open_binary(path) as handle:
            while True:
                raw = handle.read(chunk_bytes)
                if on_bytes is not None and raw:
                    on_bytes(raw)
                if first and is_utf8 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM):]
                    consumed += len(UTF8_BOM)
                first = False
                pending = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as error:
                    offset = consumed - pending + error.start
                    where = f"byte {offset}"
                    if codecs.lookup(encoding).name in ("utf-8", "ascii", "latin-1"):
                        where += f" (line {_line_of_offset(path, offset)})"
                    raise LmcliError(
                        f"{path}: not valid {encoding} at {where}: {error.reason}; "
                        "pass --encoding ENCODING or --errors replace") from None
                if "\x00" in text:  # valid in any Unicode encoding, but a sign of a binary file
                    if errors == "strict":
                        raise LmcliError(f"{path}: a NUL byte at {_where_nul(path, raw, consumed, encoding)}: "
                                         "this looks like a binary file, not text; pass --errors "
                                         "replace (or ignore) to read it anyway")
                    text = text.replace("\x00", "\ufffd" if errors == "replace" else "")
                consumed += len(raw)
                text = carry + text if carry else text
                if not raw:
                    if text:
                        yield text
                    return
                cut = text.rfind("\n") + 1
                if cut:
                    yield text[:cut]
                    carry = text[cut:]
                else:
                    carry = text
    except (OSError, EOFError, lzma.LZMAError) as error:
        raise LmcliError(f"cannot read {path}: {error}") from None


def chunk_lines(chunk: str) -> list[str]:
    """The lines of a block from :func:`iter_chunks` (the trailing line break ends the
    last line rather than starting an empty one)."""
    lines = chunk.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# ----------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class TextFiles:
    """One or more text files read as one corpus, line after line."""

    paths: tuple[Path, ...]
    encoding: str = "utf-8"
    errors: str = "strict"

    @classmethod
    def of(cls, paths: Iterable[str | Path], encoding: str = "utf-8", errors: str = "strict"
           ) -> TextFiles:
        resolved = tuple(Path(p) for p in paths)
        if not resolved:
            raise UsageError("no corpus file given")
        if errors not in ("strict", "replace", "ignore"):
            raise UsageError(f"--errors must be strict, replace or ignore, got {errors!r}")
        for path in resolved:
            check_readable(path, "corpus file")
        return cls(resolved, encoding, errors)

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.paths)

    def chunks(self, on_bytes: Callable[[bytes], None] | None = None) -> Iterator[str]:
        for path in self.paths:
            yield from iter_chunks(path, self.encoding, self.errors, on_bytes=on_bytes)

    def line_blocks(self, on_bytes: Callable[[bytes], None] | None = None) -> Iterator[list[str]]:
        for chunk in self.chunks(on_bytes):
            yield chunk_lines(chunk)


@dataclass(frozen=True)
class CorpusScan:
    """What one pass over the raw corpus tells: its fingerprint and its size in lines."""

    sha256: str
    num_bytes: int
    num_lines: int
    num_sentences: int  # non-blank lines


def scan(files: TextFiles, on_progress: ProgressFn | None = None) -> CorpusScan:
    """Hash the raw bytes, count lines, and check that the text decodes, in one pass."""
    digest = hashlib.sha256()
    num_bytes = 0

    def see(raw: bytes) -> None:
        nonlocal num_bytes
        digest.update(raw)
        num_bytes += len(raw)
        if on_progress is not None:
            on_progress(len(raw))

    num_lines = num_sentences = 0
    for lines in files.line_blocks(see):
        num_lines += len(lines)
        num_sentences += sum(1 for line in lines if line.strip(" \t\n\r\v\f"))
    return CorpusScan(digest.hexdigest(), num_bytes, num_lines, num_sentences)


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
        :data:`MAX_HELD_OUT_LINES`): on a gigabyte corpus 5% would make every validation
        take longer than the training between them, and 20,000 sentences already measure
        perplexity to a fraction of a percent."""
        if not 0.0 <= fraction < 1.0:
            raise UsageError(f"--valid-fraction must be in [0, 1), got {fraction}")
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
                  on_bytes: Callable[[bytes], None] | None = None) -> Iterator[list[str]]:
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
    """Collects encoded chunks into one array (peak memory: about twice the result)."""

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


def encode_stream(tokenizer: Tokenizer, blocks: Iterable[Sequence[str]], workers: int = 1
                  ) -> np.ndarray:
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

    def provenance(self) -> dict[str, object]:
        return {
            "corpus": [str(p) for p in self.files.paths],
            "corpus_sha256": self.scan.sha256,
            "corpus_bytes": self.scan.num_bytes,
            "corpus_lines": self.scan.num_lines,
            "valid": [str(p) for p in self.valid_files.paths] if self.valid_files else None,
            "train_tokens": int(len(self.train)),
            "valid_tokens": int(len(self.valid)) if self.valid is not None else 0,
        }


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


DataEvent = Callable[[str, dict[str, object]], None]


def load_corpus(paths: Sequence[str | Path], config: DataConfig, *,
                tokenizer: Tokenizer | None = None, on_event: DataEvent | None = None,
                cache: TokenCache | None = None) -> CorpusData:
    """Read, split and encode a corpus; learn the tokenizer from the training lines unless
    one is given (as when resuming). Emits ("phase", {"name", "total_bytes"}) and
    ("bytes", {"n"}) events so a caller can draw progress.

    With a ``cache`` the token streams are written to disk as they are encoded and come
    back as read-only memory maps (memory bounded by the page cache, not the corpus), and
    a corpus seen before with the same settings skips the vocabulary and encoding passes.
    Without one they are built in memory. A word vocabulary is learned in the same pass
    that encodes the training lines (the phase "building vocabulary and encoding")."""
    emit = on_event or (lambda kind, info: None)
    files = TextFiles.of(paths, config.encoding, config.errors)
    total = files.size_bytes()

    def progress(raw: bytes) -> None:
        emit("bytes", {"n": len(raw)})

    emit("phase", {"name": "reading corpus", "total_bytes": total})
    corpus_scan = scan(files, lambda n: emit("bytes", {"n": n}))
    if corpus_scan.num_sentences == 0:
        what = "empty" if corpus_scan.num_bytes == 0 else "only blank lines"
        raise LmcliError(f"corpus has no text ({what}): {', '.join(map(str, files.paths))}")

    valid_files = (TextFiles.of([config.valid_file], config.encoding, config.errors)
                   if config.valid_file else None)
    held_out = HeldOut() if valid_files else HeldOut.fraction(corpus_scan.num_lines,
                                                              config.valid_fraction)
    # What decides the streams' bytes, for the cache keys.
    source = {"corpus": corpus_scan.sha256, "valid": scan(valid_files).sha256 if valid_files else None,
              "held_out": held_out.ranges, "encoding": config.encoding, "errors": config.errors}
    vocab_key = fingerprint(CACHE_VERSION, source, config.level, config.vocab_size,
                            config.min_freq, config.lowercase)
    # Word counting and encoding are Python loops: a large corpus runs them in a process
    # per CPU (char encoding is numpy already, subwords are sentencepiece's).
    workers = worker_count(total) if config.level == "word" else 1

    def blocks() -> tuple[Iterator[list[str]], Iterator[list[str]] | None]:
        """A fresh pass over the (training, validation) lines; validation may be None."""
        valid_blocks = (valid_files.line_blocks() if valid_files is not None
                        else _split_blocks(files, held_out, True) if held_out else None)
        return _split_blocks(files, held_out, False, progress), valid_blocks

    def streams_key(tokenizer: Tokenizer) -> str:
        return fingerprint(CACHE_VERSION, source, tokenizer_fingerprint(tokenizer))

    def attempt(phase: str, into_cache: EncodeFn | None, in_memory: EncodeFn) -> Streams:
        """Encode into the cache, or in memory where there is none or it cannot be written
        (full disk, read-only folder); each try gets a fresh pass over the lines."""
        emit("phase", {"name": phase, "total_bytes": total})
        if into_cache is not None:
            try:
                return into_cache(*blocks())
            except OSError as error:
                emit("warning", {"message": f"token cache not written ({error}); encoding in memory"})
                emit("phase", {"name": phase, "total_bytes": total})
        return in_memory(*blocks())

    if tokenizer is None and cache is not None:
        tokenizer = cache.load_tokenizer(vocab_key)
    if tokenizer is None and config.level == "word":
        # One pass learns the vocabulary and encodes the training lines with it.
        check_vocabulary_settings(config.level, config.vocab_size, config.min_freq)

        def words_into_cache(train_blocks: Blocks, valid_blocks: Blocks | None) -> Streams:
            assert cache is not None
            return _learn_words_into_cache(cache, vocab_key, streams_key, config, train_blocks,
                                           valid_blocks, workers)

        def words_in_memory(train_blocks: Blocks, valid_blocks: Blocks | None) -> Streams:
            learned, train = _learn_words_in_memory(config, train_blocks, workers)
            return learned, train, _stream_or_none(learned, valid_blocks)

        tokenizer, train, valid = attempt("building vocabulary and encoding",
                                          words_into_cache if cache is not None else None,
                                          words_in_memory)
        if cache is not None:
            cache.store_tokenizer(vocab_key, tokenizer)
    else:
        if tokenizer is None:
            emit("phase", {"name": "building vocabulary", "total_bytes": total})
            tokenizer = build_tokenizer(
                config.level, ("\n".join(lines) + "\n" for lines in blocks()[0]),
                vocab_size=config.vocab_size, min_freq=config.min_freq, lowercase=config.lowercase)
            if cache is not None:
                cache.store_tokenizer(vocab_key, tokenizer)
        known: Tokenizer = tokenizer

        def into_cache(train_blocks: Blocks, valid_blocks: Blocks | None) -> Streams:
            assert cache is not None
            return known, *_encode_into_cache(cache, streams_key(known), known, train_blocks,
                                              valid_blocks, workers)

        def in_memory(train_blocks: Blocks, valid_blocks: Blocks | None) -> Streams:
            return (known, encode_stream(known, train_blocks, workers),
                    _stream_or_none(known, valid_blocks))

        cached = cache.load_streams(streams_key(known)) if cache is not None else None
        if cached is not None:
            emit("phase", {"name": "encoded before (cached)", "total_bytes": 0})
            train, valid = cached
        else:
            _, train, valid = attempt("encoding", into_cache if cache is not None else None, in_memory)
    if valid_files is not None and valid is not None and len(valid) <= 1:
        raise LmcliError(f"validation file has no text: {valid_files.paths[0]}")
    if valid is not None and len(valid) <= 1:
        valid = None
    if len(train) <= 1:
        raise LmcliError("no training text is left after holding out validation lines")
    return CorpusData(tokenizer, train, valid, corpus_scan, files, valid_files, held_out)


def _encode_into_cache(cache: TokenCache, key: str, tokenizer: Tokenizer,
                       train_blocks: Iterable[Sequence[str]],
                       valid_blocks: Iterable[Sequence[str]] | None, workers: int = 1
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    folder = cache.new_entry(key)
    try:
        train_count = encode_to_file(tokenizer, train_blocks, folder / "train.bin", workers)
        valid_count = (encode_to_file(tokenizer, valid_blocks, folder / "valid.bin")
                       if valid_blocks is not None else None)
        return cache.commit(key, folder, array_dtype(tokenizer.vocab_size), train_count, valid_count)
    except BaseException:
        cache.discard(folder)
        raise


def _stream_or_none(tokenizer: Tokenizer, blocks: Blocks | None) -> np.ndarray | None:
    return encode_stream(tokenizer, blocks) if blocks is not None else None


def learn_words(config: DataConfig, blocks: Blocks, workers: int, keep: Callable[[np.ndarray], None]
                ) -> tuple[Tokenizer, np.ndarray]:
    """Learn a word vocabulary and encode the lines in the same pass (in ``workers``
    processes when more than one): ``keep`` gets each block's ids under provisional
    numbers, which the returned table maps to the tokenizer's ids. The tokenizer is the
    one :func:`build_tokenizer` learns from the same lines."""
    tally = WordTally()
    for block in map_blocks(survey_words, config.lowercase, blocks, workers, "reading the words of"):
        keep(tally.add(block))
    tokenizer = tally.tokenizer(config.vocab_size, config.min_freq, config.lowercase)
    return tokenizer, tally.renumbering(tokenizer)


def _learn_words_in_memory(config: DataConfig, blocks: Blocks, workers: int
                           ) -> tuple[Tokenizer, np.ndarray]:
    parts: deque[np.ndarray] = deque()
    tokenizer, table = learn_words(config, blocks, workers, parts.append)
    builder = _ArrayBuilder(table.dtype)
    while parts:  # each block's provisional ids go as its final ones come
        builder.add(table[parts.popleft()])
    return tokenizer, builder.build()


def _learn_words_into_cache(cache: TokenCache, vocab_key: str, streams_key: Callable[[Tokenizer], str],
                            config: DataConfig, train_blocks: Blocks, valid_blocks: Blocks | None,
                            workers: int) -> Streams:
    """:func:`learn_words` with the provisional ids in a file of the cache entry, renumbered
    into its train.bin once the vocabulary is known (disk: 4 bytes a token, meanwhile)."""
    folder = cache.new_entry(vocab_key)
    try:
        provisional = folder / "words.bin"
        with TokenWriter(provisional, np.dtype(np.int32)) as words:  # starts with 0, a line end
            tokenizer, table = learn_words(config, train_blocks, workers, words.add)
        train_count = renumber_file(provisional, words.count, table, folder / "train.bin")
        provisional.unlink()
        valid_count = (encode_to_file(tokenizer, valid_blocks, folder / "valid.bin")
                       if valid_blocks is not None else None)
        return tokenizer, *cache.commit(streams_key(tokenizer), folder, table.dtype, train_count,
                                        valid_count)
    except BaseException:
        cache.discard(folder)
        raise


def count_text_chars(lines: Iterable[str], lowercase: bool) -> tuple[int, int]:
    """(characters, sentences) of non-blank normalised lines; each sentence's end counts as
    one character, so that at char level bits per char equals bits per token."""
    chars = sentences = 0
    for line in lines:
        text = normalize_line(line, lowercase)
        if text:
            chars += len(text) + 1
            sentences += 1
    return chars, sentences


# ----------------------------------------------------------------------------- batches


class BpttBatches:
    """Truncated-BPTT windows over a token stream laid out as ``batch_size`` parallel lanes.

    The stream is cut into ``batch_size`` contiguous lanes (the tail that does not divide
    evenly is dropped); window ``i`` holds inputs ``lanes[:, i*T : i*T+T]`` and targets
    shifted by one. Consecutive windows continue each lane, so the hidden state carried
    from window ``i`` is the right context for window ``i + 1``::

        stream  a b c d e f g h i j k l m n o p q r s t u v w x
        lanes   a b c d e f g h i j k l     (batch_size = 2)
                m n o p q r s t u v w x
        T = 4   window 0: inputs [a b c d] [m n o p], targets [b c d e] [n o p q]
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, *,
                 keep_partial: bool = False) -> None:
        if batch_size < 1 or seq_len < 1:
            raise UsageError("batch size and sequence length must be at least 1")
        lane_len = len(tokens) // batch_size
        if lane_len < 2:
            raise LmcliError(
                f"the text has {len(tokens)} tokens: too few for {batch_size} batch lanes; "
                "use a smaller --batch-size or a longer corpus")
        self.lanes = tokens[: batch_size * lane_len].reshape(batch_size, lane_len)
        self.batch_size = batch_size
        self.seq_len = seq_len
        full, rest = divmod(lane_len - 1, seq_len)
        if full == 0 and not keep_partial:
            raise LmcliError(
                f"the text has {len(tokens)} tokens: too few for one batch of "
                f"{batch_size} x {seq_len + 1}; use a smaller --batch-size or --seq-len")
        self.num_windows = full + (1 if keep_partial and rest else 0)

    def __len__(self) -> int:
        return self.num_windows

    @property
    def tokens_per_window(self) -> int:
        return self.batch_size * self.seq_len

    def window(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (batch, time) int64."""
        start = index * self.seq_len
        stop = min(start + self.seq_len, self.lanes.shape[1] - 1)
        block = torch.from_numpy(np.ascontiguousarray(self.lanes[:, start: stop + 1])).long()
        return block[:, :-1], block[:, 1:]


SCAN_TOKENS = 1 << 24  # tokens looked at a time for sentence ends


def split_sentences(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the non-empty sentences of a token stream; ``ends`` index each
    sentence's <EOS>. The stream's leading <EOS> (the start context) is no sentence, nor
    is text after the last <EOS>."""
    # Found a piece at a time, and as int32 where the stream allows: a gigabyte corpus has
    # some 200M tokens, and a whole-stream comparison alone would take 200 MB.
    index = np.int32 if len(tokens) < np.iinfo(np.int32).max else np.int64
    ends = np.concatenate([np.zeros(0, dtype=index)] + [
        (np.flatnonzero(tokens[first:first + SCAN_TOKENS] == EOS_ID) + first).astype(index)
        for first in range(0, len(tokens), SCAN_TOKENS)])
    starts = np.zeros_like(ends)
    starts[1:] = ends[:-1] + 1
    keep = starts < ends
    if keep[1:].all():  # only the stream's leading <EOS> is an empty sentence: no copies
        return (starts, ends) if keep[:1].all() else (starts[1:], ends[1:])
    return starts[keep], ends[keep]


class SentenceBatches:
    """Windows of whole sentences, each started from a zero state, as ``score`` sees them.

    Every epoch the sentences are shuffled (a fixed order per seed and epoch, so a resumed
    run continues exactly), then sorted by length within pools of 50 batches so that a
    batch holds sentences of similar length (little padding), and the batches shuffled
    again. A batch is ``batch_size`` sentences, padded; inputs begin with <EOS> (the
    implicit start) and targets end with each sentence's <EOS>; padding targets are
    ``PAD_TARGET`` and never count. A batch longer than ``seq_len`` is cut into several
    windows with the state carried between them (truncated BPTT inside long sentences).
    """

    POOL = 50

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int) -> None:
        if batch_size < 1 or seq_len < 1:
            raise UsageError("batch size and sequence length must be at least 1")
        self.tokens = tokens
        self.starts, self.ends = split_sentences(tokens)
        if len(self.starts) < batch_size:
            raise LmcliError(f"the text has {len(self.starts)} sentences: too few for one batch "
                             f"of {batch_size}; use a smaller --batch-size or a longer corpus")
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.epoch = -1
        self._cached_key: tuple[int, int] | None = None
        self._cached: tuple[np.ndarray, np.ndarray] | None = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Lay out the windows of ``epoch``: the same for the same seed and epoch."""
        if epoch == self.epoch:
            return
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch])
        # rng.permutation(n) in place and in the index dtype (int32 nearly always): the same
        # order and generator state, and half the memory (10M sentences take 40 MB).
        order = np.arange(len(self.starts), dtype=self.starts.dtype)
        rng.shuffle(order)
        order = order[: len(order) // self.batch_size * self.batch_size]  # whole batches only
        lengths = self.ends - self.starts + 1  # tokens scored per sentence, <EOS> included
        pool = self.POOL * self.batch_size
        for first in range(0, len(order), pool):
            chunk = order[first:first + pool]
            order[first:first + pool] = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches = order.reshape(-1, self.batch_size)
        self.batches = batches = batches[rng.permutation(len(batches))]
        del order  # before the next array of the same size
        batch_lengths = lengths[batches]
        pieces = -(-batch_lengths.max(axis=1) // self.seq_len)  # windows per batch
        self.first_window = np.concatenate([[0], np.cumsum(pieces, dtype=np.int64)])
        self.num_targets = int(batch_lengths.sum(dtype=np.int64))

    def __len__(self) -> int:
        return int(self.first_window[-1])

    @property
    def tokens_per_window(self) -> int:
        """Average scored tokens per window (for rates and estimates)."""
        return max(1, self.num_targets // max(len(self), 1))

    def starts_fresh(self, index: int) -> bool:
        """Whether window ``index`` begins new sentences (zero state)."""
        batch = int(np.searchsorted(self.first_window, index, side="right") - 1)
        return int(self.first_window[batch]) == index

    def window(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (batch, time) int64; padding targets are PAD_TARGET."""
        batch = int(np.searchsorted(self.first_window, index, side="right") - 1)
        piece = index - int(self.first_window[batch])
        inputs, targets = self._padded(batch)
        cut = slice(piece * self.seq_len, (piece + 1) * self.seq_len)
        return (torch.from_numpy(np.ascontiguousarray(inputs[:, cut])),
                torch.from_numpy(np.ascontiguousarray(targets[:, cut])))

    def _padded(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole padded batch, built once for all of its windows."""
        key = (self.epoch, batch)
        if self._cached_key != key or self._cached is None:
            rows = self.batches[batch]
            lengths = self.ends[rows] - self.starts[rows] + 1
            width = int(lengths.max())
            inputs = np.full((len(rows), width), EOS_ID, dtype=np.int64)
            targets = np.full((len(rows), width), PAD_TARGET, dtype=np.int64)
            for row, (start, length) in enumerate(zip(self.starts[rows], lengths)):
                sentence = self.tokens[start:start + length]  # ends with <EOS>
                inputs[row, 1:length] = sentence[:-1]
                targets[row, :length] = sentence
            self._cached_key, self._cached = key, (inputs, targets)
        return self._cached
