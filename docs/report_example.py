"""Build the README / docs/report.md picture (docs/img/report.png): the bundled starter model's real report
on real Pap fields.

The eight CRIC Cervix fields in ../shared/data/cytology/cric are laid side by side (4 x 2) into one
image and run through the whole pipeline (`wsi-run`'s per-slide path) with the bundled starter model at
an estimated 0.30 um/px (docs/model_card.md). Every box in the picture is a model detection; the
fields' expert labels are not drawn. Run from the project root:

    .venv/bin/python docs/report_example.py --out /tmp/report_example [--screenshot docs/img/report.png]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from wsi_pipeline.models.bundled import starter_model_path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_fields import CRIC_MPP, run_field, write_cric_mosaic  # noqa: E402  (the validation benchmark's mosaic)


def build(out: Path) -> Path:
    """The starter model's report on the CRIC mosaic (the same run as benchmarks/real_fields.py)."""
    return run_field(write_cric_mosaic(out), out, starter_model_path(), CRIC_MPP) / "report.html"


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
