"""The slide-format registry: :func:`~wsi_pipeline.io.open_slide` tries the formats of :data:`SLIDE_FORMATS`
in order, and the file extensions ``wsi-run`` looks for and its errors come from the same entries.

A new format is one module in ``wsi_pipeline/io/`` with an opener ``(path, mpp, probe) -> Slide | None``
(None: not this format; see ``io/tiff_tiles.py`` ``open_tiff_tiles`` and ``io/backends.py``) and one line
here. The registry sits outside ``io/`` and names its openers instead of importing them, so that finding
slides and ``wsi-run --help`` do not load the slide libraries (OpenSlide, OpenCV: 0.6 s).

Example:
    >>> list(SLIDE_FORMATS)
    ['tiff-tiles', 'openslide', 'plain-image']
    >>> ".ndpi" in slide_extensions(), ".png" in slide_extensions(), ".png" in image_extensions()
    (True, False, True)
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import Registry


@dataclass(frozen=True)
class SlideFormat:
    """One way of reading slides: what it reads (for help and errors), its file extensions, its opener."""

    reads: str  # e.g. "SVS, generic and OME pyramidal TIFF"
    extensions: tuple[str, ...]
    opener: str  # "module:function" of wsi_pipeline.io, (path, mpp, SlideProbe) -> Slide | None
    needs_mpp: bool = False  # a plain image: taken only when the user gives --mpp


SLIDE_FORMATS: Registry[SlideFormat] = Registry("slide format", {
    "tiff-tiles": SlideFormat("SVS, generic and OME pyramidal TIFF", (".svs", ".tif", ".tiff", ".ome.tif", ".ome.tiff"),
                              "tiff_tiles:open_tiff_tiles"),
    "openslide": SlideFormat("NDPI, MRXS, SCN, BIF, DICOM and the other formats OpenSlide opens",
                             (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm"),
                             "backends:open_openslide"),
    "plain-image": SlideFormat("a plain JPEG, PNG or strip TIFF (with --mpp)", (".jpg", ".jpeg", ".png", ".webp"),
                               "backends:open_plain_image", needs_mpp=True),
})


def slide_extensions() -> set[str]:
    """Extensions of whole-slide files (found in folders without --mpp)."""
    return {e for f in SLIDE_FORMATS.values() if not f.needs_mpp for e in f.extensions}


def image_extensions() -> set[str]:
    """Extensions of plain images, read as one-level slides when --mpp is given."""
    return {e for f in SLIDE_FORMATS.values() if f.needs_mpp for e in f.extensions}


def supported_text() -> str:
    """The formats, for help texts and the "no slides found" error."""
    return "; ".join(f.reads for f in SLIDE_FORMATS.values())


__all__ = ["SLIDE_FORMATS", "SlideFormat", "image_extensions", "slide_extensions", "supported_text"]
