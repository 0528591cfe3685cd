"""Inference tiles independent of the training patch, per-tile limits, and the onnxruntime backend (issue 23)."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from wsi_pipeline.config import InferenceConfig
from wsi_pipeline.inference import detect_store, runtime
from wsi_pipeline.models.bundled import starter_model_path
from wsi_pipeline.models.checkpoint import export_checkpoint, file_sha256, load_checkpoint
from wsi_pipeline.models.detector import DetectorSpec, build_detector
from wsi_pipeline.models.losses import build_loss
from wsi_pipeline.store.detections import read_detections

from inference_helpers import GroundTruthDetector, make_store, noise_slide, random_cells, stand_in_model

CPU = InferenceConfig(device="cpu", batch_size=4, num_threads=1, backend="torch")
FIELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "cytology" / "lbc_field.jpg"


def _detect(tmp_path, name, image, gt, labels, tile, overlap, training_patch=128, slide_mpp=0.25):
    store = make_store(tmp_path / f"{name}.zarr", image, slide_mpp, 0.5, tile, overlap)
    detector = GroundTruthDetector(store, gt, labels)
    result = detect_store(store.path, stand_in_model(detector, 0.5, training_patch), tmp_path / name, CPU, progress=False)
    return store, read_detections(result.detections_path)


@pytest.mark.parametrize("tile", [320, 512])
def test_tiles_larger_than_the_training_patch_give_the_same_cells_as_training_patch_tiles(tmp_path, tile):
    """The same synthetic slide cut at the training patch (128 px) and at bigger tiles: every cell once,
    with its whole box, in both runs, including cells cut by tile borders."""
    rng = np.random.default_rng(7)
    width, height, overlap = 2400, 1700, 32  # level-0 px at 0.25 um/px; tiles at 0.5 um/px
    gt, labels = random_cells(rng, width, height, 90, 8, overlap * 2)
    image = noise_slide(rng, width, height)
    small_store, small = _detect(tmp_path, "p128", image, gt, labels, 128, overlap)
    big_store, big = _detect(tmp_path, f"p{tile}", image, gt, labels, tile, overlap)
    assert big_store.n_patches < small_store.n_patches
    # some cells really are cut by a border of the big tiles
    step0 = (tile - overlap) * 2
    cut = [(x0 // step0 != (x1 - 1) // step0) or (y0 // step0 != (y1 - 1) // step0) for x0, y0, x1, y1 in gt]
    assert sum(cut) >= 3
    for det in (small, big):
        assert len(det) == len(gt)
        match = box_iou(torch.from_numpy(gt).float(), torch.from_numpy(det.boxes).float()).numpy().argmax(axis=1)
        assert len(set(match.tolist())) == len(gt)
        np.testing.assert_array_equal(det.labels[match], labels)
        assert np.abs(det.boxes[match] - gt).max() <= 1.0
    assert big.meta.model.patch_size == 128 and big.meta.store.patch_size == tile


def _crowded_fcos(image_size=64, limit=50):
    spec = DetectorSpec(num_classes=3, detector="fcos", fpn_channels=32, image_size=image_size,
                        topk_candidates=2 * limit, detections_per_img=limit)
    return build_detector(spec, build_loss("focal", 3)).eval()


def _every_p3_location_a_cell(detector, tile):
    """A stand-in network: a confident, 4 px wide, separate box at every stride-8 location (P3), nothing elsewhere."""
    sizes = detector.level_sizes(tile, tile)
    n_p3, n_all = sizes[0][0] * sizes[0][1], sum(h * w for h, w in sizes)

    def network(images):
        b = len(images)
        logits = torch.full((b, n_all, 3), -10.0)
        logits[:, :n_p3, 1] = 5.0
        return {"cls_logits": logits, "bbox_regression": torch.full((b, n_all, 4), 0.25),
                "bbox_ctrness": torch.full((b, n_all, 1), 5.0)}

    return network, n_p3


def test_a_crowded_tile_with_more_cells_than_the_old_per_image_limit_drops_none():
    detector = _crowded_fcos(image_size=64, limit=100)  # training patch 64 px: at most 100 cells per patch
    network, n_cells = _every_p3_location_a_cell(detector, 256)
    assert n_cells == 1024 > 100  # a 256 px tile, 16x the training patch's area, 10x its per-image limit in cells
    out = detector.predict(torch.full((1, 256, 256, 3), 200, dtype=torch.uint8), network=network)[0]
    assert len(out["boxes"]) == n_cells and (out["labels"] == 1).all()
    assert len(set(map(tuple, out["boxes"].tolist()))) == n_cells  # each cell its own box
    assert detector.tile_limits(256, 256) == (3200, 1600) and detector.tile_limits(64, 64) == (200, 100)
    assert detector.tile_limits(32, 32) == (200, 100)  # never below the spec's own limits


@pytest.fixture(scope="module")
def starter_copy(tmp_path_factory):
    """The bundled starter model copied to a writable folder (its export is written next to it)."""
    folder = tmp_path_factory.mktemp("starter")
    return Path(shutil.copy(starter_model_path(), folder / "starter.pt"))


def _field_tiles(n, size):
    import cv2

    if not FIELD.is_file():
        pytest.skip(f"real field not found at {FIELD}")
    field = cv2.cvtColor(cv2.imread(str(FIELD)), cv2.COLOR_BGR2RGB)
    field = cv2.resize(field, None, fx=0.54, fy=0.54, interpolation=cv2.INTER_AREA)  # ~0.27 -> 0.5 um/px
    rng = np.random.default_rng(0)
    ys = rng.integers(0, field.shape[0] - size, n)
    xs = rng.integers(0, field.shape[1] - size, n)
    return torch.from_numpy(np.stack([field[y:y + size, x:x + size] for x, y in zip(xs, ys)]))


def test_exported_model_equals_torch_on_real_tiles(starter_copy):
    loaded = load_checkpoint(starter_copy)
    detector, sha = loaded.detector, loaded.meta["sha256"]
    network = runtime.onnx_network(detector, starter_copy, sha, num_threads=2)
    assert network is not None and network.path == starter_copy.parent / f"starter.{sha}.onnx"
    for size in (256, 640):  # the training patch and a bigger tile (one export serves every size)
        tiles = _field_tiles(2, size)
        with torch.inference_mode():
            # a low score floor: these background-heavy tiles hold few confident cells for the bundled model
            ref, got = detector.predict(tiles, score_threshold=0.01), detector.predict(tiles, score_threshold=0.01, network=network)
        for a, b in zip(ref, got):
            assert len(a["boxes"]) > 20
            # the same cells: each of torch's 10 best boxes has an ONNX box of its class, scores within 1e-3
            confident = a["scores"] >= a["scores"].sort(descending=True).values[9]
            assert confident.sum() >= 10
            iou = box_iou(a["boxes"][confident], b["boxes"])
            best, where = iou.max(dim=1)
            assert (best > 0.99).all()
            assert (a["labels"][confident] == b["labels"][where]).all()
            assert (a["scores"][confident] - b["scores"][where]).abs().max() <= 1e-3
        assert runtime.max_difference(network, detector, detector.normalise(tiles.permute(0, 3, 1, 2) / 255.0)) <= 1e-3


def test_stale_or_damaged_export_is_rebuilt_never_used(starter_copy, tmp_path, caplog):
    checkpoint = Path(shutil.copy(starter_copy, tmp_path / "model.pt"))
    first = runtime.onnx_network(load_checkpoint(checkpoint).detector, checkpoint, file_sha256(checkpoint), 1)
    old_export = first.path
    # the checkpoint changes (here: re-saved in fp16): a new sha256, so the old export is never looked at
    export_checkpoint(checkpoint, checkpoint, half=True)
    new_sha = file_sha256(checkpoint)
    new_path = tmp_path / f"model.{new_sha}.onnx"
    # a file already at the new name that belongs to another checkpoint (copied, renamed): stale, rebuilt
    shutil.copy(old_export, new_path)
    with caplog.at_level(logging.INFO, logger="wsi_pipeline.inference.runtime"):
        second = runtime.onnx_network(load_checkpoint(checkpoint).detector, checkpoint, new_sha, 1)
    assert second.path == new_path and any("Exporting" in r.message for r in caplog.records)
    assert runtime._read_export(new_path, new_sha) is not None and runtime._read_export(new_path, "other") is None
    new_path.write_bytes(b"not an onnx file")  # damaged: rebuilt too
    assert runtime._read_export(new_path, new_sha) is None
    assert runtime.onnx_network(load_checkpoint(checkpoint).detector, checkpoint, new_sha, 1) is not None
    assert runtime._read_export(new_path, new_sha) is not None


def test_export_goes_to_the_user_cache_when_the_checkpoint_folder_cannot_take_it(starter_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("WSI_PIPELINE_CACHE", str(tmp_path / "cache"))
    checkpoint = Path(shutil.copy(starter_copy, tmp_path / "m.pt"))
    sha = file_sha256(checkpoint)
    (tmp_path / f"m.{sha}.onnx").mkdir()  # the export's place next to the checkpoint cannot be written
    network = runtime.onnx_network(load_checkpoint(checkpoint).detector, checkpoint, sha, 1)
    assert network is not None and network.path == tmp_path / "cache" / "onnx" / f"m.{sha}.onnx"
    # the bundled model's folder (inside the package) is never written to
    assert runtime.export_paths(starter_model_path(), "abc") == [tmp_path / "cache" / "onnx" / "starter_fcos_lite0.abc.onnx"]


def test_missing_runtime_falls_back_to_torch_with_one_log_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(runtime, "runtime_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="wsi_pipeline.inference.runtime"):
        assert runtime.resolve_backend("onnxruntime", "cpu") == "torch"
    assert len(caplog.records) == 1 and "onnxruntime is not installed" in caplog.records[0].message
    assert runtime.resolve_backend("onnxruntime", "cuda") == "torch"  # GPUs keep torch + AMP
    # through detect_store: the table says which backend ran
    rng = np.random.default_rng(0)
    gt, labels = random_cells(rng, 400, 300, 5, 8, 30)
    store = make_store(tmp_path / "p.zarr", noise_slide(rng, 400, 300), 0.5, 0.5, 128, 32)
    cfg = InferenceConfig(device="cpu", batch_size=4, num_threads=1, backend="onnxruntime")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = detect_store(store.path, stand_in_model(GroundTruthDetector(store, gt, labels), 0.5, 128),
                              tmp_path / "o", cfg, progress=False)
    assert read_detections(result.detections_path).meta.inference.backend == "torch"
    assert len([r for r in caplog.records if "onnxruntime" in r.message]) == 1
