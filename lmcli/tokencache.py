"""Encoded corpora on disk: token ids in flat binary files, memory-mapped for training.

A large corpus is hundreds of millions of tokens, and reading, counting and encoding it is
the slow part of starting a run (benchmarks/BENCHMARKS.md, encode). So encoding streams
the text block by block into a file of ids (the narrowest integer type that holds the
vocabulary), and training reads its windows out of a read-only memory map of that file:
resident memory stays a fraction of the token array, and pages the kernel can drop at
will. Entries are keyed by everything that decides their bytes (the corpus's SHA-256, the
validation split, the tokenizer), so a second run on the same corpus with the same
settings skips the vocabulary and encoding passes.

Layout of a cache folder::

    vocab-KEY.pt        a tokenizer's state (plain data; torch.load(weights_only=True))
    tokens-KEY/         train.bin, valid.bin (raw ids), meta.json (dtype and counts)

An entry is written under a temporary name and renamed into place, so a crash or a
concurrent run never leaves a half-written entry that looks whole; an entry whose files
do not match its meta.json is ignored and rebuilt. The ``keep`` most recently used token
entries are kept, older ones removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from lmcli.parallel import map_blocks
from lmcli.tokenizers import EOS_ID, Tokenizer, array_dtype, encode_block, tokenizer_from_state

CACHE_VERSION = 1
CACHE_DIR_NAME = ".lmcli-tokens"
KEEP_ENTRIES = 4


def fingerprint(*parts: Any) -> str:
    """A short stable hash of plain data (bytes are hashed as they are)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:32]


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    state = tokenizer.to_state()
    return fingerprint({k: v for k, v in state.items() if not isinstance(v, bytes)},
                       *(v for v in state.values() if isinstance(v, bytes)))


class TokenWriter:
    """Appends encoded blocks to a file of ``dtype`` ids, starting with one <EOS> (the
    stream's implicit start, as :func:`lmcli.corpus.encode_stream` lays it out). As a context
    manager it closes the file on the way out, without syncing it to disk."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.handle: BinaryIO = open(path, "wb")
        self.count = 0
        self.add(np.array([EOS_ID]))

    def add(self, ids: np.ndarray) -> None:
        if len(ids):
            self.handle.write(np.ascontiguousarray(ids, dtype=self.dtype).tobytes())
            self.count += len(ids)

    def close(self) -> int:
        """Flush, sync to disk (the cache entry is about to be published) and close."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        return self.count

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.handle.close()


def encode_to_file(tokenizer: Tokenizer, blocks: Iterable[Sequence[str]], path: Path,
                   workers: int = 1) -> int:
    """Stream blocks of lines through the tokenizer (in ``workers`` processes when more than
    one) into ``path``; returns the id count."""
    with TokenWriter(path, array_dtype(tokenizer.vocab_size)) as writer:
        for ids in map_blocks(encode_block, tokenizer, blocks, workers, "encoding"):
            writer.add(ids)
        return writer.close()


RENUMBER_IDS = 1 << 20  # ids renumbered at a time: 4 MB of int32 in


def renumber_file(source: Path, count: int, table: np.ndarray, path: Path) -> int:
    """Write ``table[ids]`` for the ``count`` ids of ``source`` (a :class:`TokenWriter`
    file of int32, its leading <EOS> included) into a new one at ``path``; returns its id
    count. Read piece by piece, not memory-mapped, so the source never stays resident."""
    buffer = np.empty(min(RENUMBER_IDS, count), dtype=np.int32)
    with open(source, "rb") as handle, TokenWriter(path, table.dtype) as writer:
        handle.seek(buffer.itemsize)  # past the leading <EOS>: the writer writes its own
        for start in range(1, count, RENUMBER_IDS):
            piece = buffer[:min(RENUMBER_IDS, count - start)]
            if handle.readinto(piece) != piece.nbytes:
                raise OSError(f"{source} ended early")
            writer.add(table[piece])
        return writer.close()


def open_tokens(path: Path, dtype: str, count: int) -> np.ndarray:
    """A read-only memory map of ``count`` ids."""
    return np.memmap(path, dtype=np.dtype(dtype), mode="r", shape=(count,))


def cache_for_run(out_dir: Path) -> TokenCache | None:
    """The cache a training run uses: a folder next to the run folder (so runs under
    checkpoints/ share checkpoints/.lmcli-tokens), or ``$LMCLI_TOKEN_CACHE`` when set
    (``off`` encodes in memory, as for small corpora it may as well)."""
    setting = os.environ.get("LMCLI_TOKEN_CACHE", "").strip()
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    return TokenCache(Path(setting) if setting else Path(out_dir).resolve().parent / CACHE_DIR_NAME)


class TokenCache:
    """A folder of cached vocabularies and encoded token streams."""

    def __init__(self, root: Path, keep: int = KEEP_ENTRIES) -> None:
        self.root = Path(root)
        self.keep = keep

    # -- vocabularies

    def load_tokenizer(self, key: str) -> Tokenizer | None:
        path = self.root / f"vocab-{key}.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            return tokenizer_from_state(state)
        except Exception:  # missing, unreadable or damaged: rebuild it
            return None

    def store_tokenizer(self, key: str, tokenizer: Tokenizer) -> None:
        path = self.root / f"vocab-{key}.pt"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            torch.save(tokenizer.to_state(), partial)
            os.replace(partial, path)
        except OSError:
            pass  # a cache that cannot be written is only a slower next run

    # -- token streams

    def load_streams(self, key: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(train, valid) memory maps, or None when there is no whole entry."""
        folder = self.root / f"tokens-{key}"
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("version") != CACHE_VERSION:
                return None
            itemsize = np.dtype(meta["dtype"]).itemsize
            arrays: dict[str, np.ndarray | None] = {}
            for name in ("train", "valid"):
                count = meta[name]
                if count is None:
                    arrays[name] = None
                    continue
                path = folder / f"{name}.bin"
                if path.stat().st_size != count * itemsize:
                    return None
                arrays[name] = open_tokens(path, meta["dtype"], count)
            os.utime(folder)  # most recently used
        except (OSError, ValueError, KeyError, TypeError):
            return None
        train = arrays["train"]
        return (train, arrays["valid"]) if train is not None else None

    def new_entry(self, key: str) -> Path:
        """A private folder to write an entry into; :meth:`commit` publishes it."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / f"tokens-{key}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        folder.mkdir()
        return folder

    def commit(self, key: str, folder: Path, dtype: np.dtype, train: int, valid: int | None
               ) -> tuple[np.ndarray, np.ndarray | None]:
        (folder / "meta.json").write_text(json.dumps(
            {"version": CACHE_VERSION, "dtype": np.dtype(dtype).name, "train": train, "valid": valid}))
        final = self.root / f"tokens-{key}"
        try:
            os.rename(folder, final)
        except OSError:  # another run published the same entry first: use that one
            shutil.rmtree(folder, ignore_errors=True)
        self.prune()
        loaded = self.load_streams(key)
        if loaded is None:
            raise OSError(f"token cache entry {final} could not be read back")
        return loaded

    def discard(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def prune(self) -> None:
        """Keep the ``keep`` most recently used token entries; leftovers of crashed runs
        (temporary folders over a day old) go too."""
        try:
            entries = [p for p in self.root.iterdir() if p.name.startswith("tokens-")]
        except OSError:
            return
        done = sorted((p for p in entries if not p.name.endswith(".tmp")),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        stale = [p for p in entries if p.name.endswith(".tmp") and time.time() - p.stat().st_mtime > 86400]
        for path in done[self.keep:] + stale:
            shutil.rmtree(path, ignore_errors=True)
