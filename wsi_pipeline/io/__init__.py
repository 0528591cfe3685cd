"""Slide reading: one ``open_slide`` over three backends.

1. TIFF-based slides (Aperio SVS, generic/OME pyramidal TIFF): the file's own tiles, read directly (fast).
2. OpenSlide for every other format it opens (NDPI, MRXS, SCN, BIF, DICOM) and TIFFs the fast path cannot read.
3. A plain RGB image (JPEG/PNG/strip TIFF), only when the user gives ``mpp``.

Example:
    >>> from wsi_pipeline.io import open_slide
    >>> with open_slide("../shared/data/slides/cmu-1-small-region.svs") as slide:  # doctest: +SKIP
    ...     slide.dimensions, slide.mpp, slide.backend
    ((2220, 2967), (0.499, 0.499), 'tiff-tiles')
"""

from __future__ import annotations

import os
from pathlib import Path

import openslide

from ..errors import SlideError
from .backends import OpenSlideSlide, PlainImageSlide, load_plain_image
from .slide import Slide, check_path, plausible_mpp
from .tiff_tiles import FastPathUnsupported, TiffTileSlide

__all__ = ["Slide", "open_slide", "plausible_mpp"]

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
FAST_PATH_VENDORS = {"aperio", "generic-tiff", None}


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in TIFF_MAGIC


def open_slide(path: str | os.PathLike[str], mpp: float | None = None) -> Slide:
    """Open a whole-slide image (or, with ``mpp``, a plain image); SlideError with the reason otherwise.

    ``mpp`` (um/px at level 0) overrides the file's own resolution.
    """
    try:
        return _open_slide(path, mpp)
    except (SlideError, MemoryError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file makes the parsers fail in many ways
        raise SlideError(path, f"damaged or unsupported file ({exc.__class__.__name__}: {str(exc)[:120] or 'no detail'})") from None


def _open_slide(path: str | os.PathLike[str], mpp: float | None) -> Slide:
    p = check_path(path)
    try:
        vendor = openslide.OpenSlide.detect_format(str(p))
    except openslide.OpenSlideError:
        vendor = None
    handle: openslide.OpenSlide | None = None
    open_error = ""
    if vendor is not None:
        try:
            handle = openslide.OpenSlide(str(p))
        except openslide.OpenSlideError as exc:
            open_error = str(exc).rstrip(".")
    not_fast = ""
    if vendor in FAST_PATH_VENDORS and _is_tiff(p):
        try:
            slide = TiffTileSlide(
                p,
                mpp,
                levels=list(handle.level_dimensions) if handle else None,
                downsamples=list(handle.level_downsamples) if handle else None,
                properties=dict(handle.properties) if handle else None,
                associated=list(handle.associated_images.keys()) if handle else None,
                vendor=vendor,
            )
        except FastPathUnsupported as exc:
            if exc.fatal or (handle is None and "compression" in str(exc)):
                if handle is not None:
                    handle.close()
                raise SlideError(p, str(exc)) from None
            not_fast = str(exc)
        except SlideError:
            if handle is not None:
                handle.close()
            raise
        else:
            if handle is not None:
                handle.close()
            return slide
    if handle is not None:
        return OpenSlideSlide(p, handle, mpp)
    if open_error:
        raise SlideError(p, open_error)
    if mpp is not None:
        return PlainImageSlide(p, mpp)
    load_plain_image(p)  # raises "not a slide or image ..." for anything that is not an image at all
    kind = "a plain (non-pyramidal) image" if not_fast else "a plain image"
    raise SlideError(p, f"is {kind} with no resolution; pass --mpp to tile it as one level")
