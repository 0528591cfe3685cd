"""`wsi data negatives`: hard-negative patches of a model's top abnormal calls on a slide signed out NILM."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from report_helpers import TAX, make_detections

from wsi_pipeline.cli.main import main
from wsi_pipeline.datasets.negatives import mine_negatives, slide_folders
from wsi_pipeline.errors import ArtifactError, ConfigError
from wsi_pipeline.models.data import CocoPatchDataset

# (class, score, centre x, centre y, side) in level-0 px of a 1200 x 900 image at 0.5 um/px
CALLS = [
    ("AGC", 0.60, 300, 300, 40),  # the top call; a dark disc is drawn under it
    ("HSIL", 0.55, 330, 320, 40),  # within half a patch of the top call: no second patch there
    ("NILM", 0.95, 800, 600, 60),  # a confident normal cell: no abnormal score, never a negative
    ("LSIL", 0.30, 1190, 10, 30),  # at the image's corner: the patch shifts inside
]


def finished_run(tmp_path: Path, calls=CALLS) -> Path:
    """A `wsi-run` slide folder as `wsi data negatives` reads it: report.json + detections.parquet."""
    image = np.full((900, 1200, 3), 235, np.uint8)
    cv2.circle(image, (300, 300), 14, (40, 30, 90), -1)
    slide = tmp_path / "nilm_slide.png"
    cv2.imwrite(str(slide), image)
    folder = tmp_path / "results" / "nilm_slide"
    folder.mkdir(parents=True)
    info = {"name": "nilm_slide", "path": str(slide), "mpp": [0.5, 0.5], "width": 1200, "height": 900}
    make_detections(folder / "detections.parquet", calls, info)
    (folder / "report.json").write_text(json.dumps({"slide": info, "model": {"target_mpp": 1.0, "patch_size": 64}}))
    return folder


def test_top_calls_become_box_free_patches_annotated_for_abnormal_classes(tmp_path, capsys):
    folder = finished_run(tmp_path)
    out = tmp_path / "negatives"
    assert main(["data", "negatives", str(folder.parent), "--out", str(out), "--top", "5", "--no-progress"]) == 0
    assert "2 patches" in capsys.readouterr().out
    coco = json.loads((out / "annotations.json").read_text())
    images = coco["images"]
    assert [(im["negative_for"], im["score"]) for im in images] == [("AGC", 0.6), ("LSIL", 0.3)]
    assert (images[0]["x"], images[0]["y"], images[0]["level0_size"]) == (236, 236, 128)  # centred on the call
    assert (images[1]["x"], images[1]["y"]) == (1072, 0)  # clipped inside the 1200 x 900 image
    assert coco["annotations"] == [] and coco["info"]["annotated_classes"] == TAX.abnormal_names()
    assert (coco["info"]["target_mpp"], coco["info"]["patch_size"]) == (1.0, 64)  # the model's, from the report

    patch = cv2.imread(str(out / "images" / images[0]["file_name"]))
    assert patch.shape == (64, 64, 3) and patch[32, 32].mean() < 120 < patch[2, 2].mean()  # the disc at the centre

    dataset = CocoPatchDataset(out)
    _, target = dataset[0]
    assert len(target["boxes"]) == 0
    assert target["annotated"].tolist() == [c.abnormal for c in TAX.classes]  # normal classes and organisms ignored


def test_top_and_min_score_limit_the_patches(tmp_path):
    folder = finished_run(tmp_path)
    assert mine_negatives([folder], tmp_path / "one", top=1, progress=False).n_images == 1
    assert mine_negatives([folder], tmp_path / "high", min_score=0.4, progress=False).n_images == 1
    with pytest.raises(ArtifactError, match="no detection to cut a negative from"):
        mine_negatives([folder], tmp_path / "none", min_score=0.9, progress=False)
    assert not (tmp_path / "none" / "annotations.json").exists()  # nothing looks complete
    with pytest.raises(ConfigError, match="top must be >= 1"):
        mine_negatives([folder], tmp_path / "zero", top=0, progress=False)


def test_missing_results_and_moved_slides_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(ArtifactError, match="folder not found"):
        slide_folders([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no finished slide folder"):
        slide_folders([tmp_path / "empty"])
    folder = finished_run(tmp_path)
    report = json.loads((folder / "report.json").read_text())
    (folder / "report.json").write_text(json.dumps({"model": report["model"]}))
    with pytest.raises(ArtifactError, match="no slide path or mpp recorded"):
        mine_negatives([folder], tmp_path / "neg", progress=False)
    (folder / "report.json").write_text(json.dumps(report))
    (tmp_path / "nilm_slide.png").unlink()
    assert main(["data", "negatives", str(folder), "--out", str(tmp_path / "neg"), "--no-progress"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nilm_slide.png" in err[0] and "not found" in err[0]


def test_negatives_train_in_one_batch_with_a_fully_annotated_set(make_dataset, tmp_path):
    data = make_dataset(tmp_path / "annotated", n_images=3)
    negatives = tmp_path / "negatives"
    mine_negatives([finished_run(tmp_path)], negatives, progress=False)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "target_mpp: 1.0\npatch_size: 64\ndevice: cpu\nmodel: {detector: retinanet, fpn_channels: 32}\n"
        "augment: {enabled: false}\nschedule: {epochs: 1, batch_size: 5, optimizer: adamw, lr: 0.001, warmup_iters: 1}\n")
    run = tmp_path / "run"
    assert main(["train", str(config), "--data", str(data), "--data", str(negatives), "--out", str(run), "--no-progress"]) == 0
    assert (run / "model.pt").is_file()


def test_an_output_folder_holding_another_dataset_is_refused(make_dataset, tmp_path):
    lab = make_dataset(tmp_path / "lab", n_images=2)  # a `wsi data build`-style set
    before = sorted((lab / "images").iterdir())
    with pytest.raises(ArtifactError, match="holds another dataset"):
        mine_negatives([finished_run(tmp_path)], lab, progress=False)
    assert sorted((lab / "images").iterdir()) == before and (lab / "annotations.json").is_file()
    out = tmp_path / "negatives"
    first = mine_negatives([tmp_path / "results"], out, progress=False)
    again = mine_negatives([tmp_path / "results"], out, top=1, progress=False)  # a rerun replaces its own set
    assert (first.n_images, again.n_images) == (2, 1) and len(list((out / "images").iterdir())) == 1
