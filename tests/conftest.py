"""Shared fixtures. Real test data lives in ../shared/data (read-only, never copied into the repo)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsi_pipeline.io import open_slide
from wsi_pipeline.io.tiffwriter import wrap_image_as_slide
from wsi_pipeline.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("WSI_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip only when the folder is absent (a checkout elsewhere)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def slides_dir(shared_data: Path) -> Path:
    return shared_data / "slides"


@pytest.fixture(scope="session")
def cytology_dir(shared_data: Path) -> Path:
    return shared_data / "cytology"


@pytest.fixture(scope="module")
def field_slide(tmp_path_factory, cytology_dir) -> Path:
    """A 1536 x 1024 pyramidal slide at 0.25 um/px cut from a real liquid-based Pap field."""
    image = cv2.cvtColor(cv2.imread(str(cytology_dir / "lbc_field.jpg")), cv2.COLOR_BGR2RGB)
    return wrap_image_as_slide(np.ascontiguousarray(image[1000:2024, 1200:2736]),
                               tmp_path_factory.mktemp("slide") / "field.svs", mpp=0.25)


@pytest.fixture(scope="module")
def field_info(field_slide) -> dict:
    with open_slide(field_slide) as slide:
        return slide.info().to_dict()


TINY_PATCH = 64  # edge of the tiny training patches below


def _write_patch_dataset(root: Path, n_images: int = 6, seed: int = 0, names: list[str] | None = None) -> Path:
    """Pale patches with dark discs (class NILM or HSIL) and their COCO annotations."""
    names = names or load_taxonomy().names
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n_images):
        img = np.full((TINY_PATCH, TINY_PATCH, 3), 225, np.uint8)
        for _ in range(2):
            cx, cy, r = (int(v) for v in rng.integers([12, 12, 6], [52, 52, 11]))
            cls = int(rng.choice([0, 6]))
            cv2.circle(img, (cx, cy), r, (60, 40, 120) if cls == 6 else (150, 120, 160), -1)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cls + 1,
                         "bbox": [cx - r, cy - r, 2 * r, 2 * r], "area": 4 * r * r, "iscrowd": 0})
        cv2.imwrite(str(root / "images" / f"p{i}.jpg"), img)
        images.append({"id": i + 1, "file_name": f"p{i}.jpg", "width": TINY_PATCH, "height": TINY_PATCH})
    coco = {"info": {"target_mpp": 1.0, "patch_size": TINY_PATCH, "taxonomy": names}, "images": images,
            "annotations": anns, "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


@pytest.fixture
def make_dataset():
    """``make_dataset(root, n_images=6, seed=0, names=None)``: a tiny COCO patch set of 64 px patches with
    dark discs labelled NILM or HSIL (training and benchmark tests)."""
    return _write_patch_dataset
