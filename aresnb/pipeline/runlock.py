"""One writer per run folder: an OS file lock (``flock``) on ``<run>/run.lock``.

The lock is held for as long as ``aresnb run`` writes the folder. The operating system releases
it however the process ends (return, exception, Ctrl-C, ``kill -9``, a crash), so a lock is never
stale: there is nothing to clean up after a crash. The holder writes its PID (and when and how it
started) into the file, so a second run that finds the folder locked refuses at once and says who
holds it. The file itself stays behind; only the lock on it matters.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import sys
from pathlib import Path


class RunFolderLocked(RuntimeError):
    """Another process holds the run folder's lock."""


class RunLock:
    """``with RunLock(path): ...`` holds an exclusive, non-blocking flock on ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime; not inherited by children
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().split("\n")
            f.close()
            pid = holder[0].strip() or "unknown"
            since = f", since {holder[1]}" if len(holder) > 1 and holder[1] else ""
            raise RunFolderLocked(f"{self.path.parent} is in use by another aresnb run (PID {pid}{since}); "
                                  "wait for it to finish, or give this run another run.name") from None
        f.seek(0)
        f.truncate()
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        f.write(f"{os.getpid()}\n{started}\n{' '.join(sys.argv)}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
