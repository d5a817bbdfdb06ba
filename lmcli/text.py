"""Reading corpus text: files, plain or compressed, decoded in blocks of whole lines (a few
MB each, so memory holds one block at a time), with errors that say where (file, byte,
line); and the one pass over a corpus that fingerprints it and counts its lines.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import lzma
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lmcli.errors import InputError, LmcliError, SettingError, UsageError
from lmcli.tokenizers import WHITESPACE

CHUNK_BYTES = 4 << 20
UTF8_BOM = codecs.BOM_UTF8
_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# Encodings in which a byte offset can be turned into a line number by counting b"\n".
_LINE_COUNTABLE = ("utf-8", "ascii", "latin-1")

ProgressFn = Callable[[int], None]
"""Called with the number of bytes just read, for progress bars."""
BytesFn = Callable[[bytes], None]
"""Sees every raw block read (for hashing and progress)."""


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


class _Decoder:
    """Decodes the raw blocks of one file in turn, and says where it fails: the file, the
    byte offset and, where the encoding allows, the line."""

    def __init__(self, path: Path, encoding: str, errors: str) -> None:
        try:
            self.decoder = codecs.getincrementaldecoder(encoding)(errors)
        except LookupError:
            raise UsageError(f"unknown text encoding {encoding!r}") from None
        self.path = path
        self.encoding = encoding
        self.errors = errors
        self.codec = codecs.lookup(encoding).name
        self.consumed = 0  # bytes decoded so far, the byte-order mark included
        self.first = True

    def decode(self, raw: bytes) -> str:
        """The text of the next raw block; ``b""`` ends the file."""
        if self.first and self.codec == "utf-8" and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM):]
            self.consumed += len(UTF8_BOM)
        self.first = False
        pending = len(self.decoder.getstate()[0])
        try:
            text = self.decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as error:
            where = self._where(self.consumed - pending + error.start)
            raise InputError(f"{self.path}: not valid {self.encoding} at {where}: {error.reason}",
                             "pass {encoding} ENCODING or {errors} replace") from None
        if "\x00" in text:  # valid in any Unicode encoding, but a sign of a binary file
            text = self._without_nul(text, raw)
        self.consumed += len(raw)
        return text

    def _without_nul(self, text: str, raw: bytes) -> str:
        if self.errors == "strict":
            where = (self._where(self.consumed + raw.find(b"\x00")) if self.codec in _LINE_COUNTABLE
                     else f"a block near byte {self.consumed}")
            raise InputError(f"{self.path}: a NUL byte at {where}: this looks like a binary file, "
                             "not text", "pass {errors} replace (or ignore) to read it anyway")
        return text.replace("\x00", "\ufffd" if self.errors == "replace" else "")

    def _where(self, offset: int) -> str:
        if self.codec in _LINE_COUNTABLE:
            return f"byte {offset} (line {_line_of_offset(self.path, offset)})"
        return f"byte {offset}"


def _whole_lines(handle: BinaryIO, decoder: _Decoder, chunk_bytes: int,
                 on_bytes: BytesFn | None) -> Iterator[str]:
    """Decoded blocks cut after their last line break; the rest goes on to the next."""
    carry = ""
    while True:
        raw = handle.read(chunk_bytes)
        if on_bytes is not None and raw:
            on_bytes(raw)
        text = carry + decoder.decode(raw)
        if not raw:
            if text:
                yield text
            return
        cut = text.rfind("\n") + 1
        if cut:
            yield text[:cut]
        carry = text[cut:]


def iter_chunks(path: str | Path, encoding: str = "utf-8", errors: str = "strict", *,
                chunk_bytes: int = CHUNK_BYTES, on_bytes: BytesFn | None = None) -> Iterator[str]:
    """The decoded text of a file in blocks that each end at a line break (the last block
    may lack one). ``.gz``, ``.bz2`` and ``.xz`` files are decompressed on the fly; a UTF-8
    byte-order mark is dropped. Undecodable bytes raise a one-line :class:`LmcliError`
    naming the file, the byte offset and the line, unless ``errors`` says otherwise.
    ``on_bytes`` sees every raw block (for hashing and progress).
    """
    path = check_readable(path)
    decoder = _Decoder(path, encoding, errors)
    try:
        with _open_binary(path) as handle:
            yield from _whole_lines(handle, decoder, chunk_bytes, on_bytes)
    except (OSError, EOFError, lzma.LZMAError) as error:
        raise LmcliError(f"cannot read {path}: {error}") from None


def chunk_lines(chunk: str) -> list[str]:
    """The lines of a block from :func:`iter_chunks` (the trailing line break ends the
    last line rather than starting an empty one)."""
    lines = chunk.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


@dataclass(frozen=True)
class TextFiles:
    """One or more text files read as one corpus, line after line."""

    paths: tuple[Path, ...]
    encoding: str = "utf-8"
    errors: str = "strict"

    @classmethod
    def of(cls, paths: Iterable[str | Path], encoding: str = "utf-8", errors: str = "strict",
           what: str = "corpus file") -> TextFiles:
        """The files, checked to be readable; ``what`` names them in errors."""
        resolved = tuple(Path(p) for p in paths)
        if not resolved:
            raise UsageError(f"no {what} given")
        if errors not in ("strict", "replace", "ignore"):
            raise SettingError(f"{{errors}} must be strict, replace or ignore, got {errors!r}")
        for path in resolved:
            check_readable(path, what)
        return cls(resolved, encoding, errors)

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.paths)

    def stamps(self) -> list[tuple[int, int]]:
        """Each file's (size, modification time in ns): what tells that one changed."""
        return [(stat.st_size, stat.st_mtime_ns) for stat in (path.stat() for path in self.paths)]

    def check_unchanged(self, stamps: list[tuple[int, int]]) -> None:
        """Refuse a result read from files that changed while they were read."""
        for path, before, now in zip(self.paths, stamps, self.stamps()):
            if before != now:
                raise LmcliError(f"{path} changed while it was read (size {before[0]:,} -> {now[0]:,} bytes); "
                                 "run again once it is written")

    def chunks(self, on_bytes: BytesFn | None = None) -> Iterator[str]:
        for path in self.paths:
            yield from iter_chunks(path, self.encoding, self.errors, on_bytes=on_bytes)

    def line_blocks(self, on_bytes: BytesFn | None = None) -> Iterator[list[str]]:
        for chunk in self.chunks(on_bytes):
            yield chunk_lines(chunk)


@dataclass(frozen=True)
class CorpusScan:
    """What one pass over the raw corpus tells: its fingerprint and its size in lines."""

    sha256: str
    num_bytes: int
    num_lines: int
    num_sentences: int  # non-blank lines


class _Fingerprint:
    """The SHA-256 and size of the raw bytes it sees, passing their count on."""

    def __init__(self, on_progress: ProgressFn | None) -> None:
        self.digest = hashlib.sha256()
        self.num_bytes = 0
        self.on_progress = on_progress

    def see(self, raw: bytes) -> None:
        self.digest.update(raw)
        self.num_bytes += len(raw)
        if self.on_progress is not None:
            self.on_progress(len(raw))


def scan(files: TextFiles, on_progress: ProgressFn | None = None) -> CorpusScan:
    """Hash the raw bytes, count lines, and check that the text decodes, in one pass."""
    fingerprint = _Fingerprint(on_progress)
    num_lines = num_sentences = 0
    for lines in files.line_blocks(fingerprint.see):
        num_lines += len(lines)
        num_sentences += sum(1 for line in lines if line.strip(WHITESPACE))
    return CorpusScan(fingerprint.digest.hexdigest(), fingerprint.num_bytes, num_lines, num_sentences)
