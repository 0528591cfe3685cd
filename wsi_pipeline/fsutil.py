"""Atomic file writes: a reader never sees a half-written file under its final name.

Every artifact (shards, tables, reports, checkpoints, masks, TIFFs) is written to a hidden
temporary sibling ``.<name>.<pid>.tmp<suffix>`` and renamed onto its final name. The temporary
keeps the final suffix, so writers that pick a format by extension (OpenCV, NumPy) still work.
If the write fails the temporary is removed.

Example:
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.json"
    >>> atomic_write(p, '{"ok": true}').read_text()
    '{"ok": true}'
    >>> with atomic_path(p.with_name("b.txt")) as tmp:
    ...     _ = tmp.write_text("x")
    ...     tmp.name.startswith(".b.txt.") and tmp.suffix == ".txt"
    True
    >>> sorted(f.name for f in p.parent.iterdir())
    ['a.json', 'b.txt']
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_GLOB = ".*.tmp*"  # matches every temporary this module creates


def temp_sibling(path: Path) -> Path:
    """The temporary name used while ``path`` is being written (unique per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed."""
    final = Path(path)
    tmp = temp_sibling(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: str | bytes, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text or bytes) to ``path`` atomically; returns the path."""
    final = Path(path)
    with atomic_path(final) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding=encoding)
    return final


def cache_dir() -> Path:
    """Per-user cache (crash logs): ``$WSI_PIPELINE_CACHE``, default ``~/.cache/wsi_pipeline``."""
    return Path(os.environ.get("WSI_PIPELINE_CACHE", Path.home() / ".cache" / "wsi_pipeline"))
