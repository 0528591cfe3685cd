"""The analysed slide as found at report time (``wsi report`` and the review page): open, or a note saying
why not, in which case the report has no thumbnail and no cell crops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SlideError, WsiError
from ..io.slide import Slide
from ..store.contracts import DetectionsMeta, SlideInfo


@dataclass
class SlideAccess:
    """The slide as found at report time: open, or why not (then the report has no pixels)."""

    slide: Slide | None
    note: str


def open_report_slide(meta: DetectionsMeta, slide_path: str | Path | None) -> SlideAccess:
    """Open the slide for thumbnail and crops; a missing or changed slide gives a note, not an error.

    An explicit ``slide_path`` that does not exist is the user's mistake and raises :class:`SlideError`.
    """
    from ..io import (
        open_slide,  # the reader pulls in the slide backends; only needed here
    )

    info = meta.slide or SlideInfo()
    recorded = info.path
    path = Path(slide_path) if slide_path else Path(recorded) if recorded else None
    if path is None:
        return SlideAccess(None, "the detections do not record a slide file; thumbnail and cell crops are omitted")
    if not path.exists():
        if slide_path:
            raise SlideError(path, "slide file not found (--slide)")
        return SlideAccess(None, f"slide file {path} was not found at report time; thumbnail and cell crops are omitted")
    try:
        slide = open_slide(path, mpp=info.mpp_x)
    except WsiError as exc:
        return SlideAccess(None, f"slide could not be opened ({exc.reason}); thumbnail and cell crops are omitted")
    expected = info.fingerprint
    if expected and slide.fingerprint() != expected:
        slide.close()
        return SlideAccess(None, f"slide file {path} is not the slide that was analysed (fingerprint differs); "
                                 "thumbnail and cell crops are omitted")
    return SlideAccess(slide, "")


__all__ = ["SlideAccess", "open_report_slide"]
