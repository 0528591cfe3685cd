"""What one Dask task does: open the slide (once per process), read a batch of patches, write their shards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WsiError
from ..io import Slide, open_slide
from ..store.patches import PatchStore

_SLIDES: dict[tuple[str, float | None], Slide] = {}
_STORES: dict[str, PatchStore] = {}


class TileTaskError(Exception):
    """A WsiError raised inside a worker, in a form that survives pickling back to the client."""

    def __init__(self, path: str | None, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = path, reason


@dataclass(frozen=True)
class ReadPlan:
    """How every patch is read: from ``level``, ``read_size`` level pixels square, resized to ``patch_size``."""

    slide_path: str
    user_mpp: float | None
    level: int
    read_size: int
    patch_size: int


def cached_slide(path: str, user_mpp: float | None) -> Slide:
    """The slide opened once per process (and shared by its threads)."""
    key = (path, user_mpp)
    if key not in _SLIDES:
        _SLIDES[key] = open_slide(path, mpp=user_mpp)
    return _SLIDES[key]


def read_patch(slide: Slide, plan: ReadPlan, x: int, y: int) -> np.ndarray:
    """One patch at level-0 position ``(x, y)``, resized with INTER_AREA when the level is finer than the target."""
    return slide.read_resized(plan.level, x, y, plan.read_size, plan.patch_size)


def tile_chunks(plan: ReadPlan, store_path: str, chunks: list[int]) -> int:
    """Read and write the given shards; returns the number of patches written."""
    try:
        slide = cached_slide(plan.slide_path, plan.user_mpp)
        if store_path not in _STORES:
            _STORES[store_path] = PatchStore.open(store_path, require_complete=False)
        store = _STORES[store_path]
        written = 0
        chunk = chunks[0] if chunks else 0
        for chunk in chunks:
            positions = store.coords[store.chunk_slice(chunk)]
            patches = np.stack([read_patch(slide, plan, int(x), int(y)) for x, y in positions])
            store.write_chunk(chunk, patches)
            written += len(patches)
        return written
    except WsiError as exc:
        raise TileTaskError(exc.path, exc.reason) from None
    except OSError as exc:  # e.g. disk full: name the shard being written (the OS error often names no file)
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(Path(store_path) / "patches" / "c" / str(chunk))) from exc
        raise


def forget(store_path: str | Path) -> None:
    """Drop a cached store handle (its attributes changed, e.g. after rebuilding)."""
    _STORES.pop(str(store_path), None)
