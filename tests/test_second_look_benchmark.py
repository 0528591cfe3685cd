"""benchmarks/second_look.py: windows, proposal labels, re-scoring a slide's detections, training.

The second look is not a pipeline stage (it failed the validation rule, docs/model_card.md); these tests
keep the benchmark that measured it correct."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchmark_helpers import load_benchmark
from inference_helpers import make_store
from wsi_pipeline.errors import ArtifactError
from wsi_pipeline.models.checkpoint import save_checkpoint
from wsi_pipeline.models.detector import DetectorSpec, build_detector
from wsi_pipeline.models.losses import build_loss
from wsi_pipeline.store.detections import Detections
from wsi_pipeline.taxonomy import load_taxonomy

TAX = load_taxonomy().names
sl = load_benchmark("second_look")


def test_windows_are_centred_and_mirrored_at_the_border():
    image = np.arange(20 * 20 * 3, dtype=np.uint8).reshape(20, 20, 3)
    inside = sl.cut_windows(image, np.array([[10.0, 10.0]]), 8)[0]
    assert np.array_equal(inside, image[6:14, 6:14])
    corner = sl.cut_windows(image, np.array([[0.0, 0.0]]), 8)[0]
    assert np.array_equal(corner[4:, 4:], image[:4, :4])  # the image's corner sits at the centre
    assert np.array_equal(corner[3, 4:], image[1, :4])  # mirrored without repeating the edge row


def test_proposals_take_the_class_of_the_box_holding_their_centre():
    truth = np.array([[0, 0, 20, 20], [100, 100, 140, 140]], np.float32)
    proposals = np.array([
        [2, 2, 22, 22],  # on box 0
        [100, 100, 110, 110],  # centre inside box 1 but IoU 0.0625: background
        [95, 95, 135, 135],  # on box 1
        [30, 30, 40, 40],  # nowhere
    ], np.float32)
    assert sl.label_proposals(proposals, truth, np.array([4, 7])).tolist() == [4, -1, 7, -1]
    assert sl.label_proposals(proposals, truth[:0], np.zeros(0, np.int64)).tolist() == [-1] * 4


def test_combined_score_is_the_geometric_mean_and_stays_in_range():
    det = np.array([[0.64, 0.0, 1.0]], np.float32)
    cls = np.array([[0.25, 0.9, 1.2]], np.float32)
    np.testing.assert_allclose(sl.combine_scores(det, cls), [[0.4, 0.0, 1.0]], atol=1e-6)


def test_saved_classifier_loads_and_gives_the_same_scores(tmp_path):
    torch.manual_seed(0)
    model = sl.CropClassifier(3, weights="")
    meta = sl.SecondLookMeta(class_names=["ASC-US", "HSIL", "SCC"], target_mpp=0.5, window_px=32, loss="efl")
    path = sl.save_second_look(tmp_path / "sl.pt", model, meta)
    loaded, loaded_meta = sl.load_second_look(path)
    windows = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    assert loaded_meta == meta
    np.testing.assert_allclose(sl.classify_windows(loaded, windows), sl.classify_windows(model.eval(), windows), atol=2e-3)


def test_missing_or_foreign_second_look_file_is_a_one_line_error(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        sl.load_second_look(tmp_path / "none.pt")
    torch.save({"model": {}}, tmp_path / "detector.pt")
    with pytest.raises(ArtifactError, match="not a second-look model"):
        sl.load_second_look(tmp_path / "detector.pt")


class DarknessClassifier(nn.Module):
    """Stand-in: every class's logit is how dark the window's centre is (dark spot -> high score)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(1, num_classes)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        h, w = windows.shape[1:3]
        centre = windows[:, h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2].float().mean(dim=(1, 2, 3))
        return ((128 - centre) / 16).unsqueeze(1).expand(-1, self.fc.out_features)


def test_review_rescores_the_top_n_from_their_own_patches(tmp_path):
    image = np.full((200, 200, 3), 230, np.uint8)
    image[48:56, 48:56] = 20  # a dark cell at (52, 52) level-0
    image[148:156, 148:156] = 225  # a pale one at (152, 152)
    store = make_store(tmp_path / "patches.zarr", image, slide_mpp=0.25, target_mpp=0.5, patch_size=64, overlap=8)
    hsil, nilm = TAX.index("HSIL"), TAX.index("NILM")
    boxes = np.array([[40, 40, 64, 64], [140, 140, 164, 164], [0, 180, 10, 190]], np.float32)
    patch_of = [int(np.nonzero((store.coords[:, 0] <= b[0]) & (store.coords[:, 1] <= b[1])
                               & (store.coords[:, 0] + 128 >= b[2]) & (store.coords[:, 1] + 128 >= b[3]))[0][0])
                for b in boxes]
    class_scores = np.zeros((3, len(TAX)), np.float32)
    class_scores[:, hsil] = [0.49, 0.81, 0.30]
    class_scores[:, nilm] = 0.2
    det = Detections(boxes=boxes, scores=class_scores.max(1), labels=class_scores.argmax(1).astype(np.int16),
                     patch_index=np.array(patch_of, np.int32), class_scores=class_scores)

    windows = sl.windows_for(det, np.array([0, 1]), store, 16)
    assert windows[0, 6:10, 6:10].max() < 60 and windows[1, 6:10, 6:10].min() > 200  # centred on each cell

    meta = sl.SecondLookMeta(class_names=["HSIL", "SCC"], target_mpp=0.5, window_px=16, loss="efl")
    out = sl.review_detections(det, TAX, store, DarknessClassifier(2), meta, top_n=2)
    assert out.class_scores[0, hsil] > 0.49 > out.class_scores[1, hsil]  # the dark cell overtakes the pale one
    np.testing.assert_allclose(out.class_scores[0, hsil], np.sqrt(0.49 * torch.sigmoid(torch.tensor(
        (128 - windows[0, 6:10, 6:10].astype(np.float32).mean()) / 16)).item()), rtol=1e-4)
    assert out.class_scores[2, hsil] == 0.0  # not reviewed: not counted as abnormal
    assert (out.class_scores[:, nilm] == 0.2).all()  # classes the classifier does not score are kept
    assert out.labels[0] == hsil and out.labels[2] == nilm
    assert det.class_scores[0, hsil] == pytest.approx(0.49)  # the input table is not changed


def test_collect_samples_and_train_a_classifier(make_dataset, tmp_path):
    data = make_dataset(tmp_path / "data", n_images=4)
    spec = DetectorSpec(num_classes=len(TAX), fpn_channels=16, image_size=64, detections_per_img=20)
    detector_path = save_checkpoint(tmp_path / "det.pt", build_detector(spec, build_loss("focal", len(TAX))),
                                    class_names=TAX, target_mpp=1.0, patch_size=64, loss_name="focal", loss_params={})
    samples = sl.collect_samples(data, detector_path, proposals_per_image=3, include_truth=True, min_score=0.0)
    assert samples.class_names == ["NILM", "HSIL"]  # the classes the dataset has boxes of
    truth = np.isnan(samples.proposal_scores)
    assert truth.sum() == 8 and (samples.labels[truth] >= 0).all()  # one window per disc, with its class
    assert (~truth).sum() == 12  # 3 proposals on each of 4 images
    out = sl.train_classifier(samples, 1.0, tmp_path / "sl.pt", window_px=32, epochs=1, batch_size=4, workers=0)
    model, meta = sl.load_second_look(out)
    assert meta.class_names == ["NILM", "HSIL"] and meta.window_px == 32 and meta.target_mpp == 1.0
    assert sl.classify_windows(model, np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 2)


