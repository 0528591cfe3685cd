"""`wsi info SLIDE`: what a slide file holds (format, levels, resolution, size) without reading its pixels."""

from __future__ import annotations

import argparse
import json

from ..io import open_slide
from ..slide_formats import supported_text
from .common import HelpFormatter

EPILOG = """examples:
  wsi info slide.svs
  wsi info field.jpg --mpp 0.25        # a plain image needs its resolution
  wsi info slide.svs --json

Associated images (label, macro) are listed by name only; their pixels are never read or copied.
"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="show a slide's format, levels, mpp and size", description=__doc__,
                       epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("slide", help=f"slide file: {supported_text()}")
    p.add_argument("--mpp", type=float, default=None, help="um per pixel at full resolution (overrides the file)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    with open_slide(args.slide, mpp=args.mpp) as slide:
        w, h = slide.dimensions
        info = {
            **slide.info().to_dict(),
            "size_mm": [round(w * slide.mpp[0] / 1000, 3), round(h * slide.mpp[1] / 1000, 3)],
            "levels": [
                {"level": i, "width": lw, "height": lh, "downsample": round(ds, 4), "mpp": round(slide.level_mpp(i), 4)}
                for i, ((lw, lh), ds) in enumerate(zip(slide.level_dimensions, slide.level_downsamples))
            ],
            "associated_images": slide.associated_image_names,
        }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"slide        {info['path']}")
    print(f"format       {info['vendor']} (read via {info['backend']})")
    print(f"size         {w} x {h} px = {info['size_mm'][0]} x {info['size_mm'][1]} mm")
    print(f"mpp          {slide.mpp[0]:.4f} x {slide.mpp[1]:.4f} um/px (from {slide.mpp_source})")
    print(f"levels       {slide.level_count}")
    for lv in info["levels"]:
        print(f"  {lv['level']:>2}  {lv['width']:>7} x {lv['height']:<7} downsample {lv['downsample']:<8g} {lv['mpp']:g} um/px")
    names = ", ".join(info["associated_images"]) or "none"
    print(f"associated   {names} (names only; never copied into outputs)")
    print(f"fingerprint  {info['fingerprint'][:16]}")
    return 0
