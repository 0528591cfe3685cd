"""Where every cell of a synthetic slide goes: a circular preparation on glass, the long-tailed mix.

The layout holds only geometry (centre, box, class) and a spatial index; pixels are drawn later, tile
by tile, from the same seeds (see :mod:`.render`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely

from ..taxonomy import Taxonomy
from .cells import make_shape
from .config import SlideSynthConfig


@dataclass(frozen=True)
class Cell:
    """One ground-truth object: level-0 box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) and its class."""

    index: int
    class_name: str
    cx: float
    cy: float
    box: tuple[int, int, int, int]
    crop: str | None = None  # real crop pasted here (composited mode)


@dataclass
class SlideLayout:
    width: int
    height: int
    mpp: float
    seed: int
    centre: tuple[float, float]
    radius_px: float
    cells: list[Cell]
    blurred_fraction: float = 0.15
    _tree: shapely.STRtree | None = field(default=None, repr=False)

    @property
    def area_mm2(self) -> float:
        return math.pi * (self.radius_px * self.mpp / 1000) ** 2

    def counts(self, names: list[str]) -> dict[str, int]:
        out = dict.fromkeys(names, 0)
        for c in self.cells:
            out[c.class_name] += 1
        return out

    def cells_in(self, x0: int, y0: int, x1: int, y1: int) -> list[Cell]:
        """Cells whose box touches the region, in drawing order."""
        if self._tree is None:
            self._tree = shapely.STRtree([shapely.box(*c.box) for c in self.cells])
        hits = self._tree.query(shapely.box(x0, y0, x1, y1))
        return [self.cells[i] for i in np.sort(hits)]


def preparation_circle(width: int, height: int, mpp: float, cfg: SlideSynthConfig) -> tuple[tuple[float, float], float]:
    """Centre and radius (level-0 px) of the ThinPrep cell spot."""
    r = min(cfg.preparation_diameter_mm * 1000 / mpp / 2, cfg.preparation_fraction * min(width, height) / 2)
    return (width / 2, height / 2), r


def class_counts(area_mm2: float, cfg: SlideSynthConfig, names: list[str]) -> dict[str, int]:
    """Objects per class: ``max(min_count, round(density * area))``.

    Example:
        >>> from wsi_pipeline.synth.config import load_synth_config
        >>> c = class_counts(314.0, load_synth_config().slide, ["NILM", "HSIL"])
        >>> c["NILM"] > 10000, c["HSIL"]
        (True, 5)
    """
    return {n: max(cfg.min_count.get(n, 0), int(round(cfg.density_per_mm2.get(n, 0.0) * area_mm2))) for n in names}


def plan_slide(
    width: int,
    height: int,
    mpp: float,
    seed: int,
    cfg: SlideSynthConfig,
    taxonomy: Taxonomy,
    crop_box=None,
) -> SlideLayout:
    """Place the configured mix of cells. ``crop_box(class_name, index)`` returns ``(path, rel_box)`` for
    classes drawn from real crops (composited mode) or ``None`` to draw a synthetic cell."""
    rng = np.random.default_rng(seed)
    centre, radius = preparation_circle(width, height, mpp, cfg)
    u = 1.0 / mpp
    area = math.pi * (radius * mpp / 1000) ** 2
    counts = class_counts(area, cfg, taxonomy.names)
    classes = [n for n in taxonomy.names for _ in range(counts[n])]
    order = rng.permutation(len(classes))  # drawing order: classes interleaved
    cells: list[Cell] = []
    infl_anchor, infl_left = np.zeros(2), 0
    for index, k in enumerate(order):
        name = classes[k]
        found = crop_box(name, index) if crop_box else None
        if found:
            crop, (bx0, by0, bx1, by1) = found
        else:
            crop = None
            bx0, by0, bx1, by1 = make_shape(name, seed, index, u, cfg.blurred_fraction).bounds()
        extent = max(-bx0, -by0, bx1, by1)
        if name == "INFL":  # neutrophils come in clusters: reuse the anchor for a few cells
            if infl_left <= 0:
                infl_left = int(min(rng.geometric(0.35), cfg.inflammatory_cluster_max))
                infl_anchor = _in_circle(rng, centre, max(0.0, radius - extent - 20 * u))
            infl_left -= 1
            c = infl_anchor + rng.normal(0, 6 * u * math.sqrt(infl_left + 1), 2)
            if math.dist(c, centre) > radius - extent:
                c = infl_anchor
        else:
            c = _in_circle(rng, centre, max(0.0, radius - extent))
        c = np.round(c)  # whole pixels, so the drawn cell and its box agree exactly
        box = (
            max(0, int(math.floor(c[0] + bx0))),
            max(0, int(math.floor(c[1] + by0))),
            min(width, int(math.ceil(c[0] + bx1))),
            min(height, int(math.ceil(c[1] + by1))),
        )
        cells.append(Cell(index, name, float(c[0]), float(c[1]), box, crop))
    return SlideLayout(width, height, mpp, seed, centre, radius, cells, cfg.blurred_fraction)


def _in_circle(rng: np.random.Generator, centre, radius: float) -> np.ndarray:
    r = radius * math.sqrt(rng.random())
    a = rng.uniform(0, 2 * math.pi)
    return np.array([centre[0] + r * math.cos(a), centre[1] + r * math.sin(a)])
