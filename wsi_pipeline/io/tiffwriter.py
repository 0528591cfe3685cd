"""Write tiled, JPEG-compressed pyramidal BigTIFFs that OpenSlide opens as Aperio slides.

Memory stays independent of the slide size: level-0 tiles are streamed from ``read_tile`` and each
lower level is built block by block from a disk-backed scratch copy of the level above (a numpy memmap
in a temporary folder beside the output, 1/16 of the level above per 4x step), never from RAM.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import tifffile

from .. import __version__
from ..fsutil import atomic_path

ReadTile = Callable[[int, int, int, int], np.ndarray]
LEVEL_STEP = 4  # downsample between pyramid levels, as Aperio scanners write


def default_levels(width: int, height: int, tile_size: int) -> int:
    """Levels until the smallest one fits in about one tile (at least 1).

    Example:
        >>> default_levels(100_000, 80_000, 512), default_levels(400, 300, 512)
        (5, 1)
    """
    longest = max(width, height)
    return 1 + max(0, math.ceil(math.log(max(longest / tile_size, 1), LEVEL_STEP)))


def aperio_description(width: int, height: int, tile_size: int, quality: int, mpp: float, extra: str | None) -> str:
    """Aperio-style ImageDescription: OpenSlide detects the vendor from its first word and reads ``MPP``."""
    mag = 40 if mpp < 0.35 else 20 if mpp < 0.75 else 10
    fields = [f"AppMag = {mag}", f"MPP = {mpp:.6g}", f"Software = wsi_pipeline {__version__}"]
    if extra:
        fields.append(extra.replace("|", "/").replace("\n", " "))
    return (
        f"Aperio Image Library v12.0.0 (wsi_pipeline)\r\n{width}x{height} [0,0 {width}x{height}] "
        f"({tile_size}x{tile_size}) JPEG/RGB Q={quality}|" + "|".join(fields)
    )


def _tiles(
    read_tile: ReadTile, width: int, height: int, tile_size: int, scratch: np.ndarray | None
) -> Iterator[np.ndarray]:
    """Tiles in TIFF order (rows of columns), padded white to full size; each is also shrunk into ``scratch``."""
    for y in range(0, height, tile_size):
        for x in range(0, width, tile_size):
            w, h = min(tile_size, width - x), min(tile_size, height - y)
            pixels = np.asarray(read_tile(x, y, w, h), dtype=np.uint8)[:h, :w, :3]
            if scratch is not None:
                sx0, sy0 = x // LEVEL_STEP, y // LEVEL_STEP
                sw, sh = max(1, -(-w // LEVEL_STEP)), max(1, -(-h // LEVEL_STEP))
                sw, sh = min(sw, scratch.shape[1] - sx0), min(sh, scratch.shape[0] - sy0)
                scratch[sy0 : sy0 + sh, sx0 : sx0 + sw] = cv2.resize(pixels, (sw, sh), interpolation=cv2.INTER_AREA)
            if pixels.shape[:2] != (tile_size, tile_size):
                tile = np.full((tile_size, tile_size, 3), 255, np.uint8)
                tile[:h, :w] = pixels
                pixels = tile
            yield np.ascontiguousarray(pixels)


def write_pyramidal_tiff(
    path: str | os.PathLike[str],
    width: int,
    height: int,
    read_tile: ReadTile,
    mpp: float,
    tile_size: int = 512,
    quality: int = 85,
    levels: int | None = None,
    description_extra: str | None = None,
) -> Path:
    """Write a tiled JPEG pyramidal BigTIFF (Aperio flavour); ``read_tile(x, y, w, h)`` gives level-0 RGB pixels.

    Example:
        >>> import tempfile, numpy as np
        >>> p = Path(tempfile.mkdtemp()) / "grey.svs"
        >>> _ = write_pyramidal_tiff(p, 1500, 900, lambda x, y, w, h: np.full((h, w, 3), 200, np.uint8), mpp=0.25)
        >>> from wsi_pipeline.io import open_slide
        >>> with open_slide(p) as s:
        ...     s.vendor, s.level_dimensions, s.mpp
        ('aperio', [(1500, 900), (375, 225)], (0.25, 0.25))
    """
    path = Path(path)
    n_levels = levels or default_levels(width, height, tile_size)
    description = aperio_description(width, height, tile_size, quality, mpp, description_extra)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".pyramid-") as scratch_dir, atomic_path(path) as tmp_path:
        source: ReadTile = read_tile
        level_w, level_h = width, height
        with tifffile.TiffWriter(tmp_path, bigtiff=True) as tif:
            for level in range(n_levels):
                last = level == n_levels - 1
                scratch = None
                if not last:
                    next_w, next_h = max(1, -(-level_w // LEVEL_STEP)), max(1, -(-level_h // LEVEL_STEP))
                    scratch = np.lib.format.open_memmap(
                        Path(scratch_dir) / f"level{level + 1}.npy", mode="w+", dtype=np.uint8, shape=(next_h, next_w, 3)
                    )
                tif.write(
                    _tiles(source, level_w, level_h, tile_size, scratch),
                    shape=(level_h, level_w, 3),
                    dtype=np.uint8,
                    tile=(tile_size, tile_size),
                    photometric="rgb",
                    compression="jpeg",
                    compressionargs={"level": quality},
                    subfiletype=0 if level == 0 else 1,
                    description=description if level == 0 else None,
                    metadata=None,
                    software=False,
                )
                if scratch is not None:
                    scratch.flush()
                    source = _memmap_reader(scratch)
                    level_w, level_h = scratch.shape[1], scratch.shape[0]
    return path


def _memmap_reader(level: np.ndarray) -> ReadTile:
    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        return np.asarray(level[y : y + h, x : x + w])

    return read


def mirrored_tiling(image: np.ndarray) -> ReadTile:
    """``read_tile`` over an endless plane tiled with ``image`` and its mirror images, so the content is
    continuous across copies; for slides of any size built from one real field (benchmarks).

    Example:
        >>> read = mirrored_tiling(np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3))
        >>> tile = read(0, 0, 12, 8)
        >>> tile.shape, bool((tile[:, 6:] == tile[:, 5::-1]).all()), bool((tile[4:] == tile[3::-1]).all())
        ((8, 12, 3), True, True)
    """
    h, w = image.shape[:2]
    period = np.concatenate([np.concatenate([image, image[:, ::-1]], 1), np.concatenate([image[::-1], image[::-1, ::-1]], 1)], 0)

    def read_tile(x: int, y: int, tile_w: int, tile_h: int) -> np.ndarray:
        return period[np.arange(y, y + tile_h) % (2 * h)][:, np.arange(x, x + tile_w) % (2 * w)]

    return read_tile


def wrap_image_as_slide(image: np.ndarray, path: str | os.PathLike[str], mpp: float, **kwargs: object) -> Path:
    """Turn an RGB image (e.g. a real cytology field) into a pyramidal slide at ``mpp``; used by tests and demos.

    Example:
        >>> import tempfile, numpy as np
        >>> p = wrap_image_as_slide(np.zeros((600, 700, 3), np.uint8), Path(tempfile.mkdtemp()) / "x.svs", 0.25)
        >>> p.exists()
        True
    """
    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.shape} {image.dtype}")
    rgb = image[..., :3]
    return write_pyramidal_tiff(
        path, rgb.shape[1], rgb.shape[0], lambda x, y, w, h: rgb[y : y + h, x : x + w], mpp=mpp, **kwargs  # type: ignore[arg-type]
    )
