"""Specimen-check false-warning rate on every real image in ../shared/data and on synthetic slides.

    python benchmarks/specimen_check.py [--synth DIR_WITH_SVS]

Plain images are measured at an assumed pixel size (CRIC 0.23 um/px, TCT 0.45, lbc_field 0.25;
the check uses 2 um/px overviews and 0.5 um/px patches, so a 2x error in mpp matters little); the 187
annotated CRIC fields of ``cytology/cric_fields`` at their ``mpp_estimate``. A real cytology image may warn
(``check_stain``: the category is kept) but should never lose its category.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from wsi_pipeline.aggregate.specimen import ASSESSABLE, judge, measure_overview, patch_focus
from wsi_pipeline.benchmarking import SHARED_DATA as DATA
from wsi_pipeline.benchmarking.images import read_rgb
from wsi_pipeline.datasets.slides import read_mpp_table
PATCH_MPP, PATCH = 0.5, 512
BLUR_UM = 1.5  # sigma of the Gaussian defocus applied to copies of the real images


def image_check(rgb: np.ndarray, mpp: float, blur_um: float = 0.0):
    if blur_um:  # a defocused copy: Gaussian blur of sigma blur_um
        rgb = cv2.GaussianBlur(rgb, (0, 0), blur_um / mpp)
    f = mpp / PATCH_MPP
    small = cv2.resize(rgb, (max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f))), interpolation=cv2.INTER_AREA)
    focus = [v for y in range(0, max(1, small.shape[0] - PATCH + 1), PATCH) for x in range(0, max(1, small.shape[1] - PATCH + 1), PATCH)
             if (v := patch_focus(small[y:y + PATCH, x:x + PATCH])) is not None]
    return judge(measure_overview(rgb, mpp), focus)


def slide_check(path: Path, mpp: float | None = None):
    from wsi_pipeline.io import open_slide

    with open_slide(path, mpp=mpp) as s:
        thumb = s.thumbnail(2.0)
        level = s.best_level_for_mpp(PATCH_MPP)
        w, h = s.level_dimensions[level]
        focus = []
        step = max(PATCH, int(min(w, h) / 6))
        for y in range(0, max(1, h - PATCH), step):
            for x in range(0, max(1, w - PATCH), step):
                ds = s.level_downsamples[level]
                v = patch_focus(s.read_region(level, int(x * ds), int(y * ds), PATCH, PATCH))
                if v is not None:
                    focus.append(v)
    return judge(measure_overview(thumb, 2.0), focus)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--synth", type=Path, default=None, help="folder of synthetic .svs slides")
    args = ap.parse_args()
    cases = []  # (name, expected ok?, check)
    cyt = DATA / "cytology"
    for p in sorted((cyt / "cric").glob("*.webp")):
        cases.append((f"cric/{p.name}", True, image_check(read_rgb(p), 0.23)))
    for p in sorted((cyt / "tct_marked").glob("*.JPG")):
        cases.append((f"tct_marked/{p.name}", True, image_check(read_rgb(p), 0.45)))
    cases.append(("lbc_field.jpg", True, image_check(read_rgb(cyt / "lbc_field.jpg"), 0.25)))
    mpp = read_mpp_table(cyt / "cric_fields" / "fields.csv")
    for p in sorted((cyt / "cric_fields").glob("*.jpg")):
        cases.append((f"cric_fields/{p.name}", True, image_check(read_rgb(p), mpp[p.stem])))
    blurred = [(f"blurred {BLUR_UM} um: {n}", image_check(read_rgb(p), m, BLUR_UM)) for n, p, m in
               [("lbc_field.jpg", cyt / "lbc_field.jpg", 0.25)] +
               [(f"tct_marked/{p.name}", p, 0.45) for p in sorted((cyt / "tct_marked").glob("*.JPG"))] +
               [(f"cric/{p.name}", p, 0.23) for p in sorted((cyt / "cric").glob("*.webp"))]]
    for p in sorted(args.synth.glob("*.svs")) if args.synth else []:
        cases.append((f"synthetic/{p.name}", True, slide_check(p)))
    cases.append(("slides/cmu-1-small-region.svs (H&E)", False, slide_check(DATA / "slides" / "cmu-1-small-region.svs")))
    cases.append(("slides/kidney-48-5.tif (H&E, 0.5 um/px assumed)", False, image_check(read_rgb(DATA / "slides" / "kidney-48-5.tif"), 0.5)))
    false_warn = sum(1 for _, ok, c in cases if ok and c.status != "ok")
    withheld = sum(1 for _, ok, c in cases if ok and c.status not in ASSESSABLE)
    n_cyt = sum(1 for _, ok, _ in cases if ok)
    missed = sum(1 for _, ok, c in cases if not ok and c.status in ASSESSABLE)
    for name, ok, c in cases:
        m = c.measures
        print(f"{name:52s} {'cytology' if ok else 'not cyto':9s} {c.status:20s} stained {m.get('stained_fraction', 0):.3f} "
              f"sheets {m.get('sheet_fraction', 0):.2f} fill {m.get('sheet_fill', 0):.2f} eosin {m.get('eosin_only_fraction', 0):.2f} "
              f"pap {m.get('pap_hue_fraction', 0):.2f} focus {m.get('focus_median', 0):7.1f} blurred {m.get('blurred_fraction', 0):.2f}")
    for name, c in blurred:
        print(f"{name:52s} {'defocus':9s} {c.status:20s} focus {c.measures.get('focus_median', 0):7.1f} "
              f"blurred {c.measures.get('blurred_fraction', 0):.2f}")
    print(f"real cytology images warned: {false_warn}/{n_cyt}, category withheld: {withheld}/{n_cyt}; "
          f"non-cytology slides given a category: {missed}/{len(cases) - n_cyt}; "
          f"defocused copies flagged out_of_focus: {sum(c.status == 'out_of_focus' for _, c in blurred)}/{len(blurred)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
