"""Build the example report shown in docs/report.md (docs/img/report.png) from real labelled Pap fields.

The eight CRIC Cervix fields in ../shared/data/cytology/cric are laid side by side (4 x 2) into a
pyramidal slide at 0.25 um/px; their expert boxes become the "detections", with scores drawn as a
detector would give them (seeded). Run from the project root:

    .venv/bin/python docs/report_example.py --out /tmp/report_example [--screenshot docs/img/report.png]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from wsi_pipeline.config import load_config
from wsi_pipeline.export import write_report
from wsi_pipeline.io import open_slide
from wsi_pipeline.io.tiffwriter import wrap_image_as_slide
from wsi_pipeline.store.detections import Detections, write_detections
from wsi_pipeline.taxonomy import load_taxonomy

CRIC = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cytology" / "cric"
CRIC_TO_CLASS = {"Negative for intraepithelial lesion": "NILM", "ASC-US": "ASC-US", "LSIL": "LSIL"}
COLUMNS = 4
MPP = 0.25


def build(out: Path, seed: int = 7) -> Path:
    tax = load_taxonomy()
    rng = np.random.default_rng(seed)
    fields = sorted(CRIC.glob("*.webp"))
    h, w = cv2.imread(str(fields[0])).shape[:2]
    rows = -(-len(fields) // COLUMNS)
    mosaic = np.full((rows * h, COLUMNS * w, 3), 255, np.uint8)
    boxes, labels = [], []
    for i, field in enumerate(fields):
        ox, oy = (i % COLUMNS) * w, (i // COLUMNS) * h
        mosaic[oy : oy + h, ox : ox + w] = cv2.cvtColor(cv2.imread(str(field)), cv2.COLOR_BGR2RGB)
        for feature in json.loads(field.with_suffix(".geojson").read_text())["features"]:
            ring = np.array(feature["geometry"]["coordinates"][0], np.float32)
            boxes.append([ring[:, 0].min() + ox, ring[:, 1].min() + oy, ring[:, 0].max() + ox, ring[:, 1].max() + oy])
            labels.append(tax.index(CRIC_TO_CLASS[feature["properties"]["label"]]))
    out.mkdir(parents=True, exist_ok=True)
    slide_path = wrap_image_as_slide(mosaic, out / "cric_mosaic.svs", mpp=MPP)

    n = len(labels)
    label_arr = np.array(labels, np.int16)
    scores = rng.beta(6, 1.6, n).astype(np.float32)  # mostly confident, some below the 0.5 threshold
    class_scores = rng.uniform(0, 0.08, (n, len(tax))).astype(np.float32)
    class_scores[np.arange(n), label_arr] = scores
    with open_slide(slide_path) as slide:
        info = slide.info()
    meta = {
        "taxonomy": tax.names, "complete": True, "slide": info,
        "store": {"target_mpp": 0.5, "patch_size": 512, "overlap": 128, "n_patches": 60,
                  "cell_area_mm2": round(mosaic.shape[0] * mosaic.shape[1] * MPP**2 / 1e6, 3), "seconds": 2.1},
        "model": {"path": "ground_truth_as_detections.pt", "detector": "(expert boxes)", "backbone": "-", "sha256": ""},
        "inference": {"device": "-", "precision": "-", "seconds": 0.0},
    }
    det = Detections(np.array(boxes, np.float32), scores, label_arr, np.zeros(n, np.int32), class_scores)
    write_detections(out / "detections.parquet", det, meta)
    return write_report(out / "detections.parquet", out, load_config().report, tax).html


def screenshot(html: Path, png: Path, width: int = 1360, height: int = 2300) -> None:
    """Full-page-ish screenshot with headless Chromium, reduced to a palette PNG to stay small."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (make chromium)")
    with tempfile.TemporaryDirectory() as profile:
        raw = Path(profile) / "shot.png"
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={raw}", html.as_uri()],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
        )
        image = Image.open(raw).convert("RGB")
    small = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)
    small.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(png, optimize=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    page = build(args.out)
    print(page)
    if args.screenshot:
        screenshot(page, args.screenshot)
        print(args.screenshot, args.screenshot.stat().st_size, "bytes")
