"""Pictures for the HTML report: slide thumbnail, detection overlay, density heat map, cell crops.

The thumbnail and the crops are read from the slide's pyramid through ``Slide.read_region`` /
``Slide.thumbnail`` only; associated images (label, macro) are never opened here. The detection
overlay and the heat map are separate transparent PNG layers, so the thumbnail and the crops
stay the slide's own pixels.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..aggregate import TopCell
from ..io.slide import Slide
from ..taxonomy import Taxonomy

BLANK_GREY = 236  # background of the overview when the slide file is not available
MIN_HEATMAP_SQUARES = 24  # heat-map squares along the slide's long side, at least


@dataclass
class Overview:
    """The whole-slide pictures, all of the same pixel size (``scale`` level-0 px per picture px)."""

    base_jpeg: bytes  # slide thumbnail, or a blank canvas when the slide is unavailable
    overlay_png: bytes  # RGBA: one rectangle per counted cell, class colour
    heatmap_png: bytes  # RGBA: abnormal cells per mm^2 in grid squares, transparent where none
    width: int
    height: int
    scale: float
    heatmap_max_per_mm2: float
    heatmap_grid_um: float
    from_slide: bool


@dataclass
class CellCrop:
    """A full-resolution picture of one top cell and where it came from (level-0 px)."""

    cell: TopCell
    x: int
    y: int
    size: int
    data_uri: str
    nucleus: str = ""  # the nucleus measures as one caption line (empty: not measured)

    def box_in_crop_percent(self) -> tuple[float, float, float, float]:
        """The cell's box as left, top, width, height in percent of the crop (for a CSS outline)."""
        x0, y0, x1, y1 = self.cell.box
        return tuple(round(100 * v / self.size, 2) for v in (x0 - self.x, y0 - self.y, x1 - x0, y1 - y0))  # type: ignore[return-value]


@dataclass
class Region:
    """Level-0 pixels already read from the slide: top-left corner ``x, y`` and the RGB array."""

    x: int
    y: int
    pixels: np.ndarray

    def window(self, x: int, y: int, size: int) -> np.ndarray | None:
        """The square ``x, y, size`` cut from these pixels, or ``None`` when it is not wholly inside.

        Example:
            >>> r = Region(10, 20, np.arange(5 * 5 * 3, dtype=np.uint8).reshape(5, 5, 3))
            >>> r.window(11, 21, 2).shape, r.window(14, 20, 2)
            ((2, 2, 3), None)
        """
        h, w = self.pixels.shape[:2]
        if x < self.x or y < self.y or x + size > self.x + w or y + size > self.y + h:
            return None
        return self.pixels[y - self.y : y - self.y + size, x - self.x : x - self.x + size]


def data_uri(mime: str, data: bytes) -> str:
    """Embed bytes in the HTML page.

    Example:
        >>> data_uri("image/png", b"ab")
        'data:image/png;base64,YWI='
    """
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def encode_image(rgb: np.ndarray, fmt: str = "png", jpeg_quality: int = 90) -> bytes:
    """Encode an RGB or RGBA uint8 array as PNG or JPEG bytes.

    Example:
        >>> encode_image(np.zeros((2, 2, 3), np.uint8))[:4]
        b'\\x89PNG'
    """
    if rgb.ndim == 3 and rgb.shape[2] == 4:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA)
    else:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 6]
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} image as {fmt}")
    return buf.tobytes()


def overview_size(width: int, height: int, max_px: int) -> tuple[int, int, float]:
    """Picture size for a ``width x height`` slide with its long side at most ``max_px``.

    Example:
        >>> overview_size(40000, 20000, 1000)
        (1000, 500, 40.0)
    """
    scale = max(1.0, max(width, height) / max_px)
    return max(1, round(width / scale)), max(1, round(height / scale)), scale


def render_overview(
    slide: Slide | None,
    slide_size: tuple[int, int],
    slide_mpp: float,
    boxes: np.ndarray,
    labels: np.ndarray,
    taxonomy: Taxonomy,
    max_px: int,
    heatmap_grid_um: float,
) -> Overview:
    """Thumbnail + overlay + heat map for the counted cells ``boxes`` (level-0 xyxy) of class ``labels``."""
    width, height = slide_size
    w, h, scale = overview_size(width, height, max_px)
    if slide is not None:
        thumb = slide.thumbnail(slide_mpp * scale)
        base = cv2.resize(thumb, (w, h), interpolation=cv2.INTER_AREA) if thumb.shape[:2] != (h, w) else thumb
    else:
        base = np.full((h, w, 3), BLANK_GREY, np.uint8)
    heat, heat_max, grid_used = _heatmap(boxes, labels, taxonomy, (width, height), (w, h), slide_mpp, heatmap_grid_um)
    return Overview(
        base_jpeg=encode_image(base, "jpeg", 88),
        overlay_png=encode_image(_overlay(boxes, labels, taxonomy, (w, h), scale)),
        heatmap_png=encode_image(heat),
        width=w, height=h, scale=scale,
        heatmap_max_per_mm2=heat_max, heatmap_grid_um=grid_used,
        from_slide=slide is not None,
    )


def _overlay(boxes: np.ndarray, labels: np.ndarray, taxonomy: Taxonomy, size: tuple[int, int], scale: float) -> np.ndarray:
    w, h = size
    layer = np.zeros((h, w, 4), np.uint8)
    # normal cells first and thin, abnormal ones on top by increasing severity
    order = sorted(range(len(taxonomy)), key=lambda i: (taxonomy[i].abnormal, taxonomy[i].severity))
    for i in order:
        cc = taxonomy[i]
        sel = boxes[labels == i] / scale
        if not len(sel):
            continue
        thickness, alpha, grow = (2, 255, 3) if cc.abnormal else (1, 170, 1)
        colour = (*cc.rgb, alpha)
        for x0, y0, x1, y1 in sel:
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            half_w, half_h = max((x1 - x0) / 2, grow), max((y1 - y0) / 2, grow)
            p0 = (int(round(cx - half_w)), int(round(cy - half_h)))
            p1 = (int(round(cx + half_w)), int(round(cy + half_h)))
            cv2.rectangle(layer, p0, p1, colour, thickness, lineType=cv2.LINE_8)
    return layer


def _heatmap(
    boxes: np.ndarray, labels: np.ndarray, taxonomy: Taxonomy, slide_size: tuple[int, int],
    size: tuple[int, int], slide_mpp: float, grid_um: float,
) -> tuple[np.ndarray, float, float]:
    """Abnormal cells per mm^2 in squares of at most ``grid_um``, coloured (inferno) where any, else transparent.

    Returns the RGBA layer, the highest density and the square side used (um).
    """
    width, height = slide_size
    w, h = size
    grid_um = min(grid_um, max(width, height) * slide_mpp / MIN_HEATMAP_SQUARES)  # small slides: finer squares
    cell_px = max(1.0, grid_um / slide_mpp)
    nx, ny = max(1, math.ceil(width / cell_px)), max(1, math.ceil(height / cell_px))
    abnormal = np.isin(labels, [i for i, c in enumerate(taxonomy.classes) if c.abnormal])
    centres = (boxes[abnormal, :2] + boxes[abnormal, 2:]) / 2
    counts, _, _ = np.histogram2d(
        centres[:, 1], centres[:, 0], bins=(ny, nx), range=((0, ny * cell_px), (0, nx * cell_px))
    )
    per_mm2 = counts / ((grid_um / 1000.0) ** 2)
    peak = float(per_mm2.max()) if per_mm2.size else 0.0
    layer = np.zeros((h, w, 4), np.uint8)
    if peak <= 0:
        return layer, 0.0, grid_um
    level = np.clip(np.rint(255 * per_mm2 / peak), 0, 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    alpha = np.where(counts > 0, 185, 0).astype(np.uint8)
    grid = np.dstack([colour, alpha])
    # grid squares cover nx*cell_px >= width level-0 px: resize the full grid, then crop to the slide
    full_w, full_h = round(nx * cell_px * w / width), round(ny * cell_px * h / height)
    big = cv2.resize(grid, (max(w, full_w), max(h, full_h)), interpolation=cv2.INTER_NEAREST)
    layer[:] = big[:h, :w]
    return layer, peak, grid_um


def crop_window(box: tuple[float, float, float, float], crop_px: int, slide_size: tuple[int, int]) -> tuple[int, int, int]:
    """Square window (x, y, size) in level-0 px centred on ``box``, at least ``crop_px`` wide, inside the slide.

    The window grows to 1.25x the box when the cell is larger than ``crop_px``, and shifts (not
    shrinks) at the slide's edges.

    Example:
        >>> crop_window((100, 100, 120, 140), 64, (1000, 1000))
        (78, 88, 64)
        >>> crop_window((0, 0, 10, 10), 64, (1000, 1000))
        (0, 0, 64)
    """
    x0, y0, x1, y1 = box
    width, height = slide_size
    size = max(crop_px, math.ceil(1.25 * max(x1 - x0, y1 - y0)))
    size = max(1, min(size, width, height))
    x = int(round((x0 + x1) / 2 - size / 2))
    y = int(round((y0 + y1) / 2 - size / 2))
    return min(max(0, x), width - size), min(max(0, y), height - size), size


def read_cell_crops(
    slide: Slide, cells: list[TopCell], crop_um: float, fmt: str = "jpeg", jpeg_quality: int = 90,
    regions: dict[int, Region] | None = None, captions: dict[int, str] | None = None,
) -> list[CellCrop]:
    """Full-resolution (level 0) crops of ``cells`` read from ``slide``, encoded for the page.

    ``regions`` (by detections row) are pixels already read for a cell (the nucleus measure's
    window): a crop inside one is cut from it instead of read again. ``captions`` (by row) are the
    cells' nucleus caption lines.
    """
    crop_px = max(8, round(crop_um / slide.mpp[0]))
    mime = "image/jpeg" if fmt == "jpeg" else "image/png"
    regions, captions = regions or {}, captions or {}
    crops = []
    for cell in cells:
        x, y, size = crop_window(cell.box, crop_px, slide.dimensions)
        region = regions.get(cell.row)
        pixels = region.window(x, y, size) if region is not None else None
        if pixels is None:
            pixels = slide.read_region(0, x, y, size, size)
        crops.append(CellCrop(cell, x, y, size, data_uri(mime, encode_image(np.ascontiguousarray(pixels), fmt, jpeg_quality)),
                              captions.get(cell.row, "")))
    return crops
