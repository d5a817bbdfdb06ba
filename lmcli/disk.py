"""The disk under a run: how much room it has, and what a failed write means.

A write can fail because the filesystem is full (ENOSPC), a quota or a file-size limit is
reached (EDQUOT, EFBIG), the folder is read-only or not writable (EROFS, EACCES, EPERM),
or the device fails (EIO). PyTorch's checkpoint writer reports the same failures as a
``RuntimeError`` of its own ("unexpected pos", "file write failed") without the reason;
the free space then tells a full disk from the rest. Each becomes one plain line saying
what ran out, where, and how much was needed.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
from pathlib import Path

import torch

from lmcli.errors import LmcliError

MB = 1 << 20
# How PyTorch's zip writer says that a write did not go through.
TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
REASONS = {
    errno.ENOSPC: "no space left on",
    errno.EDQUOT: "the disk quota is exceeded on",
    errno.EFBIG: "the file size limit is reached on",
    errno.EROFS: "read-only filesystem:",
    errno.EACCES: "no permission to write on",
    errno.EPERM: "no permission to write on",
    errno.EIO: "input/output error on",
}


class StorageError(LmcliError):
    """A write the disk refused, with what is known about it."""

    def __init__(self, message: str, path: Path, needed: int | None = None) -> None:
        super().__init__(message)
        self.path, self.needed = path, needed


def _existing(folder: Path) -> Path:
    """``folder``, or its nearest parent that exists (a run folder not made yet)."""
    path = Path(folder).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(folder: Path) -> int | None:
    """Bytes a non-root user can still write under ``folder``."""
    try:
        return shutil.disk_usage(_existing(folder)).free
    except OSError:
        return None


def device_of(folder: Path) -> str:
    """The mount point ``folder`` lives on: what a user recognises as the disk."""
    path = _existing(folder)
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)


def tensor_bytes(value: object) -> int:
    """The bytes of every tensor in a nested payload (what a checkpoint file mostly is)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return 0


def megabytes(count: int | None) -> str:
    return "?" if count is None else f"{count / MB:,.1f} MB" if count < 10 * MB else f"{count / MB:,.0f} MB"


def write_failure(path: Path, error: BaseException, needed: int | None) -> StorageError | None:
    """The plain error for a failed write of ``path`` (``needed`` bytes about), or None when
    ``error`` is not a storage failure (it is then a bug worth its traceback)."""
    code = error.errno if isinstance(error, OSError) else None
    if code is None and not (isinstance(error, RuntimeError) and any(s in str(error) for s in TORCH_WRITE_FAILURES)):
        return None
    folder = path.parent
    free = free_bytes(folder)
    if code is None:  # PyTorch's writer does not say why: what was needed against what was allowed
        code = _likely_cause(needed, free)
    if code is None:
        first = (str(error).strip().splitlines() or [""])[0]
        return StorageError(f"could not write {path}: the writer stopped short ({first})", path, needed)
    reason = REASONS.get(code)
    if reason is None:
        return StorageError(f"could not write {path}: {os.strerror(code)}", path, needed)
    sizes = ""
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        sizes = f" ({f'about {megabytes(needed)} needed, ' if needed else ''}{megabytes(free)} free)"
    return StorageError(f"{reason} {device_of(folder)} writing {path.name}{sizes}", path, needed)


def _likely_cause(needed: int | None, free: int | None) -> int | None:
    """Why a write of ``needed`` bytes stopped short, as an errno: a file-size limit below
    it, or less free space than it; None if neither."""
    if needed is None:
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and needed > limit:
        return errno.EFBIG
    if free is not None and free < needed + MB:
        return errno.ENOSPC
    return None


def check_room(folder: Path, needed: int, what: str) -> None:
    """Refuse to start what will need ``needed`` bytes in ``folder`` when it has less."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise StorageError(f"not enough space on {device_of(folder)} for {what}: about {megabytes(needed)} "
                           f"needed, {megabytes(free)} free; free some space or choose another --out",
                           Path(folder), needed)
