"""Draw any region of a synthetic slide from its layout: glass, then every cell whose box touches it.

Memory does not grow with the slide: a region only looks up its cells in the layout's spatial index,
and recently drawn cells (a cell spans a few neighbouring tiles) are kept in a small cache.
"""

from __future__ import annotations

import functools

import numpy as np

from .cells import GLASS_RGB, make_shape, render_od
from .composite import CropBank, crop_od
from .layout import Cell, SlideLayout

NOISE_SIZE = 2048


class SlideRenderer:
    """``read_tile(x, y, w, h)`` returns level-0 RGB uint8 pixels of the synthetic slide.

    Example:
        >>> from wsi_pipeline.synth.config import load_synth_config
        >>> from wsi_pipeline.synth.layout import plan_slide
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> layout = plan_slide(2048, 2048, 0.25, 0, load_synth_config().slide, load_taxonomy())
        >>> SlideRenderer(layout).read_tile(0, 0, 256, 128).shape
        (128, 256, 3)
    """

    def __init__(self, layout: SlideLayout, bank: CropBank | None = None, cache_cells: int = 1024) -> None:
        self.layout = layout
        self.bank = bank
        rng = np.random.default_rng([layout.seed, 99])
        # Glass: camera noise plus faint large-scale unevenness, shared by all tiles (offset per tile)
        noise = rng.normal(0, 2.2, (NOISE_SIZE, NOISE_SIZE, 1)) + rng.normal(0, 0.8, (NOISE_SIZE, NOISE_SIZE, 3))
        self._noise = np.round(noise).astype(np.int8)
        self._sprite = functools.lru_cache(maxsize=cache_cells)(self._draw_cell)

    def _draw_cell(self, index: int) -> tuple[int, int, np.ndarray]:
        cell: Cell = self.layout.cells[index]
        u = 1.0 / self.layout.mpp
        if cell.crop is not None and self.bank is not None:
            ox, oy, od, _ = crop_od(cell.crop, self.layout.seed, cell.index, self.layout.mpp, self.bank.cfg)
        else:
            shape = make_shape(cell.class_name, self.layout.seed, cell.index, u, self.layout.blurred_fraction)
            ox, oy, od = render_od(shape, self.layout.seed, cell.index)
        return int(round(cell.cx)) + ox, int(round(cell.cy)) + oy, od.astype(np.float16)  # half the cache memory

    def read_tile(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        cells = self.layout.cells_in(x, y, x + w, y + h)
        glass = np.broadcast_to(GLASS_RGB, (h, w, 3))
        if cells:
            od = np.zeros((h, w, 3), np.float32)
            for cell in cells:
                sx, sy, sod = self._sprite(cell.index)
                x0, y0 = max(x, sx), max(y, sy)
                x1, y1 = min(x + w, sx + sod.shape[1]), min(y + h, sy + sod.shape[0])
                if x0 < x1 and y0 < y1:
                    od[y0 - y : y1 - y, x0 - x : x1 - x] += sod[y0 - sy : y1 - sy, x0 - sx : x1 - sx]
            pixels = glass * np.exp(-od)
        else:
            pixels = glass.astype(np.float32)
        return np.clip(pixels + self._noise_for(x, y, w, h), 0, 255).astype(np.uint8)

    def _noise_for(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        if w > NOISE_SIZE or h > NOISE_SIZE:
            reps = (-(-h // NOISE_SIZE), -(-w // NOISE_SIZE), 1)
            return np.tile(self._noise, reps)[:h, :w]
        ox = (x * 7919 + y * 104729 + self.layout.seed) % (NOISE_SIZE - w + 1)
        oy = (x * 104723 + y * 7907 + self.layout.seed) % (NOISE_SIZE - h + 1)
        return self._noise[oy : oy + h, ox : ox + w]
