"""The slide interface every backend implements, and the mpp rules shared by all of them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import SlideError
from ..resolution import PLAUSIBLE_MPP, level0_extent, plausible_mpp
from ..store.contracts import SlideInfo

THUMBNAIL_BLOCK = 4096  # level pixels read per block when building a thumbnail (bounds memory)


def file_fingerprint(path: Path, extra: str = "") -> str:
    """sha256 of the file size, its first and last MiB and ``extra``: cheap, and changes when the file does.

    Example:
        >>> import tempfile; p = Path(tempfile.mkdtemp()) / "a.bin"; _ = p.write_bytes(b"x" * 10)
        >>> len(file_fingerprint(p))
        64
    """
    size = path.stat().st_size
    digest = hashlib.sha256(f"{size}|{extra}".encode())
    mib = 1 << 20
    with open(path, "rb") as fh:
        digest.update(fh.read(mib))
        if size > mib:
            fh.seek(max(mib, size - mib))
            digest.update(fh.read(mib))
    return digest.hexdigest()


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Blend an RGBA array over white, so transparent (unscanned) areas read as empty glass, not black."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


class Slide:
    """A whole-slide image opened by one backend.

    Coordinates of ``read_region`` are level-0 pixels for the origin and level pixels for the size,
    as in OpenSlide. Subclasses fill the attributes in ``__init__`` and implement ``_read``.
    """

    backend: str = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.stem
        self.vendor = ""
        self.properties: dict[str, str] = {}
        self.associated_image_names: list[str] = []
        self.level_dimensions: list[tuple[int, int]] = []
        self.level_downsamples: list[float] = []
        self.mpp: tuple[float, float] = (0.0, 0.0)
        self.mpp_source = ""

    # ---- shared behaviour -------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def level_mpp(self, level: int) -> float:
        return self.mpp[0] * self.level_downsamples[level]

    def set_mpp(self, found: tuple[float | None, float | None], source: str, user_mpp: float | None) -> None:
        """Use the user's mpp when given, else a plausible mpp found in the file, else fail naming the file."""
        if user_mpp is not None:
            if not plausible_mpp(user_mpp):
                raise SlideError(self.path, f"--mpp {user_mpp} is outside {PLAUSIBLE_MPP[0]}-{PLAUSIBLE_MPP[1]} um/px")
            self.mpp, self.mpp_source = (float(user_mpp), float(user_mpp)), "user"
            return
        mx, my = found
        if my is None:
            my = mx
        if plausible_mpp(mx) and plausible_mpp(my):
            self.mpp, self.mpp_source = (float(mx), float(my)), source  # type: ignore[arg-type]
            return
        why = "has no resolution (mpp)" if mx is None else f"reports an implausible resolution of {mx:.4g} um/px"
        raise SlideError(self.path, f"{why}; pass --mpp (um per pixel at full resolution, e.g. --mpp 0.25)")

    def best_level_for_mpp(self, target_mpp: float) -> int:
        """The coarsest level whose resolution is at or finer than ``target_mpp`` (level 0 if none is)."""
        best = 0
        for level in range(self.level_count):
            if self.level_mpp(level) <= target_mpp * 1.001:
                best = level
        return best

    def read_region(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """``h x w x 3`` uint8 RGB from ``level``; ``x, y`` are level-0 pixels. Outside the slide is white."""
        if not 0 <= level < self.level_count:
            raise SlideError(self.path, f"level {level} does not exist (slide has {self.level_count})")
        if w <= 0 or h <= 0:
            raise SlideError(self.path, f"empty region {w}x{h} requested")
        return self._read(level, int(x), int(y), int(w), int(h))

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        raise NotImplementedError

    def read_plan_for_mpp(self, size: int, mpp: float) -> tuple[int, int]:
        """``(level, read_size)``: the pyramid level and the square of level pixels that :meth:`read_at_mpp` reads
        for a ``size`` px patch at ``mpp`` um/px (the coarsest level at or finer than ``mpp``)."""
        level = self.best_level_for_mpp(mpp)
        return level, max(1, round(level0_extent(size, mpp, self.mpp[0]) / self.level_downsamples[level]))

    def read_resized(self, level: int, x: int, y: int, read_size: int, size: int) -> np.ndarray:
        """A ``read_size`` square from ``level`` at level-0 ``(x, y)``, area-resampled to ``size`` px."""
        region = self.read_region(level, x, y, read_size, read_size)
        if read_size != size:
            region = cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA)
        return region

    def read_at_mpp(self, x: int, y: int, size: int, mpp: float) -> np.ndarray:
        """``size x size x 3`` uint8 RGB at ``mpp`` um/px whose top-left corner is level-0 ``(x, y)``.

        Read from the best pyramid level and area-resampled (outside the slide is white), like
        TIAToolbox's ``read_rect(..., resolution=mpp, units="mpp")``.
        """
        level, read_size = self.read_plan_for_mpp(size, mpp)
        return self.read_resized(level, x, y, read_size, size)

    def thumbnail(self, mpp: float) -> np.ndarray:
        """The whole slide at about ``mpp`` um/px, built block by block so memory stays small."""
        level = self.best_level_for_mpp(mpp)
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        factor = self.level_mpp(level) / mpp  # output px per level px (<= 1)
        out_w, out_h = max(1, round(lw * factor)), max(1, round(lh * factor))
        out = np.empty((out_h, out_w, 3), np.uint8)
        for by in range(0, lh, THUMBNAIL_BLOCK):
            for bx in range(0, lw, THUMBNAIL_BLOCK):
                bw, bh = min(THUMBNAIL_BLOCK, lw - bx), min(THUMBNAIL_BLOCK, lh - by)
                ox0, oy0 = round(bx * factor), round(by * factor)
                ox1, oy1 = round((bx + bw) * factor), round((by + bh) * factor)
                if ox1 <= ox0 or oy1 <= oy0:
                    continue
                block = self.read_region(level, round(bx * ds), round(by * ds), bw, bh)
                out[oy0:oy1, ox0:ox1] = cv2.resize(block, (ox1 - ox0, oy1 - oy0), interpolation=cv2.INTER_AREA)
        return out

    def fingerprint(self) -> str:
        """Content hash of the slide file (size, first/last MiB, dimensions); stable across copies and renames."""
        return file_fingerprint(self.path, f"{self.dimensions}")

    def info(self) -> SlideInfo:
        """What stores and reports record about the slide (never pixels)."""
        width, height = self.dimensions
        return SlideInfo(path=str(self.path.resolve()), name=self.name, width=width, height=height, mpp=list(self.mpp),
                         mpp_source=self.mpp_source, fingerprint=self.fingerprint(), vendor=self.vendor,
                         backend=self.backend)

    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"<{type(self).__name__} {self.name} {w}x{h} {self.level_count} levels mpp={self.mpp[0]:.3g}>"


def check_path(path: str | os.PathLike[str]) -> Path:
    """The slide path as a Path, or a SlideError when it is missing or a directory."""
    p = Path(path)
    if p.is_dir() and not p.suffix.lower() == ".mrxs":
        raise SlideError(p, "is a directory, expected a slide file")
    if not p.exists():
        raise SlideError(p, "file not found")
    return p
