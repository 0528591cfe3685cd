"""Nuclear morphometry on the annotated CRIC fields: nuclei matched, and how well area and N/C separate abnormal from NILM.

Segments every nucleus of each field of ``../shared/data/cytology/cric_fields`` with the report's
method (``wsi_pipeline/aggregate/morphometry.py``: ``segment_nuclei`` and
``nucleus_and_territory_areas``, at each field's ``mpp_estimate`` from ``fields.csv``), then for
each annotated nucleus point of ``cells.csv``:

* **matched**: the point lies in a segmented nucleus, or within 10 px of one (the nearest);
* over matched nuclei, the AUC of abnormal (ASC-US, LSIL, ASC-H, HSIL, SCC) against NILM for the
  nucleus area, the N/C ratio, log area + log N/C (equal weights), and the area divided by the
  median area of the field's matched NILM nuclei (what the report calls the ratio to the slide's
  NILM median; fields without a matched NILM nucleus are left out of that row).

Printed for all fields and for the validation fields of the committed split (``configs/splits/cric.csv``).
Nothing here is learned or tuned: the method's parameters were fixed before this ran.

    nice -n 19 python benchmarks/morphometry.py                 # every field (~4 min on 2 cores)
    nice -n 19 python benchmarks/morphometry.py --limit 20      # the first 20 fields
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi
from scipy.stats import mannwhitneyu

from wsi_pipeline.aggregate.morphometry import nucleus_and_territory_areas, segment_nuclei
from wsi_pipeline.benchmarking import CRIC_SPLIT as SPLIT
from wsi_pipeline.benchmarking import CYTOLOGY
from wsi_pipeline.benchmarking import PROJECT as ROOT

FIELDS = CYTOLOGY / "cric_fields"
MATCH_PX = 10
NILM_LABEL = "Negative for intraepithelial lesion"


def auc(abnormal: np.ndarray, normal: np.ndarray) -> float | None:
    """Probability that an abnormal nucleus scores above a NILM one (ties count half)."""
    if abnormal.size == 0 or normal.size == 0:
        return None
    u = mannwhitneyu(abnormal, normal, alternative="two-sided").statistic
    return float(u) / (abnormal.size * normal.size)


def measure_field(image_path: Path, mpp: float, points: list[tuple[float, float, str]]) -> list[dict]:
    """One row per annotated point: label, matched, area, N/C (None when unmatched)."""
    rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    labels, cells = segment_nuclei(rgb, mpp)
    area, territory = nucleus_and_territory_areas(labels, cells, mpp)
    dist, (rows, cols) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    h, w = labels.shape
    out = []
    for x, y, label in points:
        c, r = int(np.clip(round(x), 0, w - 1)), int(np.clip(round(y), 0, h - 1))
        own = int(labels[r, c]) if labels[r, c] else (int(labels[rows[r, c], cols[r, c]]) if dist[r, c] <= MATCH_PX else 0)
        out.append({"label": label, "matched": own > 0,
                    "area": float(area[own]) if own else None,
                    "nc": float(area[own] / territory[own]) if own else None})
    return out


def summarise(rows: list[dict], name: str) -> str:
    n = len(rows)
    matched = [r for r in rows if r["matched"]]
    abn = [r for r in matched if r["label"] != NILM_LABEL]
    nor = [r for r in matched if r["label"] == NILM_LABEL]

    def values(sel, key):
        return np.array([r[key] for r in sel if r.get(key) is not None], float)

    lines = [f"{name}: {n} annotated nuclei ({sum(r['label'] != NILM_LABEL for r in rows)} abnormal), "
             f"matched {len(matched)}/{n} ({len(matched) / max(n, 1):.3f}); "
             f"NILM median area {np.median(values(nor, 'area')):.1f} um^2, abnormal {np.median(values(abn, 'area')):.1f} um^2"]
    for key, title in (("area", "nucleus area"), ("nc", "N/C"), ("log_sum", "log area + log N/C"),
                       ("ratio", "area / field NILM median")):
        a, b = values(abn, key), values(nor, key)
        value = auc(a, b)
        lines.append(f"  AUC abnormal vs NILM, {title:<26} {'-' if value is None else f'{value:.3f}'}  (n {a.size} / {b.size})")
    for grade, classes in (("low-grade (ASC-US, LSIL)", {"ASC-US", "LSIL"}), ("high-grade (ASC-H, HSIL, SCC)", {"ASC-H", "HSIL", "SCC"})):
        sel = [r for r in abn if r["label"] in classes]
        cells = [f"{t} {'-' if (v := auc(values(sel, k), values(nor, k))) is None else f'{v:.3f}'}"
                 for k, t in (("area", "area"), ("nc", "N/C"), ("log_sum", "log sum"), ("ratio", "ratio to NILM median"))]
        lines.append(f"  {grade} vs NILM (n {len(sel)}): " + ", ".join(cells))
    by_class = defaultdict(list)
    for r in matched:
        by_class[r["label"]].append(r["area"])
    lines.append("  median area by class: " + ", ".join(f"{k} {np.median(v):.0f}" for k, v in sorted(by_class.items())))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N fields (0: all)")
    args = parser.parse_args(argv)
    if not FIELDS.is_dir():
        print(f"{FIELDS} is absent", file=sys.stderr)
        return 1
    mpp = {r["image"]: float(r["mpp_estimate"]) for r in csv.DictReader(open(FIELDS / "fields.csv"))}
    split = {r["field"]: r["split"] for r in csv.DictReader(open(SPLIT))} if SPLIT.is_file() else {}
    points = defaultdict(list)
    for r in csv.DictReader(open(FIELDS / "cells.csv")):
        points[r["image"]].append((float(r["x"]), float(r["y"]), r["label"]))
    images = sorted(points)[: args.limit or None]
    started = time.perf_counter()
    every, val = [], []
    for image in images:
        rows = measure_field(FIELDS / image, mpp[image], points[image])
        nilm = [r["area"] for r in rows if r["matched"] and r["label"] == NILM_LABEL]
        median = float(np.median(nilm)) if nilm else None
        for r in rows:
            if r["matched"]:
                r["log_sum"] = float(np.log(r["area"]) + np.log(r["nc"]))
                r["ratio"] = r["area"] / median if median else None
        every += rows
        if split.get(Path(image).stem) == "val":
            val += rows
    seconds = time.perf_counter() - started
    print(f"{len(images)} CRIC fields at their mpp_estimate (~0.325 um/px), {seconds:.0f} s ({seconds / len(images):.2f} s per field)")
    print(summarise(every, "all fields"))
    if val:
        print(summarise(val, f"validation fields of {SPLIT.relative_to(ROOT)}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
