"""The seam between stored patches and inference: what a patch source must offer.

Inference (``detect_store``) reads only through :class:`PatchSource`; the zarr patch store
(:class:`wsi_pipeline.store.patches.PatchStore`) is one implementation. Another backend (a
different container, an in-memory array, a remote store) implements these attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .contracts import SlideInfo, StoreRecord


@runtime_checkable
class PatchSource(Protocol):
    """Patches of one slide at one resolution, with their level-0 origins.

    ``patches[start:stop]`` returns a ``(B, P, P, 3)`` uint8 array; reads are fastest in whole
    chunks of ``patches_per_chunk`` patches. ``scale`` maps patch pixels to level-0 pixels.
    """

    path: Path

    @property
    def patches(self) -> Any: ...
    @property
    def coords(self) -> np.ndarray: ...
    @property
    def n_patches(self) -> int: ...
    @property
    def patch_size(self) -> int: ...
    @property
    def patches_per_chunk(self) -> int: ...
    @property
    def overlap(self) -> int: ...
    @property
    def target_mpp(self) -> float: ...
    @property
    def scale(self) -> float: ...
    @property
    def slide_info(self) -> SlideInfo: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def cell_area_mm2(self) -> float: ...
    @property
    def tiling_seconds(self) -> float | None: ...


def store_record(store: PatchSource) -> StoreRecord:
    """The ``store`` section of the detections metadata for an open patch source."""
    return StoreRecord(path=str(store.path), fingerprint=store.fingerprint, target_mpp=store.target_mpp,
                       patch_size=store.patch_size, overlap=store.overlap, n_patches=store.n_patches,
                       cell_area_mm2=store.cell_area_mm2, seconds=store.tiling_seconds)


def open_patch_source(path: str | Path) -> PatchSource:
    """Open a complete patch source; today every source is a zarr patch store (``wsi tile``)."""
    from .patches import PatchStore  # zarr is imported only when a store is opened

    return PatchStore.open(path, require_complete=True)
