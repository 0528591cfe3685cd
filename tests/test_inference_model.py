"""A real (tiny, briefly trained) RetinaNet through detect_store from a checkpoint file, on CPU and on CUDA."""

import cv2
import numpy as np
import pytest
import torch

from wsi_pipeline.config import InferenceConfig
from wsi_pipeline.errors import ArtifactError
from wsi_pipeline.inference import detect_store
from wsi_pipeline.models.checkpoint import file_sha256, save_checkpoint
from wsi_pipeline.models.detector import DetectorSpec, build_detector
from wsi_pipeline.models.losses import build_loss
from wsi_pipeline.store.detections import read_detections

from inference_helpers import TAXONOMY, make_store

PATCH = 64
MPP = 0.5


def _draw_cells(rng, height, width, n):
    """Glass with dark round 'nuclei'; returns the image and their boxes (xyxy)."""
    image = np.full((height, width, 3), 235, np.uint8)
    image += rng.integers(0, 15, image.shape, dtype=np.uint8)
    boxes = []
    for _ in range(n):
        r = int(rng.integers(5, 9))
        cx, cy = int(rng.integers(r, width - r)), int(rng.integers(r, height - r))
        cv2.circle(image, (cx, cy), r, (70, 40, 120), -1)
        boxes.append([cx - r, cy - r, cx + r, cy + r])
    return image, np.array(boxes, np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 10-class RetinaNet-ResNet18 with a thin FPN, trained for 4 steps on drawn cells (plumbing, not accuracy)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spec = DetectorSpec(num_classes=len(TAXONOMY), fpn_channels=32, image_size=PATCH, detections_per_img=50)
    detector = build_detector(spec, build_loss("focal", len(TAXONOMY)))
    optimiser = torch.optim.SGD(detector.parameters(), lr=0.01, momentum=0.9)
    detector.train()
    for _ in range(4):
        images, targets = [], []
        for _ in range(2):
            image, boxes = _draw_cells(rng, PATCH, PATCH, 3)
            images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255)
            targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.zeros(len(boxes), dtype=torch.int64)})
        loss = sum(detector(images, targets).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, detector, class_names=TAXONOMY, target_mpp=MPP, patch_size=PATCH, loss_name="focal",
                    loss_params={})
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    image, _ = _draw_cells(np.random.default_rng(1), 300, 260, 25)
    return make_store(tmp_path_factory.mktemp("store") / "patches.zarr", image, MPP, MPP, PATCH, 16,
                      patches_per_chunk=4, codec="jpeg")


def _check_table(path, store, checkpoint, device):
    det = read_detections(path)
    assert len(det) > 0
    assert det.meta.model.sha256 == file_sha256(checkpoint)
    assert det.meta.model.path == str(checkpoint) and det.meta.inference.device == device
    assert det.meta.store.fingerprint == store.fingerprint
    slide_w, slide_h = 260 + PATCH, 300 + PATCH  # the last patches may stick out of the slide by < 1 patch
    assert (det.boxes[:, 0] >= 0).all() and (det.boxes[:, 2] <= slide_w).all() and (det.boxes[:, 3] <= slide_h).all()
    assert ((det.boxes[:, 2:] - det.boxes[:, :2]) > 0).all()
    assert set(det.patch_index.tolist()) <= set(range(store.n_patches))
    # the table's score is the class score of its class, and its class name matches
    np.testing.assert_allclose(det.class_scores[np.arange(len(det)), det.labels], det.scores, rtol=1e-5)
    assert det.class_names == [TAXONOMY[i] for i in det.labels]
    return det


def test_trained_model_from_checkpoint_runs_end_to_end_on_cpu(tmp_path, checkpoint, store):
    cfg = InferenceConfig(device="cpu", batch_size=8, score_threshold=0.001, num_threads=1)
    result = detect_store(store.path, checkpoint, tmp_path, cfg, progress=False)
    det = _check_table(result.detections_path, store, checkpoint, "cpu")
    assert result.n_detections == len(det) and result.precision == "fp32" and result.patches_run == store.n_patches
    assert 0 <= result.data_wait_fraction <= 1


def test_wrong_checkpoint_file_is_one_clear_error(tmp_path, store):
    bogus = tmp_path / "model.pt"
    bogus.write_text("this is not a model")
    with pytest.raises(ArtifactError, match="wsi_pipeline checkpoint") as info:
        detect_store(store.path, bogus, tmp_path, InferenceConfig(device="cpu"), progress=False)
    assert "\n" not in str(info.value) and not (tmp_path / "detections.parquet").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mixed_precision_matches_cpu(tmp_path, checkpoint, store):
    cpu = detect_store(store.path, checkpoint, tmp_path / "cpu",
                       InferenceConfig(device="cpu", batch_size=8, score_threshold=0.001), progress=False)
    gpu32 = detect_store(store.path, checkpoint, tmp_path / "fp32",
                         InferenceConfig(device="cuda", precision="fp32", score_threshold=0.001), progress=False)
    mixed = detect_store(store.path, checkpoint, tmp_path / "mixed",
                         InferenceConfig(device="cuda", score_threshold=0.001), progress=False)
    assert mixed.precision in ("bf16", "fp16") and mixed.batch_size >= 1
    ref = _check_table(cpu.detections_path, store, checkpoint, "cpu")
    same = _check_table(gpu32.detections_path, store, checkpoint, "cuda")
    _check_table(mixed.detections_path, store, checkpoint, "cuda")
    top = np.argsort(-ref.scores)[:5]
    top_gpu = np.argsort(-same.scores)[:5]
    np.testing.assert_allclose(ref.boxes[top], same.boxes[top_gpu], atol=1.0)


def test_cli_detect_writes_the_table_and_reports_bad_input_in_one_line(tmp_path, checkpoint, store, capsys):
    from wsi_pipeline.cli.main import main

    out = tmp_path / "out"
    assert main(["detect", str(store.path), "--model", str(checkpoint), "--out", str(out), "--device", "cpu",
                 "--batch-size", "4", "--score-threshold", "0.001", "--no-progress"]) == 0
    assert read_detections(out / "detections.parquet").meta.complete
    assert main(["detect", str(tmp_path / "missing.zarr"), "--model", str(checkpoint), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "missing.zarr" in err[-1] and "patch store not found" in err[-1]
