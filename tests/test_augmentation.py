"""Training augmentation: the shift moves boxes with their pixels, fills the uncovered border with glass, and is
refused outside its range."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.config import AugmentConfig, ConfigError, load_train_config
from wsi_pipeline.models.data import build_augmentation


def only(**kw) -> AugmentConfig:
    """An augmentation with every op off but those given."""
    off = dict(flips=False, rotate90=False, hsv_shift=0.0, scale=0.0, shift=0.0, brightness_contrast=0.0,
               blur_prob=0.0, jpeg_prob=0.0)
    return AugmentConfig(**{**off, **kw})


def test_shift_moves_the_box_with_its_cell_and_fills_with_glass():
    image = np.full((256, 256, 3), 245, np.uint8)
    image[100:140, 110:150] = (60, 40, 120)  # one dark cell
    box = [110.0, 100.0, 150.0, 140.0]
    aug = build_augmentation(only(shift=0.25))
    moved = 0
    for seed in range(40):
        np.random.seed(seed)
        import random  # noqa: PLC0415

        random.seed(seed)
        out = aug(image=image, bboxes=[box], labels=[1])
        assert out["image"].shape == image.shape
        assert len(out["bboxes"]) == 1  # a 25% shift never pushes this central cell out
        x0, y0, x1, y1 = (int(round(v)) for v in out["bboxes"][0])
        dark = np.argwhere(out["image"].sum(axis=2) < 400)
        assert dark[:, 0].min() >= y0 - 1 and dark[:, 0].max() <= y1 and dark[:, 1].min() >= x0 - 1 and dark[:, 1].max() <= x1
        assert abs((x1 - x0) - 40) <= 1 and abs((y1 - y0) - 40) <= 1  # moved, not resized
        if (x0, y0) != (110, 100):
            moved += 1
            assert (out["image"].reshape(-1, 3) == 245).all(axis=1).sum() > (image.reshape(-1, 3) == 245).all(axis=1).sum() * 0.5
    assert 5 < moved < 40  # applied to about half of the patches


def test_shift_out_of_range_is_a_config_error(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("train_data: [data/x]\nout: runs/x\naugment: {shift: 0.8}\n")
    with pytest.raises(ConfigError, match="augment.shift"):
        load_train_config(cfg)
