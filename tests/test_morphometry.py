"""Nuclear morphometry: drawn nuclei of known area, real CRIC cell crops, and the report / exports that carry it."""

from __future__ import annotations

import csv
import io
import json
import math
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
from skimage import measure

from wsi_pipeline.aggregate.morphometry import CROP_UM, measure_nucleus, ratio_to_reference, segment_nuclei
from wsi_pipeline.config import ReportConfig
from wsi_pipeline.export import write_report
from wsi_pipeline.export.cells import QUPATH_NC_RATIO, QUPATH_NUCLEUS_AREA, QUPATH_NUCLEUS_TO_NILM
from wsi_pipeline.export.images import crop_window
from wsi_pipeline.export.nuclei import select_cells
from wsi_pipeline.io import open_slide

from report_helpers import TAX, make_detections

CRIC_MPP = 0.30  # cric_cells crops keep the originals' geometry (~0.30 um/px, estimated)
PALE_CELL, DARK_NUCLEUS = (205, 175, 195), (75, 62, 125)


def drawn_cell(mpp: float, axes_um: tuple[float, float], angle: float = 25.0,
               nucleus_offset_um: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, float, float, tuple[int, int]]:
    """White background, a pale 50 x 38 um cell, a dark elliptic nucleus; its drawn area and the cell's (um^2)."""
    n = int(round(CROP_UM / mpp))
    img = np.full((n, n, 3), 246, np.uint8)
    c = n // 2
    cv2.ellipse(img, (c, c), (round(25 / mpp), round(19 / mpp)), 0, 0, 360, PALE_CELL, -1)
    cell_area = float((img != 246).any(axis=2).sum()) * mpp * mpp
    nx, ny = c + round(nucleus_offset_um[0] / mpp), c + round(nucleus_offset_um[1] / mpp)
    cv2.ellipse(img, (nx, ny), (round(axes_um[0] / mpp), round(axes_um[1] / mpp)), angle, 0, 360, DARK_NUCLEUS, -1)
    area = float((img == DARK_NUCLEUS).all(axis=2).sum()) * mpp * mpp
    return img, area, cell_area, (nx, ny)


@pytest.mark.parametrize("mpp", [0.25, 0.5])
@pytest.mark.parametrize("axes_um", [(6.0, 4.5), (8.0, 6.0)])
def test_drawn_nucleus_area_within_5_percent(mpp, axes_um):
    img, area, cell_area, (nx, ny) = drawn_cell(mpp, axes_um)
    m = measure_nucleus(img, mpp, (nx, ny))
    assert m.found
    assert m.area_um2 == pytest.approx(area, rel=0.05)
    # the whole drawn cell is its territory (one nucleus, every point within 30 um of it)
    assert m.cell_area_um2 == pytest.approx(cell_area, rel=0.05)
    assert m.nc_ratio == pytest.approx(area / cell_area, rel=0.08)


def test_centre_beside_the_nucleus_finds_it_far_away_does_not():
    img, area, _, (nx, ny) = drawn_cell(0.25, (6.0, 4.5))
    near = measure_nucleus(img, 0.25, (nx + 8 / 0.25, ny))  # 8 um right of the nucleus centre: 2 um off its rim
    assert near.found and near.area_um2 == pytest.approx(area, rel=0.05)
    far = measure_nucleus(img, 0.25, (nx + 20 / 0.25, ny))  # 14 um off its rim: another cell's centre
    assert not far.found and far.area_um2 is None and far.nc_ratio is None


def test_no_nucleus_on_blank_or_cytoplasm_only():
    blank = np.full((200, 200, 3), 246, np.uint8)
    assert not measure_nucleus(blank, 0.3, (100, 100)).found
    pale = blank.copy()
    cv2.circle(pale, (100, 100), 70, PALE_CELL, -1)
    assert not measure_nucleus(pale, 0.3, (100, 100)).found


def test_a_neighbour_nucleus_shares_the_cell_territory():
    """Two nuclei in one cytoplasm: each gets the half nearer to it, so N/C roughly doubles."""
    alone, _, _, centre = drawn_cell(0.3, (5.0, 4.0), nucleus_offset_um=(-8.0, 0.0))
    pair = alone.copy()
    c = alone.shape[0] // 2
    cv2.ellipse(pair, (c + round(8 / 0.3), c), (round(5 / 0.3), round(4 / 0.3)), 25, 0, 360, DARK_NUCLEUS, -1)
    one, two = measure_nucleus(alone, 0.3, centre), measure_nucleus(pair, 0.3, centre)
    assert one.found and two.found and two.area_um2 == pytest.approx(one.area_um2, rel=0.03)
    assert 1.6 < two.nc_ratio / one.nc_ratio < 2.4


def test_touching_nuclei_are_split():
    img = np.full((240, 240, 3), 246, np.uint8)
    cv2.circle(img, (120, 120), 100, PALE_CELL, -1)
    for x in (108, 132):  # two 7.5 um discs overlapping by 0.6 um (0.3 um/px)
        cv2.circle(img, (x, 120), 12, DARK_NUCLEUS, -1)
    labels, _ = segment_nuclei(img, 0.3)
    assert len(np.unique(labels[labels > 0])) == 2
    m = measure_nucleus(img, 0.3, (108, 120))
    one_disc = float((img[:, :120] == DARK_NUCLEUS).all(axis=2).sum()) * 0.09
    assert m.area_um2 == pytest.approx(one_disc, rel=0.15)  # small nuclei read a little large (smoothing)
    other = measure_nucleus(img, 0.3, (132, 120))
    assert other.area_um2 == pytest.approx(m.area_um2, rel=0.05)


def test_ratio_to_slide_nilm_median():
    ratio, median = ratio_to_reference(np.array([50.0, np.nan, 100.0]), np.array([20.0, 25.0, np.nan, 30.0]))
    assert median == 25.0 and ratio[0] == 2.0 and math.isnan(ratio[1]) and ratio[2] == 4.0
    ratio, median = ratio_to_reference([50.0], [])
    assert median is None and math.isnan(ratio[0])


def test_nilm_sample_is_capped_fixed_and_abnormal_cells_all_measured():
    nilm, hsil, infl = TAX.index("NILM"), TAX.index("HSIL"), TAX.index("INFL")
    labels = np.array([nilm] * 20_000 + [hsil] * 700 + [infl] * 50)
    idx, n_nilm, n_sampled = select_cells(labels, TAX, nilm_sample=500)
    assert n_nilm == 20_000 and n_sampled == 500 and len(idx) == 1200
    assert np.all(labels[idx[labels[idx] != nilm]] == hsil)  # INFL never measured, every HSIL measured
    assert np.array_equal(idx, select_cells(labels, TAX, nilm_sample=500)[0])  # the same sample on a rerun


# ------------------------------------------------------------------ real CRIC crops (nucleus-centred, 100 x 100)

def _cric_crops(cytology_dir, label: str, names: list[str]) -> list[np.ndarray]:
    folder = cytology_dir / "cric_cells" / label
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return [cv2.cvtColor(cv2.imread(str(folder / f"{n}.jpg")), cv2.COLOR_BGR2RGB) for n in names]


def test_real_cric_nilm_nuclei_are_plausible_and_hsil_larger(cytology_dir):
    # the first 16 NILM crops of the folder (sorted names), and three single HSIL cells
    nilm_names = sorted(p.stem for p in (cytology_dir / "cric_cells" / "NILM").glob("*.jpg"))[:16]
    nilm = [measure_nucleus(img, CRIC_MPP, (49.5, 49.5)) for img in _cric_crops(cytology_dir, "NILM", nilm_names)]
    assert all(m.found for m in nilm)
    areas = np.array([m.area_um2 for m in nilm])
    # intermediate/superficial nuclei: 5-13 um across at the estimated 0.30 um/px
    assert 20 < float(np.median(areas)) < 110 and areas.min() > 15 and areas.max() < 160
    hsil = [measure_nucleus(img, CRIC_MPP, (49.5, 49.5))
            for img in _cric_crops(cytology_dir, "HSIL", ["11449", "11451", "11452"])]
    assert all(m.found for m in hsil)
    assert min(m.area_um2 for m in hsil) > 1.5 * float(np.median(areas))
    assert all(0 < m.nc_ratio <= 1 for m in nilm + hsil)


# ------------------------------------------------------------------ report and exports carry the measures

def _nuclei_on_slide(field_slide) -> list[tuple[float, float, float]]:
    """Centres (x, y) and areas of nuclei the method finds in the test slide, well inside it and apart."""
    with open_slide(field_slide) as slide:
        w, h = slide.dimensions
        image = slide.read_region(0, 0, 0, w, h)
    labels, _ = segment_nuclei(image, 0.25)
    margin = CROP_UM / 0.25 / 2
    found = []
    for region in measure.regionprops(labels):
        y, x = region.centroid
        if 30 <= region.area * 0.0625 <= 120 and margin < x < w - margin and margin < y < h - margin \
                and region.solidity > 0.9 and all(math.hypot(x - a, y - b) > 150 for a, b, _ in found):
            found.append((x, y, region.area * 0.0625))
    return found


def test_report_and_exports_carry_nucleus_measures(tmp_path, field_info, field_slide):
    nuclei = _nuclei_on_slide(field_slide)
    assert len(nuclei) >= 4
    (x1, y1, _), (x2, y2, _), (x3, y3, _), (x4, y4, _) = nuclei[:4]
    cells = [("NILM", 0.9, x1, y1, 60), ("NILM", 0.8, x2, y2, 60), ("NILM", 0.85, x3, y3, 60),
             ("HSIL", 0.95, x4, y4, 40), ("INFL", 0.9, 30, 30, 20), ("NILM", 0.2, 700, 700, 50)]
    det = make_detections(tmp_path / "detections.parquet", cells, field_info)
    paths = write_report(det, tmp_path / "out", ReportConfig(morphometry_nilm_sample=2, crop_format="png"), TAX)
    report = json.loads(paths.json.read_text())

    block = report["morphometry"]
    assert block["status"] == "measured" and "not a diagnosis" in block["note"]
    assert block["nilm_cells_counted"] == 3 and block["nilm_cells_measured"] == 2 and block["nilm_sample"]["sampled"]
    assert block["cells_measured"] == 3 and block["nuclei_found"] == 3
    nilm_median = block["nilm_median_area_um2"]
    assert 20 < nilm_median < 130
    (hsil,) = [c for c in report["top_cells"] if c["class"] == "HSIL"]
    nucleus = hsil["nucleus"]
    with open_slide(field_slide) as slide:  # the same number measured directly on the same window
        x, y, size = crop_window((x4, y4, x4, y4), round(CROP_UM / 0.25), slide.dimensions)
        direct = measure_nucleus(slide.read_region(0, x, y, size, size), 0.25, (x4 - x, y4 - y))
    assert nucleus["found"] and nucleus["area_um2"] == pytest.approx(direct.area_um2)
    assert nucleus["nc_ratio"] == pytest.approx(direct.nc_ratio)
    assert nucleus["ratio_to_nilm_median"] == pytest.approx(direct.area_um2 / nilm_median, rel=1e-2)
    assert {r["name"] for r in block["classes"]} == {"NILM", "HSIL"}

    rows = list(csv.DictReader(io.StringIO(paths.csv.read_text())))
    assert len(rows) == 5  # counted cells
    by_class = {}
    for row in rows:
        by_class.setdefault(row["class_name"], []).append(row)
    (hsil_row,) = by_class["HSIL"]
    assert hsil_row["nucleus"] == "found" and float(hsil_row["nucleus_area_um2"]) == pytest.approx(direct.area_um2, abs=0.01)
    assert float(hsil_row["nucleus_to_nilm_median"]) > 0 and float(hsil_row["nc_ratio"]) > 0
    assert by_class["INFL"][0]["nucleus"] == "not_measured" and by_class["INFL"][0]["nucleus_area_um2"] == ""
    assert sorted(r["nucleus"] for r in by_class["NILM"]) == ["found", "found", "not_measured"]  # sample of 2

    features = json.loads(paths.geojson.read_text())["features"]
    measured = [f["properties"]["measurements"] for f in features if QUPATH_NUCLEUS_AREA in f["properties"]["measurements"]]
    assert len(measured) == 3 and all(QUPATH_NC_RATIO in m and QUPATH_NUCLEUS_TO_NILM in m for m in measured)
    names = [a.get("Name") for a in ET.fromstring(paths.xml.read_text()).iter("Annotation")]
    assert sum("nucleus" in n and "N/C" in n for n in names) == 3

    html = paths.html.read_text()
    assert "µm² · " in html and "× NILM · N/C" in html and "not a diagnosis" in html


def test_without_slide_pixels_nothing_is_measured_and_exports_say_so(tmp_path, field_info):
    det = make_detections(tmp_path / "detections.parquet", [("HSIL", 0.9, 100, 100, 40)],
                          {**field_info, "path": str(tmp_path / "gone.svs")})
    paths = write_report(det, tmp_path / "out", ReportConfig(), TAX)
    report = json.loads(paths.json.read_text())
    assert report["morphometry"]["status"] == "not_measured" and report["top_cells"][0]["nucleus"] is None
    row = next(csv.DictReader(io.StringIO(paths.csv.read_text())))
    assert row["nucleus"] == "not_measured" and row["nucleus_area_um2"] == ""


def test_worker_processes_measure_the_same_nuclei(tmp_path, field_info):
    """report.morphometry_workers: 2 processes (the pool starts at 100 cells and reads in batches of 256) give the
    report the same nucleus columns as measuring in the report's own process."""
    from wsi_pipeline.export.nuclei import BATCH_CELLS, PARALLEL_MIN_CELLS

    rng = np.random.default_rng(7)
    w, h = field_info["width"], field_info["height"]
    n = PARALLEL_MIN_CELLS + 20
    assert n < BATCH_CELLS
    cells = [("NILM" if i % 3 else "HSIL", 0.9, float(x), float(y), 40)
             for i, (x, y) in enumerate(zip(rng.uniform(40, w - 40, n), rng.uniform(40, h - 40, n)))]
    det = make_detections(tmp_path / "detections.parquet", cells, field_info)
    rows = {}
    for workers in (1, 2):
        paths = write_report(det, tmp_path / f"w{workers}", ReportConfig(morphometry_workers=workers), TAX)
        rows[workers] = list(csv.DictReader(io.StringIO((tmp_path / f"w{workers}" / "cells.csv").read_text())))
        assert json.loads(paths.json.read_text())["morphometry"]["cells_measured"] == n
    assert rows[1] == rows[2] and sum(r["nucleus"] == "found" for r in rows[1]) >= 20  # random points: some on a nucleus
