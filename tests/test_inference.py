"""detect_store end to end with a ground-truth stand-in detector: geometry, merging, resume, bad inputs."""

import numpy as np
import pytest
from torchvision.ops import box_iou
import torch

from wsi_pipeline.config import InferenceConfig
from wsi_pipeline.errors import ArtifactError
from wsi_pipeline.inference import detect_store
from wsi_pipeline.store.detections import read_detections

from inference_helpers import GroundTruthDetector, make_store, noise_slide, random_cells, stand_in_model

CPU = InferenceConfig(device="cpu", batch_size=8, num_threads=1)


def _scene(tmp_path, slide_mpp, target_mpp, patch=128, overlap=32, size=(1300, 900), n_cells=60, seed=0, **kw):
    rng = np.random.default_rng(seed)
    width, height = size
    scale = target_mpp / slide_mpp
    # cells up to the overlap (in level-0 px), so every cell is whole in at least one patch
    gt, labels = random_cells(rng, width, height, n_cells, 8, overlap * scale)
    store = make_store(tmp_path / "patches.zarr", noise_slide(rng, width, height), slide_mpp, target_mpp, patch,
                       overlap, **kw)
    return store, gt, labels


def _assert_each_cell_once(det, gt, labels):
    assert len(det) == len(gt), f"{len(det)} detections for {len(gt)} cells"
    iou = box_iou(torch.from_numpy(gt).float(), torch.from_numpy(det.boxes).float()).numpy()
    match = iou.argmax(axis=1)
    assert len(set(match.tolist())) == len(gt), "two cells matched the same detection"
    np.testing.assert_array_equal(det.labels[match], labels)
    assert np.abs(det.boxes[match] - gt).max() <= 1.0


@pytest.mark.parametrize("slide_mpp,target_mpp", [(0.5, 0.5), (0.25, 0.5), (0.3, 0.5)])
def test_every_cell_once_with_its_whole_box(tmp_path, slide_mpp, target_mpp):
    store, gt, labels = _scene(tmp_path, slide_mpp, target_mpp)
    detector = GroundTruthDetector(store, gt, labels)
    result = detect_store(store.path, stand_in_model(detector, target_mpp, 128), tmp_path / "out", CPU, progress=False)
    det = read_detections(result.detections_path)
    _assert_each_cell_once(det, gt, labels)
    assert sorted(detector.seen) == list(range(store.n_patches))  # every patch seen exactly once
    meta = det.meta
    assert meta.complete and meta.store.fingerprint == store.fingerprint
    assert meta.model.sha256 == "ground-truth-stand-in" and meta.inference.device == "cpu"
    assert meta.store.n_patches == store.n_patches and meta.taxonomy[0] == "NILM"
    assert det.class_scores.shape == (len(gt), len(meta.taxonomy))
    assert not (tmp_path / "out" / "detections.partial").exists()


def test_overlap_duplicates_exist_before_merging(tmp_path):
    """Guard for the geometry test: the stand-in really produces duplicates and cut views to merge."""
    store, gt, labels = _scene(tmp_path, 0.25, 0.5)
    detector = GroundTruthDetector(store, gt, labels)
    raw = sum(len(detector._one(i)["boxes"]) for i in range(store.n_patches))
    assert raw > 1.5 * len(gt)


def test_interrupted_run_resumes_with_only_the_missing_batches(tmp_path):
    store, gt, labels = _scene(tmp_path, 0.25, 0.5, patches_per_chunk=2)
    cfg = InferenceConfig(device="cpu", batch_size=4, num_threads=1)  # 2 chunks per batch
    out = tmp_path / "out"
    failing = GroundTruthDetector(store, gt, labels, fail_after_calls=2)
    with pytest.raises(RuntimeError, match="interruption"):
        detect_store(store.path, stand_in_model(failing, 0.5, 128), out, cfg, progress=False)
    assert not (out / "detections.parquet").exists()
    assert len(list((out / "detections.partial").glob("patches_*.npz"))) == 2
    resumed = GroundTruthDetector(store, gt, labels)
    result = detect_store(store.path, stand_in_model(resumed, 0.5, 128), out, cfg, progress=False)
    assert sorted(resumed.seen) == list(range(8, store.n_patches))  # the first 2 batches (8 patches) were kept
    assert result.patches_run == store.n_patches - 8
    _assert_each_cell_once(read_detections(result.detections_path), gt, labels)


def test_rerun_after_success_reuses_the_table_and_another_model_recomputes(tmp_path):
    store, gt, labels = _scene(tmp_path, 0.5, 0.5, n_cells=10)
    out = tmp_path / "out"
    detect_store(store.path, stand_in_model(GroundTruthDetector(store, gt, labels), 0.5, 128), out, CPU, progress=False)
    again = GroundTruthDetector(store, gt, labels)
    result = detect_store(store.path, stand_in_model(again, 0.5, 128), out, CPU, progress=False)
    assert again.calls == 0 and result.n_detections == len(gt)
    other = stand_in_model(GroundTruthDetector(store, gt[:3], labels[:3]), 0.5, 128)
    other.meta["sha256"] = "another-model"
    assert detect_store(store.path, other, out, CPU, progress=False).n_detections == 3


def test_incomplete_store_is_refused(tmp_path):
    store, gt, labels = _scene(tmp_path, 0.5, 0.5, n_cells=5, complete=False, size=(400, 300))
    with pytest.raises(ArtifactError, match="incomplete"):
        detect_store(store.path, stand_in_model(GroundTruthDetector(store, gt, labels), 0.5, 128), tmp_path / "o", CPU)
    assert not (tmp_path / "o" / "detections.parquet").exists()


def test_missing_store_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        detect_store(tmp_path / "nothing.zarr", "model.pt", tmp_path / "o", CPU)


def test_model_and_store_resolution_mismatch_is_one_clear_error(tmp_path):
    store, gt, labels = _scene(tmp_path, 0.5, 0.5, n_cells=5, size=(400, 300))
    model = stand_in_model(GroundTruthDetector(store, gt, labels), 0.5, 128)
    model.meta.update({"target_mpp": 0.25})
    with pytest.raises(ArtifactError, match="trained at 0.25 um/px") as info:
        detect_store(store.path, model, tmp_path / "o", CPU)
    assert "\n" not in str(info.value)


def test_tiles_other_than_the_training_patch_are_accepted_and_the_training_patch_recorded(tmp_path):
    store, gt, labels = _scene(tmp_path, 0.5, 0.5, n_cells=5, size=(400, 300))
    model = stand_in_model(GroundTruthDetector(store, gt, labels), 0.5, 256)  # trained on 256 px, tiles are 128 px
    det = read_detections(detect_store(store.path, model, tmp_path / "o", CPU, progress=False).detections_path)
    assert len(det) == len(gt) and det.meta.model.patch_size == 256 and det.meta.store.patch_size == 128


def test_slide_without_cells_gives_a_complete_empty_table(tmp_path):
    """(A store with 0 patches cannot exist: tiling refuses empty glass and PatchStore.create refuses n=0.)"""
    store, _, _ = _scene(tmp_path, 0.5, 0.5, n_cells=5, size=(400, 300))
    detector = GroundTruthDetector(store, np.zeros((0, 4)), np.zeros(0, np.int64))
    result = detect_store(store.path, stand_in_model(detector, 0.5, 128), tmp_path / "o", CPU, progress=False)
    det = read_detections(result.detections_path)
    assert len(det) == 0 and det.meta.complete and det.class_scores.shape == (0, len(det.meta.taxonomy))
    assert detector.calls > 0


def test_geometry_through_the_real_tiling_of_a_slide(tmp_path):
    """Same geometry check on a store written by `tile_slide` (mask, JPEG, 0.25 -> 0.5 um/px)."""
    from wsi_pipeline.config import MaskConfig, TilingConfig
    from wsi_pipeline.io.tiffwriter import wrap_image_as_slide
    from wsi_pipeline.store.patches import PatchStore
    from wsi_pipeline.tiling import tile_slide

    rng = np.random.default_rng(3)
    width, height = 1600, 1100
    gt, labels = random_cells(rng, width, height, 25, 40, 62)
    gt = np.round(gt)  # drawn on whole pixels
    image = noise_slide(rng, width, height)
    image[:, 1200:] = np.minimum(image[:, 1200:], 250)  # some glass to mask out on the right
    for x0, y0, x1, y1 in gt.astype(int):
        image[y0:y1, x0:x1] = rng.integers(40, 90, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    slide = wrap_image_as_slide(image, tmp_path / "cells.svs", mpp=0.25)
    tiling = TilingConfig(target_mpp=0.5, patch_size=128, overlap=32, patches_per_chunk=4, scheduler="threads",
                          workers=1, mask=MaskConfig(min_object_um2=10.0))
    tile_slide(slide, tmp_path, tiling, progress=False)
    store = PatchStore.open(tmp_path / "patches.zarr")
    assert store.scale == pytest.approx(2.0)
    detector = GroundTruthDetector(store, gt, labels)
    result = detect_store(store.path, stand_in_model(detector, 0.5, 128), tmp_path / "out", CPU, progress=False)
    det = read_detections(result.detections_path)
    _assert_each_cell_once(det, gt, labels)
    # tile_slide records the tiling time in the store; detect_store carries it into the detections (tiling_s)
    assert store.tiling_seconds is not None and det.meta.store.seconds == store.tiling_seconds > 0
