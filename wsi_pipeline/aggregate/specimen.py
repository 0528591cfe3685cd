"""Specimen check: does the slide look like a Pap / liquid-based cytology preparation, and is it in focus?

A cytology report on a slide that is not a Pap preparation (an H&E tissue section, a blank or
unstained slide) is a dangerous answer, so before a Bethesda category is given the image itself is
measured (thresholds and their false-warning rate: docs/report.md, "Specimen check"):

* **tissue versus dispersed cells**, on an overview at ``ANALYSIS_MPP`` um/px: the share of the
  stained area that lies in continuous sheets larger than ``TISSUE_SHEET_UM2`` (a tissue section),
  as opposed to separate cells and small groups (a smear or an LBC preparation);
* **stain colour**: the share of stained pixels with the pink-purple hue of eosin/haematoxylin only,
  against the blue-green and orange cytoplasm hues of the Papanicolaou stain. Solid sheets *and* H&E
  colours withhold the category (``not_cytology``). H&E colours alone only warn (``check_stain``, the
  category is kept): a Pap field of superficial squamous cells is as pink as eosin (12% of the 187 real
  CRIC conventional-Pap fields), and a crowded smear field fuses into sheets at this resolution;
* **cell density**: the stained share of the overview; a nearly empty slide has too little material;
* **focus**: variance of the Laplacian of each stained patch (at the detector's resolution); the
  blurred-area fraction is the share of stained patches below ``FOCUS_MIN``.

Example:
    >>> import numpy as np
    >>> glass = np.full((400, 400, 3), 235, np.uint8)
    >>> measure_overview(glass, 2.0)["stained_fraction"]
    0.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from ..store.contracts import ReportSection

ANALYSIS_MPP = 2.0  # um/px of the overview the morphology and colour are measured on
TISSUE_SHEET_UM2 = 60_000.0  # a stained connected area larger than this (about 30 squamous cells fused) is a sheet
TISSUE_MAX_FRACTION = 0.5  # not cytology when more than this share of the stained area lies in sheets ...
TISSUE_FILL_MIN = 0.6  # ... that are also solid (stained share of their filled outline at least this) ...
SHEET_PAP_HUE_MAX = 0.3  # ... and not Pap-coloured (a crowded LBC field fuses into one sheet at 2 um/px) ...
EOSIN_ONLY_MIN = 0.75  # ... and H&E-coloured: at least this share of stained pixels has the pink-purple hue
PAP_HUE_MAX = 0.10  # H&E colours alone (check_stain): pink-purple >= EOSIN_ONLY_MIN and Pap hues at most this share
MIN_STAINED_FRACTION = 0.005  # less stained area than this share of the overview: too little material
FOCUS_MIN = 30.0  # mean squared Laplacian (8-bit grey, patch at the detector's mpp) below this: blurred
BLURRED_MAX_FRACTION = 0.5  # blurred patches "dominate" above this share of the stained patches
FOCUS_SAMPLE = 1024  # patches measured for focus (evenly spread over the store)


@dataclass
class SpecimenCheck(ReportSection):
    """The ``specimen`` block of report.json."""

    status: str = "ok"  # ok | check_stain | not_cytology | too_little_material | out_of_focus | not_checked
    reason: str = ""
    measures: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=lambda: dict(THRESHOLDS))

    @property
    def assessable(self) -> bool:
        """A Bethesda category may be given (``not_checked`` keeps it: the pixels were not available;
        ``check_stain`` keeps it with a warning)."""
        return self.status in ASSESSABLE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ASSESSABLE = ("ok", "check_stain", "not_checked")

THRESHOLDS = {
    "analysis_mpp": ANALYSIS_MPP, "tissue_sheet_um2": TISSUE_SHEET_UM2, "tissue_max_fraction": TISSUE_MAX_FRACTION,
    "tissue_fill_min": TISSUE_FILL_MIN, "sheet_pap_hue_max": SHEET_PAP_HUE_MAX, "eosin_only_min": EOSIN_ONLY_MIN, "pap_hue_max": PAP_HUE_MAX,
    "min_stained_fraction": MIN_STAINED_FRACTION, "focus_min": FOCUS_MIN, "blurred_max_fraction": BLURRED_MAX_FRACTION,
}


def stained_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels carrying stain: coloured (HSV saturation > 0.12) or dark (grey < 170), not white glass."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return (hsv[..., 1] > 31) | (grey < 170)


def measure_overview(rgb: np.ndarray, mpp: float) -> dict[str, float]:
    """Colour and morphology of an RGB overview at ``mpp`` um/px (resampled to ``ANALYSIS_MPP``)."""
    if mpp < ANALYSIS_MPP:
        f = mpp / ANALYSIS_MPP
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f))),
                         interpolation=cv2.INTER_AREA)
        mpp = ANALYSIS_MPP
    mask = stained_mask(rgb)
    n_stained = int(mask.sum())
    out: dict[str, float] = {"stained_fraction": round(n_stained / max(1, mask.size), 4)}
    if n_stained == 0:
        return {**out, "sheet_fraction": 0.0, "sheet_fill": 0.0, "eosin_only_fraction": 0.0, "pap_hue_fraction": 0.0}
    # tissue versus dispersed cells: connected stained areas (gaps of one analysis pixel closed)
    closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    px_um2 = mpp * mpp
    big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] * px_um2 >= TISSUE_SHEET_UM2]
    in_sheets = np.isin(labels, big) & mask if big else np.zeros_like(mask)
    out["sheet_fraction"] = round(float(in_sheets.sum()) / n_stained, 4)
    if big:  # solidity of the sheets: stained share of their filled outlines (a sheet of cells vs a lace of strands)
        sheets = np.isin(labels, big).astype(np.uint8)
        contours, _ = cv2.findContours(sheets, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        filled = np.zeros_like(sheets)
        cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
        out["sheet_fill"] = round(float(in_sheets.sum()) / max(1, int(filled.sum())), 4)
    else:
        out["sheet_fill"] = 0.0
    # stain colour of the clearly coloured pixels (OpenCV hue 0-180)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    coloured = mask & (hsv[..., 1] > 40)
    hue = hsv[..., 0][coloured].astype(np.int32)
    if hue.size:
        eosin = (hue >= 125) | (hue <= 3)  # pink, magenta, purple: eosin and haematoxylin
        pap = ((hue >= 70) & (hue <= 118)) | ((hue >= 6) & (hue <= 30))  # blue-green and orange cytoplasm
        out["eosin_only_fraction"] = round(float(eosin.mean()), 4)
        out["pap_hue_fraction"] = round(float(pap.mean()), 4)
    else:
        out["eosin_only_fraction"] = out["pap_hue_fraction"] = 0.0
    return out


def patch_focus(rgb: np.ndarray) -> float | None:
    """Focus of a patch: mean squared Laplacian of its grey levels over the stained area and its edges
    (the variance of the Laplacian, restricted to where the cells are); None for a patch with under 5% stain."""
    mask = stained_mask(rgb)
    if mask.mean() < 0.05:
        return None
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
    near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # the cells and their edges
    return float(np.square(lap[near]).mean())  # over stained areas only: sparse cells are not "blurred glass"


def judge(overview: dict[str, float] | None, focus: list[float]) -> SpecimenCheck:
    """The decision, from :func:`measure_overview` and the per-patch :func:`patch_focus` values."""
    check = SpecimenCheck()
    if focus:
        f = np.asarray(focus)
        check.measures.update({"focus_patches_measured": int(f.size), "focus_median": round(float(np.median(f)), 1),
                               "blurred_fraction": round(float((f < FOCUS_MIN).mean()), 4)})
    if overview is None:
        check.status, check.reason = "not_checked", "slide pixels not available; the specimen was not checked"
        return check
    check.measures.update(overview)
    o = overview
    if o["stained_fraction"] < MIN_STAINED_FRACTION:
        check.status = "too_little_material"
        check.reason = (f"only {100 * o['stained_fraction']:.2f}% of the slide carries stain "
                        f"(minimum {100 * MIN_STAINED_FRACTION:.1f}%)")
    elif (o["sheet_fraction"] > TISSUE_MAX_FRACTION and o["sheet_fill"] >= TISSUE_FILL_MIN
          and o["pap_hue_fraction"] < SHEET_PAP_HUE_MAX and o["eosin_only_fraction"] >= EOSIN_ONLY_MIN):
        check.status = "not_cytology"
        check.reason = (f"looks like an H&E tissue section, not a cytology preparation: {100 * o['sheet_fraction']:.0f}% "
                        f"of the stained area lies in continuous sheets larger than {TISSUE_SHEET_UM2 / 1e6:.2f} mm2, "
                        f"{100 * o['eosin_only_fraction']:.0f}% of it pink-purple")
    elif check.measures.get("blurred_fraction", 0.0) > BLURRED_MAX_FRACTION:
        check.status = "out_of_focus"
        check.reason = (f"{100 * check.measures['blurred_fraction']:.0f}% of the stained patches are out of focus "
                        f"(variance of the Laplacian below {FOCUS_MIN:g})")
    elif o["eosin_only_fraction"] >= EOSIN_ONLY_MIN and o["pap_hue_fraction"] <= PAP_HUE_MAX:
        check.status = "check_stain"
        check.reason = (f"stain colours are mostly pink-purple ({100 * o['eosin_only_fraction']:.0f}%, "
                        f"{100 * o['pap_hue_fraction']:.0f}% blue-green or orange), as in H&E or in a field of superficial "
                        "squamous cells only: check that this is a Papanicolaou preparation")
    return check


def check_store_and_slide(slide: Any, store_path: Any) -> SpecimenCheck:
    """Measure an open slide (overview) and a patch store (focus of up to ``FOCUS_SAMPLE`` patches)."""
    overview = measure_overview(slide.thumbnail(ANALYSIS_MPP), ANALYSIS_MPP) if slide is not None else None
    return judge(overview, store_focus(store_path))


def store_focus(store_path: Any) -> list[float]:
    """Focus of up to ``FOCUS_SAMPLE`` stained patches of the store (evenly spread); [] without a store."""
    from ..store.patches import PatchStore  # noqa: PLC0415

    try:
        store = PatchStore.open(store_path)
    except Exception:  # noqa: BLE001 - the store may be deleted (--delete-store) or moved; focus is then not measured
        return []
    n = store.n_patches
    chosen = np.unique(np.linspace(0, n - 1, min(n, FOCUS_SAMPLE)).round().astype(int)) if n else np.zeros(0, int)
    patches, per_shard = store.patches, max(1, int(store.patches_per_chunk))  # the array is opened once
    values = []
    # one read per shard: the chosen patches of a shard as one slice (per-patch reads cost ~2 ms each in zarr)
    for shard in np.unique(chosen // per_shard):
        picked = chosen[chosen // per_shard == shard]
        try:
            block = np.asarray(patches[int(picked[0]):int(picked[-1]) + 1])
        except Exception:  # noqa: BLE001 - an unreadable shard is counted by the tiler, not here
            continue
        for i in picked:
            v = patch_focus(block[int(i - picked[0])])
            if v is not None:
                values.append(v)
    return values


NOT_ASSESSABLE = "not assessable"


def apply_to_summary(summary: Any, check: SpecimenCheck) -> None:
    """Withhold the Bethesda category of a slide that failed the check; drop blurred area from adequacy.

    When blurred patches dominate, the squamous-cell count of the adequacy estimate keeps only the
    in-focus share (``squamous x (1 - blurred_fraction)``), since cells in blurred areas cannot be read.
    """
    from .summary import Adequacy, Category  # noqa: PLC0415

    blurred = float(check.measures.get("blurred_fraction", 0.0))
    if blurred > BLURRED_MAX_FRACTION:
        a = summary.adequacy
        in_focus = int(round(a.squamous_cells * (1.0 - blurred)))
        check.measures["squamous_cells_in_focus"] = in_focus
        summary.adequacy = Adequacy("adequate" if in_focus >= a.minimum else "limited", in_focus, a.minimum,
                                    a.preparation, a.minimum_source,
                                    a.note + f" Cells in blurred patches ({100 * blurred:.0f}% of the stained area) are "
                                             "not counted.")
    if not check.assessable:
        c = summary.category
        summary.category = Category(NOT_ASSESSABLE, f"Not assessable: {check.reason}", -1, 0, list(c.organisms))
