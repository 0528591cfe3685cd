"""Stage 1: cut a slide's cell-bearing area into overlapping patches, in parallel with Dask, into a zarr store.

Example:
    >>> from wsi_pipeline.config import load_config
    >>> result = tile_slide("slide.svs", "work/slide", load_config().tiling)  # doctest: +SKIP
    >>> result.n_patches, result.store_path.name  # doctest: +SKIP
    (412, 'patches.zarr')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..config import TilingConfig
from ..errors import ArtifactError, SlideError
from ..fsutil import TMP_GLOB, atomic_path
from ..io import Slide, open_slide
from ..store.artifacts import MASK_NAME, STORE_NAME
from ..progress import progress_bar
from ..store.patches import VERSION, PatchStore
from .grid import GridSpec, covered_fraction, grid_positions, patches_in_mask
from .mask import cell_area_mask
from .parallel import run_tasks
from .worker import ReadPlan, TileTaskError, forget, tile_chunks

__all__ = ["TilingResult", "tile_slide", "store_identity"]

log = logging.getLogger(__name__)


@dataclass
class TilingResult:
    """What ``tile_slide`` produced (or found already complete)."""

    store_path: Path
    mask_path: Path
    n_patches: int
    n_grid: int  # patches in the full grid before the mask
    kept_area_mm2: float  # slide area covered by kept patches
    kept_fraction: float  # of the slide area
    cell_area_mm2: float  # stained area found by the mask (before dilation)
    seconds: float
    reused: bool = False  # a complete store for the same slide and parameters was found
    chunks_written: int = 0


def store_identity(slide_fingerprint: str, cfg: TilingConfig) -> str:
    """Hash of everything that shapes the store: the slide content and the tiling parameters (not workers).

    Example:
        >>> from wsi_pipeline.config import TilingConfig
        >>> store_identity("abc", TilingConfig()) == store_identity("abc", TilingConfig(workers=7))
        True
    """
    params = dataclasses.asdict(cfg)
    for runtime_only in ("scheduler", "workers", "batch_patches"):
        params.pop(runtime_only)
    blob = json.dumps({"slide": slide_fingerprint, "tiling": params, "store_version": VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _describe(slide: Slide) -> str:
    w, h = slide.dimensions
    mm = (w * slide.mpp[0] / 1000, h * slide.mpp[1] / 1000)
    return (f"{slide.name}: {w} x {h} px at {slide.mpp[0]:.3f} um/px ({mm[0]:.1f} x {mm[1]:.1f} mm), "
            f"{slide.vendor}, {slide.level_count} levels, read via {slide.backend}")


def _existing_store(store_path: Path, identity: str, force: bool) -> PatchStore | None:
    """The store to reuse or resume, or None to build afresh (after removing a mismatched one with force)."""
    if not store_path.exists():
        return None
    store = PatchStore.open(store_path, require_complete=False)
    if store.fingerprint == identity:
        return store
    if not force:
        raise ArtifactError(store_path, "was made from a different slide or with different tiling parameters; "
                            "use --force to rebuild it, or choose another --out")
    log.warning("Removing %s: it was made from a different slide or parameters (--force)", store_path)
    PatchStore.remove(store_path)
    forget(store_path)
    return None


def tile_slide(
    slide_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    cfg: TilingConfig,
    mpp: float | None = None,
    progress: bool = True,
    force: bool = False,
) -> TilingResult:
    """Tile one slide into ``out_dir/patches.zarr`` (+ ``mask.png``); resumes or reuses a matching store."""
    started = time.perf_counter()
    out = Path(out_dir)
    store_path, mask_path = out / STORE_NAME, out / MASK_NAME
    with open_slide(slide_path, mpp=mpp) as slide:
        log.info("Slide %s", _describe(slide))
        identity = store_identity(slide.fingerprint(), cfg)
        store = _existing_store(store_path, identity, force)
        if store is not None and store.is_complete:
            log.info("A complete patch store for this slide and these settings exists; reusing %s", store_path)
            return _result(store, mask_path, time.perf_counter() - started, reused=True)
        spec = GridSpec(cfg.patch_size, cfg.overlap, cfg.target_mpp, slide.mpp[0])
        w, h = slide.dimensions
        if w < spec.size0 or h < spec.size0:
            raise SlideError(slide.path, f"slide is {w} x {h} px, smaller than one patch "
                             f"({spec.size0:.0f} px = {cfg.patch_size} px at {cfg.target_mpp} um/px)")
        plan = ReadPlan(str(slide.path), mpp, *slide.read_plan_for_mpp(cfg.patch_size, cfg.target_mpp), cfg.patch_size)
        if store is None:
            store = _new_store(slide, store_path, mask_path, spec, plan, identity, cfg)
        else:
            log.info("Resuming an interrupted run: %d of %d chunks missing", len(store.missing_chunks()), store.n_chunks)
    missing = store.missing_chunks()
    _cleanup_partial_files(store_path)
    chunks_per_task = max(1, cfg.batch_patches // store.patches_per_chunk)
    task_args = [(plan, str(store_path), missing[i : i + chunks_per_task]) for i in range(0, len(missing), chunks_per_task)]
    todo = sum(len(range(*store.chunk_slice(c).indices(store.n_patches))) for c in missing)
    with progress_bar(total=todo, unit="patch", desc=f"tiling {Path(slide_path).name}", disable=not progress) as bar:
        try:
            run_tasks(tile_chunks, task_args, cfg.scheduler, cfg.workers, bar)
        except TileTaskError as exc:
            raise SlideError(exc.path, exc.reason) from None
    seconds = time.perf_counter() - started
    store.mark_complete(seconds=round(seconds, 2))
    forget(store_path)
    log.info("Wrote %d patches to %s in %.1f s (%.0f patches/s)", todo, store_path, seconds, todo / max(seconds, 1e-9))
    return _result(store, mask_path, seconds, chunks_written=len(missing))


def _result(store: PatchStore, mask_path: Path, seconds: float, **kw: object) -> TilingResult:
    m = store.meta
    return TilingResult(store.path, mask_path, store.n_patches, int(m.n_grid or 0), float(m.kept_area_mm2 or 0.0),
                        float(m.kept_fraction or 0.0), float(m.cell_area_mm2), seconds, **kw)  # type: ignore[arg-type]


def _new_store(slide: Slide, store_path: Path, mask_path: Path, spec: GridSpec, plan: ReadPlan, identity: str,
               cfg: TilingConfig) -> PatchStore:
    """Compute the mask and grid, write mask.png, and create the (incomplete) store with its coordinates."""
    t0 = time.perf_counter()
    mask_mpp = max(cfg.mask.mpp, slide.mpp[0])
    thumb = slide.thumbnail(mask_mpp)
    cells = cell_area_mask(thumb, mask_mpp, cfg.mask)
    positions = grid_positions(*slide.dimensions, spec)
    keep = patches_in_mask(positions, spec.size0, cells.mask, mask_mpp, slide.mpp[0], cfg.mask.min_patch_fraction)
    kept = positions[keep]
    if len(kept) == 0:
        raise SlideError(slide.path, "no stained cells found: the slide looks like empty glass (all background)")
    w, h = slide.dimensions
    slide_area_mm2 = w * h * slide.mpp[0] * slide.mpp[1] / 1e6
    covered = covered_fraction(kept, spec.size0, cells.mask.shape, mask_mpp, slide.mpp[0])
    kept_fraction = float(covered.mean())
    kept_area = kept_fraction * slide_area_mm2
    log.info("Cell area %.2f mm2 (threshold %.2f); keeping %d of %d patches covering %.2f mm2 (%.0f%% of the slide); "
             "mask took %.1f s", cells.cell_area_mm2, cells.threshold, len(kept), len(positions), kept_area,
             100 * kept_fraction, time.perf_counter() - t0)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    _write_png(mask_path, cells.mask)
    building = store_path.with_name(store_path.name + ".creating")
    if building.exists():
        shutil.rmtree(building)
    PatchStore.create(
        building, kept, patch_size=cfg.patch_size, overlap=cfg.overlap, target_mpp=cfg.target_mpp, scale=spec.scale,
        level=plan.level, slide_info=slide.info(), identity=identity, codec=cfg.codec, jpeg_quality=cfg.jpeg_quality,
        patches_per_chunk=cfg.patches_per_chunk,
        extra={
            "level_downsample": slide.level_downsamples[plan.level], "read_size": plan.read_size,
            "n_grid": int(len(positions)), "cell_area_mm2": cells.cell_area_mm2, "kept_area_mm2": kept_area,
            "kept_fraction": kept_fraction, "mask": {**dataclasses.asdict(cfg.mask), "used_mpp": mask_mpp,
                                                     "threshold_used": cells.threshold, "file": MASK_NAME},
        },
    )
    os.replace(building, store_path)  # appears under its real name only once fully initialised
    return PatchStore.open(store_path, require_complete=False)


def _write_png(path: Path, mask: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), mask.astype(np.uint8) * 255):
            raise ArtifactError(path, "could not write the mask image")


def _cleanup_partial_files(store_path: Path) -> None:
    """Remove temp files a killed worker left mid-write (their chunks are not flagged done)."""
    for leftover in store_path.glob(f"*/c/**/{TMP_GLOB}"):
        leftover.unlink(missing_ok=True)
