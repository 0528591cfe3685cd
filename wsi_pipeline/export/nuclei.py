"""Nuclear morphometry of a slide's counted cells, for the report and the exports.

Which cells are measured (each read once from level 0, a ``CROP_UM`` square around the box centre):

* every counted cell of an abnormal class;
* counted NILM cells: all of them up to ``nilm_sample`` (default 500), else a random sample of that
  many (fixed seed, so a rerun gives the same numbers); their median nucleus area is the slide's
  reference ("ratio to the slide's median NILM nucleus");
* other classes (inflammatory cells, organisms) are not measured: the method measures squamous
  and glandular nuclei, and a neutrophil cluster's "nucleus" means nothing.

The measures are evidence for the cytologist beside the detector's class, not a diagnosis; see
``wsi_pipeline/aggregate/morphometry.py`` for the method and docs/report.md for what it gets wrong.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..aggregate.morphometry import CROP_UM, MAX_OFFSET_UM, TERRITORY_CAP_UM, nucleus_measurer, ratio_to_reference
from ..io.slide import Slide
from ..taxonomy import Taxonomy
from .cells import CellTable, NucleusColumns
from .images import Region, crop_window

NILM_CLASS = "NILM"
PARALLEL_MIN_CELLS = 100  # fewer cells are measured in this process (a pool takes ~1 s to start)
BATCH_CELLS = 256  # crops read before they are measured (bounds memory: ~250 KB a crop at 0.25 um/px)
SAMPLE_SEED = 0
MORPHOMETRY_NOTE = (
    "Evidence for the cytologist, not a diagnosis: nucleus area and nucleus-to-cell ratio from a classical "
    "segmentation (optical density, local thresholds) of each measured cell. It is reliable on single, in-focus "
    "squamous cells and misreads merged neutrophils, thick clusters, overlaps and debris; look at the cell."
)
METHOD = (
    "optical density of red+green, white top-hat (disk 12 um), per-seed local Otsu threshold (+-14 um), "
    f"watershed of touching nuclei; the nucleus under the box centre or within {MAX_OFFSET_UM:g} um of it; "
    f"N/C = nucleus area / its nearest-nucleus territory inside the cell area, capped at {TERRITORY_CAP_UM:g} um"
)


@dataclass
class SlideNuclei:
    """The nucleus measures of a slide's counted cells and what the report says about them."""

    columns: NucleusColumns
    block: dict[str, Any]  # the ``morphometry`` section of report.json
    regions: dict[int, Region] = field(default_factory=dict)  # pixels read, by detections row, for the gallery

    def for_row(self, row: int, row_to_cell: dict[int, int]) -> dict[str, Any] | None:
        """The ``nucleus`` entry of a top cell (``None`` when the cell was not measured)."""
        i = row_to_cell.get(row)
        if i is None or self.columns.status[i] == "not_measured":
            return None
        area, ratio, nc = self.columns.values(i)
        return {"found": area is not None, "area_um2": area,
                "ratio_to_nilm_median": None if ratio is None else round(ratio, 3), "nc_ratio": nc}


def select_cells(labels: np.ndarray, taxonomy: Taxonomy, nilm_sample: int, seed: int = SAMPLE_SEED
                 ) -> tuple[np.ndarray, int, int]:
    """Indices of the cells to measure (sorted), the number of NILM cells and how many of them are measured.

    Example:
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> tax = load_taxonomy()
        >>> labels = np.array([tax.index("NILM")] * 6 + [tax.index("HSIL"), tax.index("INFL")])
        >>> idx, n_nilm, n_sampled = select_cells(labels, tax, nilm_sample=3)
        >>> len(idx), n_nilm, n_sampled, 6 in idx, 7 in idx
        (4, 6, 3, True, False)
    """
    labels = np.asarray(labels, np.int64)
    abnormal = [i for i, c in enumerate(taxonomy.classes) if c.abnormal]
    chosen = [np.flatnonzero(np.isin(labels, abnormal))]
    nilm = np.flatnonzero(labels == taxonomy.index(NILM_CLASS)) if NILM_CLASS in taxonomy.names else np.zeros(0, np.int64)
    if nilm.size > nilm_sample:
        nilm = np.sort(np.random.default_rng(seed).choice(nilm, nilm_sample, replace=False))
    chosen.append(nilm)
    n_nilm = int((labels == taxonomy.index(NILM_CLASS)).sum()) if NILM_CLASS in taxonomy.names else 0
    return np.unique(np.concatenate(chosen)).astype(np.int64), n_nilm, int(nilm.size)


def measure_slide_cells(
    slide: Slide | None, cells: CellTable, rows: np.ndarray, taxonomy: Taxonomy, nilm_sample: int,
    keep_rows: set[int] = frozenset(), enabled: bool = True, workers: int = 1,
) -> SlideNuclei:
    """Measure the nuclei of ``cells`` (the counted cells; ``rows`` their detections rows) on ``slide``.

    Pixels of the cells whose row is in ``keep_rows`` (the gallery's) are kept in ``regions`` so the
    gallery does not read them again. Without a slide (or ``enabled`` false) nothing is measured and
    the block says why. ``workers`` processes measure (0: one per core, up to 4), when there are at least
    :data:`PARALLEL_MIN_CELLS` cells; the slide is read here, in order, in batches of :data:`BATCH_CELLS`.
    """
    started = time.perf_counter()
    n = len(cells)
    columns = NucleusColumns.not_measured(n)
    idx, n_nilm, n_nilm_measured = select_cells(cells.labels, taxonomy, nilm_sample)
    block: dict[str, Any] = {
        "status": "measured", "note": MORPHOMETRY_NOTE, "method": METHOD, "crop_um": CROP_UM,
        "nilm_median_area_um2": None, "nilm_cells_counted": n_nilm, "nilm_cells_measured": 0,
        "nilm_nuclei_found": 0, "nilm_sample": {"max": nilm_sample, "seed": SAMPLE_SEED, "sampled": n_nilm > nilm_sample},
        "cells_measured": 0, "nuclei_found": 0, "classes": [], "seconds": 0.0,
    }
    regions: dict[int, Region] = {}
    if not enabled or slide is None:
        block["status"] = "not_measured"
        block["reason"] = "turned off (report.morphometry: false)" if not enabled else "the slide's pixels are not available"
        return SlideNuclei(columns, block, regions)

    mpp = float(slide.mpp[0])
    crop_px = max(8, round(CROP_UM / mpp))
    centres = (cells.boxes[:, :2] + cells.boxes[:, 2:]) / 2
    area = np.full(n, np.nan)
    nc = np.full(n, np.nan)
    order = sorted(idx.tolist(), key=lambda k: (centres[k, 1], centres[k, 0]))  # in reading order along the slide
    with nucleus_measurer(workers if len(order) >= PARALLEL_MIN_CELLS else 1) as measure:
        for start in range(0, len(order), BATCH_CELLS):
            batch, crops = order[start:start + BATCH_CELLS], []
            for i in batch:
                cx, cy = (float(v) for v in centres[i])
                x, y, size = crop_window((cx, cy, cx, cy), crop_px, slide.dimensions)
                pixels = slide.read_region(0, x, y, size, size)
                crops.append((pixels, (cx - x, cy - y)))
                if int(rows[i]) in keep_rows:
                    regions[int(rows[i])] = Region(x, y, pixels)
            for i, m in zip(batch, measure(crops, mpp)):
                columns.status[i] = "found" if m.found else "not_found"
                if m.found:
                    area[i], nc[i] = m.area_um2, m.nc_ratio
    nilm_mask = (cells.labels == taxonomy.index(NILM_CLASS)) if NILM_CLASS in taxonomy.names else np.zeros(n, bool)
    ratio, median = ratio_to_reference(area, area[nilm_mask])
    columns.area_um2, columns.nc_ratio, columns.ratio_to_nilm = area, nc, ratio
    measured = columns.status != "not_measured"
    block.update({
        "nilm_median_area_um2": None if median is None else round(median, 2),
        "nilm_cells_measured": int((measured & nilm_mask).sum()),
        "nilm_nuclei_found": int((np.isfinite(area) & nilm_mask).sum()),
        "cells_measured": int(measured.sum()),
        "nuclei_found": int(np.isfinite(area).sum()),
        "classes": _class_rows(cells.labels, measured, area, ratio, nc, taxonomy),
        "seconds": round(time.perf_counter() - started, 2),
    })
    return SlideNuclei(columns, block, regions)


def _median(values: np.ndarray, digits: int) -> float | None:
    values = values[np.isfinite(values)]
    return round(float(np.median(values)), digits) if values.size else None


def _class_rows(labels: np.ndarray, measured: np.ndarray, area: np.ndarray, ratio: np.ndarray, nc: np.ndarray,
                taxonomy: Taxonomy) -> list[dict[str, Any]]:
    rows = []
    for k, cc in enumerate(taxonomy.classes):
        sel = (labels == k) & measured
        if not sel.any():
            continue
        rows.append({"name": cc.name, "n_measured": int(sel.sum()), "n_found": int(np.isfinite(area[sel]).sum()),
                     "area_median_um2": _median(area[sel], 2), "ratio_to_nilm_median": _median(ratio[sel], 3),
                     "nc_ratio_median": _median(nc[sel], 4)})
    return rows


def nucleus_caption(nucleus: dict[str, Any] | None) -> str:
    """One line for a gallery caption.

    Example:
        >>> nucleus_caption({"found": True, "area_um2": 61.3, "ratio_to_nilm_median": 2.04, "nc_ratio": 0.213})
        'nucleus 61 µm² · 2.0× NILM · N/C 0.21'
        >>> nucleus_caption({"found": False, "area_um2": None, "ratio_to_nilm_median": None, "nc_ratio": None})
        'nucleus not found'
        >>> nucleus_caption(None)
        ''
    """
    if not nucleus:
        return ""
    if not nucleus["found"]:
        return "nucleus not found"
    ratio = nucleus["ratio_to_nilm_median"]
    return (f"nucleus {nucleus['area_um2']:.0f} µm²" + (f" · {ratio:.1f}× NILM" if ratio is not None else "")
            + f" · N/C {nucleus['nc_ratio']:.2f}")


__all__ = ["MORPHOMETRY_NOTE", "SlideNuclei", "measure_slide_cells", "nucleus_caption", "select_cells"]
