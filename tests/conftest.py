"""Shared fixtures. Real test data lives in ../shared/data (read-only, never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsi_pipeline.io import open_slide
from wsi_pipeline.io.tiffwriter import wrap_image_as_slide

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
        return slide.info()
