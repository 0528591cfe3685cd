"""Does Reinhard stain normalisation carry the starter model to other labs' fields? (measured: no)

Every validation field (the 8 CRIC fields and the 7 ``tct_marked`` fields) is normalised with
torchstain's Reinhard normaliser (LAB mean and standard deviation per image) to the statistics of the
starter's training background, the left 70% of ``lbc_field.jpg``. The normalised fields are then scored
exactly as ``benchmarks/real_fields.py`` scores the originals: the whole pipeline, at the report
thresholds, nothing tuned. Compare with the model card's numbers for the same model on the originals.

The rule, fixed before the first result: adopt it for the starter only if ``tct_marked`` top-1 in a
circle rises by at least 2 fields, or CRIC abnormal recall reaches 0.3 with NILM flagged <= 0.2.

    pip install torchstain==1.4.1       # not a project dependency: this benchmark only
    python benchmarks/stain_normalisation.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import real_fields  # noqa: E402
from wsi_pipeline.models.bundled import starter_model_path  # noqa: E402

TRAIN_WIDTH_FRACTION = 0.7  # configs/starter_data.yaml: the training part of lbc_field.jpg


def normalised_copy(source: Path, out: Path) -> Path:
    """``out/cric`` and ``out/tct_marked`` with every field normalised, annotations copied unchanged."""
    try:
        from torchstain.numpy.normalizers import NumpyReinhardNormalizer  # noqa: PLC0415
    except ImportError:
        raise SystemExit("this benchmark needs torchstain: pip install torchstain==1.4.1") from None
    reference = cv2.cvtColor(cv2.imread(str(source / "lbc_field.jpg")), cv2.COLOR_BGR2RGB)
    normaliser = NumpyReinhardNormalizer()
    normaliser.fit(reference[:, : int(reference.shape[1] * TRAIN_WIDTH_FRACTION)])
    fields = [*sorted((source / "cric").glob("*.webp")), *sorted((source / "tct_marked").glob("*.JPG"))]
    for field in fields:
        dst = out / field.parent.name / field.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        rgb = normaliser.normalize(cv2.cvtColor(cv2.imread(str(field)), cv2.COLOR_BGR2RGB))
        quality = [cv2.IMWRITE_WEBP_QUALITY, 101] if dst.suffix == ".webp" else [cv2.IMWRITE_JPEG_QUALITY, 95]
        cv2.imwrite(str(dst), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), quality)
    for extra in [*(source / "cric").glob("*.geojson"), source / "tct_marked" / "marks.json"]:
        shutil.copy(extra, out / extra.parent.name / extra.name)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: bundled starter model)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stain_normalisation")
    args = ap.parse_args()
    started = time.perf_counter()
    real_fields.DATA = normalised_copy(real_fields.DATA, args.out / "fields")
    print(f"fields Reinhard-normalised to lbc_field.jpg (left {TRAIN_WIDTH_FRACTION:.0%})")
    real_fields.score_fields(args.model or starter_model_path(), args.out)
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
