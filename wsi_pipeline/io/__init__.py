"""Slide reading: one ``open_slide`` over the formats of ``slide_formats.py``, tried in their order.

1. ``tiff-tiles``: TIFF-based slides (Aperio SVS, generic/OME pyramidal TIFF), the file's own tiles read directly (fast).
2. ``openslide``: every other format OpenSlide opens (NDPI, MRXS, SCN, BIF, DICOM) and TIFFs the fast path cannot read.
3. ``plain-image``: a plain RGB image (JPEG/PNG/strip TIFF), only when the user gives ``mpp``.

Example:
    >>> from wsi_pipeline.io import open_slide
    >>> with open_slide("../shared/data/slides/cmu-1-small-region.svs") as slide:  # doctest: +SKIP
    ...     slide.dimensions, slide.mpp, slide.backend
    ((2220, 2967), (0.499, 0.499), 'tiff-tiles')
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import SlideError
from ..slide_formats import SLIDE_FORMATS, SlideFormat
from .backends import SlideProbe
from .slide import Slide, check_path, plausible_mpp

__all__ = ["Slide", "open_slide", "plausible_mpp"]


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
    probe = SlideProbe.of(p)
    try:
        for fmt in SLIDE_FORMATS.values():
            slide = _opener(fmt)(p, mpp, probe)
            if slide is not None:
                return slide
    finally:
        probe.close()
    raise SlideError(p, "no slide format reads this file")  # only if the last format returned None


def _opener(fmt: SlideFormat) -> Callable[[Path, float | None, SlideProbe], Slide | None]:
    module, function = fmt.opener.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)
