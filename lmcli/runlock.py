"""One training run per output folder: a lock file holding the owner's pid.

``lmcli train`` takes ``DIR/.lock`` before it reads the corpus and lets it go when it ends,
however it ends (a crash included: the ``finally`` runs; a ``kill -9`` leaves the file,
and the next run sees that its pid is gone and takes it over). A second run into the same
folder while the owner lives is refused, unless it is forced.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from lmcli.errors import LmcliError, SettingError

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class RunLock:
    """``with RunLock(out_dir, force=...):`` holds the folder for the block."""

    def __init__(self, out_dir: Path, *, force: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.force = force
        self.created_dir = False
        self.held = False

    def owner(self) -> dict | None:
        """The lock's holder as recorded, or None when there is no readable lock."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        if not self.out_dir.exists():
            self.out_dir.mkdir(parents=True)
            self.created_dir = True
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self.owner()
                if owner is None and time.time() - self._mtime() < 2.0:
                    time.sleep(0.2)  # being written this instant by another run
                    continue
                if owner is not None and not self.force and self._live(owner):
                    raise SettingError(
                        f"{self.out_dir} is in use by another lmcli train (pid {owner.get('pid')} "
                        f"on {owner.get('host')}); wait for it, choose another {{out}}, or {{force}}")
                self.path.unlink(missing_ok=True)  # stale (its owner is gone) or forced
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(record)
            self.held = True
            return
        raise LmcliError(f"could not take the lock {self.path}; is another run starting there?")

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    @staticmethod
    def _live(owner: dict) -> bool:
        if owner.get("host") != socket.gethostname():
            return True  # another machine's process: cannot be checked, so assume it runs
        return _alive(int(owner.get("pid", -1))) and int(owner.get("pid", -1)) != os.getpid()

    def release(self, *, remove_dir_if_empty: bool = False) -> None:
        if self.held:
            owner = self.owner()
            if owner is None or owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
        if remove_dir_if_empty and self.created_dir:
            try:
                self.out_dir.rmdir()  # only if nothing else was written
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release(remove_dir_if_empty=kind is not None)
