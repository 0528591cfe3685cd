"""Disk space: refuse a slide early when its patch store will not fit, and recognise a full disk.

Example:
    >>> import errno
    >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    True
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .errors import WsiError

# room kept for everything but the patch store (detections, report, crops, logs)
MARGIN_BYTES = 20 * 1024**2
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(WsiError):
    """Not enough free space for a slide (checked before it starts)."""


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC / EDQUOT, also when wrapped as the cause of another exception."""
    while exc is not None:
        if isinstance(exc, OSError) and (exc.errno in _FULL or "no space left on device" in str(exc).lower()):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def describe_os_error(exc: OSError, folder: str | os.PathLike[str] | None = None) -> str:
    """One line for an I/O failure, naming the file.

    Example:
        >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device", "out/s/detections.parquet"))
        'no space left on device while writing out/s/detections.parquet'
    """
    name = exc.filename
    where = f" while writing {name}" if name else f" while writing to {folder}" if folder else ""
    if is_disk_full(exc) and exc.errno != errno.EDQUOT:
        return f"no space left on device{where}"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded{where}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "read-only file system" if exc.errno == errno.EROFS else "permission denied"
        return f"{name}: {what}" if name else what
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    return f"{name}: {reason}" if name else reason


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist)."""
    if not path.exists():
        return 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def check_free_space(out_dir: Path, estimate_bytes: float, store_path: Path, what: str) -> None:
    """Raise :class:`DiskFullError` when ``out_dir``'s file system cannot hold the rest of the patch store.

    ``estimate_bytes`` is the dry run's estimate of the whole store (``wsi-run --dry-run``); what an
    interrupted run already wrote counts as done.
    """
    probe = out_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    needed = max(0.0, estimate_bytes - folder_bytes(store_path)) + MARGIN_BYTES
    if free < needed:
        raise DiskFullError(what, f"not enough free space in {out_dir}: the slide needs about {needed / 1e6:.0f} MB "
                            f"(dry-run estimate of its patch store plus {MARGIN_BYTES / 1e6:.0f} MB), "
                            f"{free / 1e6:.0f} MB free; free some space, or pass --skip-space-check")


def remove_temp_files(folder: Path) -> int:
    """Delete half-written ``*.tmp`` files a failed write left in ``folder``; returns how many."""
    n = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.endswith((".tmp", ".partial")) or ".tmp." in name:
                try:
                    os.unlink(os.path.join(root, name))
                    n += 1
                except OSError:
                    pass
    return n
