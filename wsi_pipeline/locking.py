"""One worker per slide output folder: an OS file lock that dies with its process.

``wsi-run`` (and each Dask task of ``wsi-run --scheduler tcp://...``) holds an exclusive
``fcntl.flock`` on ``<slide folder>/.wsi.lock`` while it works on that slide. The kernel releases the
lock when the process ends, however it ends (``kill -9`` included), so a lock is never stale; the
file itself stays and is harmless. A second worker on the same folder either skips the slide or,
with ``--wait``, blocks until the first one is done and then finds the slide complete.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with SlideLock(d):
    ...     try:
    ...         SlideLock(d).acquire()
    ...     except SlideBusy as exc:
    ...         print("busy")
    busy
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import WsiError

LOCK_NAME = ".wsi.lock"
log = logging.getLogger(__name__)


class SlideBusy(WsiError):
    """Another process holds the lock of this slide folder (its pid in ``holder`` when known)."""

    holder: str = ""


class SlideLock:
    """Exclusive lock on ``folder/.wsi.lock``; use as a context manager, or ``acquire()``/``release()``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, wait: bool = False) -> SlideLock:
        """Take the lock; raise :class:`SlideBusy` when another process has it (or block, with ``wait``)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            busy = SlideBusy(self.folder, f"another wsi-run{who} is working on this slide; skipped "
                             "(use --wait to wait for it)")
            busy.holder = holder
            raise busy from None
        except BaseException:
            os.close(fd)
            raise
        try:  # who holds it, for the message of the next worker; the lock, not this text, is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {os.uname().nodename}\n".encode(), 0)
        except OSError:
            pass  # a full disk must not stop the lock from working
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SlideLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").split(" ")[0].strip()
    except OSError:
        return ""


@contextlib.contextmanager
def stage_lock(folder: str | os.PathLike[str]) -> Iterator[SlideLock]:
    """For the single-stage commands (``wsi tile/detect/report``, used by Snakemake): wait for the folder.

    A stage command must produce its output, so it waits (saying so) instead of skipping.
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    lock = SlideLock(folder)
    try:
        lock.acquire()
    except SlideBusy as exc:
        log.warning("%s: another process (pid %s) is working on this folder; waiting for it", folder,
                    getattr(exc, "holder", "") or "unknown")
        lock.acquire(wait=True)
    try:
        yield lock
    finally:
        lock.release()
