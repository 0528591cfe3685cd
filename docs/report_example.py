"""Build the README / docs/report.md picture (docs/img/report.png): the bundled starter model's real report
on real Pap fields it never trained on.

Eight CRIC Cervix fields from the validation side of configs/splits/cric.csv (the first eight, in
sorted order, that hold an abnormal nucleus) are laid side by side (4 x 2) into one image and run
through the whole pipeline (`wsi-run`'s per-slide path) with the bundled starter model at their
estimated pixel size (fields.csv, 0.325 um/px). Every box in the picture is a model detection; the
fields' expert labels are not drawn. Run from the project root:

    .venv/bin/python docs/report_example.py --out /tmp/report_example [--screenshot docs/img/report.png]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

from wsi_pipeline.benchmarking.real_fields import CRIC_FIELDS as FIELDS
from wsi_pipeline.benchmarking.real_fields import run_field, validation_fields, write_cric_mosaic
from wsi_pipeline.datasets.slides import read_mpp_table
from wsi_pipeline.models.bundled import starter_model_path


def example_fields(n: int = 8) -> list[Path]:
    """The first ``n`` validation fields (sorted) with at least one abnormal nucleus."""
    import csv  # noqa: PLC0415

    with open(FIELDS / "fields.csv", newline="") as fh:
        abnormal = {r["image"] for r in csv.DictReader(fh) if int(r["abnormal"]) > 0}
    return [f for f in validation_fields() if f.name in abnormal][:n]


def build(out: Path) -> Path:
    """The starter model's report on a mosaic of validation fields."""
    fields = example_fields()
    mpp = read_mpp_table(FIELDS / "fields.csv")
    return run_field(write_cric_mosaic(out, fields=fields), out, starter_model_path(),
                     sum(mpp[f.stem] for f in fields) / len(fields)) / "report.html"


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
