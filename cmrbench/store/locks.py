"""Job locks: an ``flock`` on a job folder's ``.lock`` file that dies with its process.

The kernel drops an ``flock`` when the holding process exits, even by SIGKILL, so a lock
never needs manual cleanup (DESIGN.md, "Cell").
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from cmrbench.store.layout import LOCK


class JobLock:
    """A non-blocking or blocking ``flock`` on ``folder/.lock``."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOCK
        self._file: IO[str] | None = None

    def acquire(self, blocking: bool = False) -> bool:
        """Take the lock; False if another process holds it and ``blocking`` is False."""
        self._file = open(self.path, "a")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            self._file.close()
            self._file = None
            return False
        return True

    def release(self) -> None:
        """Drop the lock (a no-op when it is not held)."""
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
