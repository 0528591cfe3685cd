"""OpenSlide backend (NDPI, MRXS, SCN, BIF, DICOM, ...), the plain-image backend (JPEG/PNG/strip TIFF), their
openers (entries of ``slide_formats.py``) and the probe every opener reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import openslide
import tifffile

from ..errors import SlideError
from .slide import Slide, composite_on_white

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass
class SlideProbe:
    """What ``open_slide`` learns about a file before a format takes it: OpenSlide's vendor and handle (owned
    here until a format takes it with :meth:`take_handle`) and why the tile fast path passed, if it did."""

    path: Path
    vendor: str | None = None
    handle: openslide.OpenSlide | None = None
    open_error: str = ""  # OpenSlide knows the vendor but could not open the file
    not_fast: str = ""  # why the tile fast path passed

    @classmethod
    def of(cls, path: Path) -> SlideProbe:
        try:
            vendor = openslide.OpenSlide.detect_format(str(path))
        except openslide.OpenSlideError:
            vendor = None
        probe = cls(path, vendor)
        if vendor is not None:
            try:
                probe.handle = openslide.OpenSlide(str(path))
            except openslide.OpenSlideError as exc:
                probe.open_error = str(exc).rstrip(".")
        return probe

    def is_tiff(self) -> bool:
        with open(self.path, "rb") as fh:
            return fh.read(4) in TIFF_MAGIC

    def take_handle(self) -> openslide.OpenSlide | None:
        handle, self.handle = self.handle, None
        return handle

    def close(self) -> None:
        """Close the handle unless a format took it."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class OpenSlideSlide(Slide):
    """Any format OpenSlide opens; slower than the tile fast path (RGBA compositing in ``read_region``)."""

    backend = "openslide"

    def __init__(self, path: Path, handle: openslide.OpenSlide, user_mpp: float | None) -> None:
        super().__init__(path)
        self._os = handle
        self.properties = dict(handle.properties)
        self.vendor = self.properties.get("openslide.vendor", "unknown")
        self.level_dimensions = list(handle.level_dimensions)
        self.level_downsamples = list(handle.level_downsamples)
        self.associated_image_names = list(handle.associated_images.keys())
        mx, my = self.properties.get("openslide.mpp-x"), self.properties.get("openslide.mpp-y")
        try:
            self.set_mpp((float(mx) if mx else None, float(my) if my else None), "properties", user_mpp)
        except SlideError:
            handle.close()
            raise

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        try:
            region = self._os.read_region((x, y), level, (w, h))
        except openslide.OpenSlideError as exc:
            raise SlideError(self.path, f"cannot read pixels at level {level} ({x}, {y}): {exc}") from None
        return composite_on_white(np.asarray(region))

    def close(self) -> None:
        self._os.close()


def load_plain_image(path: Path) -> np.ndarray:
    """RGB uint8 pixels of a JPEG/PNG/TIFF image, or a SlideError saying why not."""
    image: np.ndarray | None = None
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            image = tifffile.imread(path)
        except Exception as exc:  # tifffile raises several types for bad files
            raise SlideError(path, f"cannot read TIFF image: {exc}") from None
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is not None:
            if raw.ndim == 2:
                raw = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
            image = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA if raw.shape[-1] == 4 else cv2.COLOR_BGR2RGB)
    if image is None:
        raise SlideError(path, "not a slide or image that OpenSlide, tifffile or OpenCV can read")
    if image.dtype != np.uint8:
        raise SlideError(path, f"{image.dtype} samples; only 8-bit RGB images are supported")
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise SlideError(path, f"image of shape {image.shape}; only RGB(A) images are supported")
    return composite_on_white(image) if image.shape[-1] == 4 else image


class PlainImageSlide(Slide):
    """A single-level RGB image held in memory; only used when the user gives ``--mpp``."""

    backend = "image"

    def __init__(self, path: Path, user_mpp: float) -> None:
        super().__init__(path)
        self._image = load_plain_image(path)
        h, w = self._image.shape[:2]
        self.vendor = "plain-image"
        self.level_dimensions = [(w, h)]
        self.level_downsamples = [1.0]
        self.set_mpp((None, None), "user", user_mpp)

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, np.uint8)
        iw, ih = self.level_dimensions[0]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, iw), min(y + h, ih)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._image[y0:y1, x0:x1]
        return out


def open_openslide(path: Path, mpp: float | None, probe: SlideProbe) -> Slide | None:
    """Any file OpenSlide opened; its open error when it knows the vendor but could not."""
    if probe.handle is not None:
        return OpenSlideSlide(path, probe.take_handle(), mpp)
    if probe.open_error:
        raise SlideError(path, probe.open_error)
    return None


def open_plain_image(path: Path, mpp: float | None, probe: SlideProbe) -> Slide:
    """The last format: a plain image with the user's ``mpp``, else the reason nothing could open the file."""
    if mpp is not None:
        return PlainImageSlide(path, mpp)
    load_plain_image(path)  # raises "not a slide or image ..." for anything that is not an image at all
    kind = "a plain (non-pyramidal) image" if probe.not_fast else "a plain image"
    raise SlideError(path, f"is {kind} with no resolution; pass --mpp to tile it as one level")
