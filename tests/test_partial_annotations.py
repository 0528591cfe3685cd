"""Annotations that cover only some classes: the other classes are not taught as background there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wsi_pipeline.cli.main import main
from wsi_pipeline.errors import ArtifactError
from wsi_pipeline.models.data import CocoPatchDataset, collate
from wsi_pipeline.models.heads import IGNORED_LOGIT, gather_classification_targets
from wsi_pipeline.models.losses import LOSSES, build_loss

ROOT = Path(__file__).parents[1]
CRIC = ROOT.parent / "shared" / "data" / "cytology" / "cric"


def one_image(raw: torch.Tensor, annotated: torch.Tensor | None):
    """4 anchors x 3 classes; anchor 0 lies on a box of class 1, the others are background."""
    target = {"labels": torch.tensor([1])}
    if annotated is not None:
        target["annotated"] = annotated
    return gather_classification_targets(raw[None], [target], [torch.tensor([0, -1, -1, -1])], None)


def test_unannotated_classes_are_ignored_on_background_only():
    raw = torch.randn(4, 3)
    logits, onehot, num_fg = one_image(raw, torch.tensor([True, True, False]))
    assert num_fg == 1 and onehot[0].tolist() == [0.0, 1.0, 0.0]
    assert (logits[1:, 2] == IGNORED_LOGIT).all()  # class 2 is not annotated: unknown on background
    assert logits[0, 2] == raw[0, 2]  # but the annotated cell on anchor 0 is known not to be class 2
    assert torch.equal(logits[:, :2], raw[:, :2])
    full, _, _ = one_image(raw, None)
    assert torch.equal(full, raw)  # a dataset annotating every class is untouched


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_ignores_the_ignored_elements(name):
    """Whatever the network says about an ignored element changes neither the loss nor a gradient."""
    annotated = torch.tensor([True, True, False])
    values, grads = [], []
    for scale in (1.0, 30.0):
        raw = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
        raw[1:, 2] *= scale  # only the ignored elements differ between the two passes
        raw.requires_grad_(True)
        logits, onehot, num_fg = one_image(raw, annotated)
        loss = build_loss(name, 3)(logits, onehot, avg_factor=num_fg)
        loss.backward()
        values.append(float(loss.detach()))
        grads.append(raw.grad.clone())
    assert values[0] == pytest.approx(values[1], abs=1e-6)
    assert torch.equal(grads[0][1:, 2], torch.zeros(3)) and torch.allclose(grads[0], grads[1], atol=1e-6)


def test_dataset_marks_its_annotated_classes(make_dataset, tmp_path):
    data = make_dataset(tmp_path / "d", n_images=2)
    assert "annotated" not in CocoPatchDataset(data)[0][1]
    coco = json.loads((data / "annotations.json").read_text())
    coco["info"]["annotated_classes"] = ["NILM", "HSIL"]
    (data / "annotations.json").write_text(json.dumps(coco))
    ds = CocoPatchDataset(data)
    mask = ds[0][1]["annotated"]
    assert mask.dtype == torch.bool and mask.sum() == 2 and mask[0] and mask[6]
    _, targets = collate([ds[0], ds[1]])
    assert all(torch.equal(t["annotated"], mask) for t in targets)
    coco["info"]["annotated_classes"] = ["NILM", "nonsense"]
    (data / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(ArtifactError, match="annotated_classes"):
        CocoPatchDataset(data)


def test_partially_annotated_set_trains(make_dataset, tmp_path):
    data = make_dataset(tmp_path / "d", n_images=3)
    coco = json.loads((data / "annotations.json").read_text())
    coco["info"]["annotated_classes"] = ["NILM", "HSIL"]
    (data / "annotations.json").write_text(json.dumps(coco))
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "target_mpp: 1.0\npatch_size: 64\ndevice: cpu\nmodel: {detector: retinanet, fpn_channels: 32}\n"
        "augment: {enabled: false}\nschedule: {epochs: 1, batch_size: 3, optimizer: adamw, lr: 0.001, warmup_iters: 1}\n")
    assert main(["train", str(config), "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "model.pt").is_file()


@pytest.mark.skipif(not CRIC.is_dir(), reason="needs ../shared/data/cytology/cric")
def test_data_build_writes_annotated_classes(tmp_path, capsys):
    field = sorted(CRIC.glob("*.webp"))[0]
    args = ["data", "build", "--out", str(tmp_path / "set"), "--slide", str(field), "--annotations",
            str(field.with_suffix(".geojson")), "--mpp", "0.3", "--target-mpp", "0.5", "--no-progress"]
    assert main([*args, "--annotated-classes", "NILM,ASC-US,LSIL,ASC-H,HSIL,SCC"]) == 0
    info = json.loads((tmp_path / "set" / "annotations.json").read_text())["info"]
    assert info["annotated_classes"] == ["NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"]
    capsys.readouterr()
    assert main([*args[:2], "--out", str(tmp_path / "bad"), *args[4:], "--annotated-classes", "NILM,KOILO"]) == 2
    err = capsys.readouterr().err
    assert "KOILO" in err and len(err.strip().splitlines()) == 1
