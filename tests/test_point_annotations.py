"""Point annotations (QuPath point GeoJSON, point CSV), the box rule, the committed field split, crop
mosaics and hard negatives mined on annotated fields (the real-cells issue)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsi_pipeline.cli.main import main
from wsi_pipeline.datasets.annotations import Annotation, expand_points, field_id, load_annotations
from wsi_pipeline.datasets.crop_mosaic import _turn, _turn_point, build_crop_mosaics, read_crop_index
from wsi_pipeline.datasets.negatives import mine_annotated_negatives
from wsi_pipeline.datasets.slides import extract_dataset, point_csv_pairs, read_mpp_table
from wsi_pipeline.datasets.split import draw_split, read_split, split_from_point_csvs
from wsi_pipeline.errors import ArtifactError
from wsi_pipeline.taxonomy import load_taxonomy

TAX = load_taxonomy()
ROOT = Path(__file__).resolve().parent.parent
SPLIT = ROOT / "configs" / "splits" / "cric.csv"
CRIC_CLASSES = ["NILM", "ASC-US", "LSIL", "ASC-H", "AGC", "HSIL", "SCC"]


def _field(folder: Path, name: str, size=(400, 300)) -> Path:
    img = np.full((size[1], size[0], 3), 230, np.uint8)
    path = folder / name
    cv2.imwrite(str(path), img)
    return path


def _qupath_points(path: Path, points: list[tuple[float, float, str]]) -> Path:
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
                 "properties": {"objectType": "annotation", "classification": {"name": label}}}
                for x, y, label in points]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _points_csv(path: Path, rows: list[tuple[str, float, float, str]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "cell_id", "label", "x", "y"])
        for i, (image, x, y, label) in enumerate(rows):
            w.writerow([image, i, label, x, y])
    return path


def test_qupath_points_load_as_points_and_become_boxes_of_fixed_physical_size(tmp_path):
    path = _qupath_points(tmp_path / "f.geojson", [(100, 80, "HSIL"), (200.5, 150, "Negative for intraepithelial lesion")])
    anns = load_annotations(path, TAX, {"negative for intraepithelial lesion": "NILM"}, strict=True)
    assert [a.is_point for a in anns] == [True, True]
    assert [a.class_name for a in anns] == ["HSIL", "NILM"]
    boxes = expand_points(anns, mpp=0.25, point_box_um=20.0)  # 20 um = 80 px at 0.25 um/px
    assert boxes[0].box == (60.0, 40.0, 140.0, 120.0)
    assert boxes[1].box[2] - boxes[1].box[0] == pytest.approx(80.0)
    assert expand_points([Annotation((1, 2, 30, 40), "LSIL")], 0.25, 20.0)[0].box == (1, 2, 30, 40), "boxes stay boxes"


def test_point_csv_reads_its_image_rows_and_refuses_what_it_cannot_read(tmp_path):
    path = _points_csv(tmp_path / "cells.csv", [("a.jpg", 10, 20, "HSIL"), ("b.jpg", 5, 6, "LSIL"), ("a.jpg", 30, 40, "SCC")])
    got = load_annotations(path, TAX, {}, image=tmp_path / "a.jpg")
    assert got == [Annotation((10.0, 20.0, 10.0, 20.0), "HSIL"), Annotation((30.0, 40.0, 30.0, 40.0), "SCC")]
    with pytest.raises(ArtifactError, match="no points for image c.jpg"):
        load_annotations(path, TAX, {}, image="c.jpg")
    bad = _points_csv(tmp_path / "bad.csv", [("a.jpg", 1, 2, "HSIL"), ("a.jpg", 3, 4, "koilocyte-ish")])
    with pytest.raises(ArtifactError, match="label 'koilocyte-ish'") as err:
        load_annotations(bad, TAX, {}, image="a.jpg", strict=True)
    assert "\n" not in str(err.value) and "bad.csv" in str(err.value)
    assert len(load_annotations(bad, TAX, {}, image="a.jpg")) == 1, "without strict the unknown label is skipped"
    (tmp_path / "nocols.csv").write_text("image,x\na.jpg,1\n")
    with pytest.raises(ArtifactError, match="needs the columns image, x, y and label"):
        load_annotations(tmp_path / "nocols.csv", TAX, {}, image="a.jpg")


def test_build_from_points_uses_each_images_pixel_size_and_the_box_rule(tmp_path):
    _field(tmp_path, "f1.jpg")
    _field(tmp_path, "f2.jpg")
    points = _points_csv(tmp_path / "cells.csv", [("f1.jpg", 200, 150, "HSIL"), ("f2.jpg", 200, 150, "LSIL")])
    (tmp_path / "fields.csv").write_text("image,mpp_estimate\nf1.jpg,0.25\nf2.jpg,0.5\n")
    mpp = read_mpp_table(tmp_path / "fields.csv")
    assert mpp == {"f1": 0.25, "f2": 0.5}
    out = tmp_path / "set"
    extract_dataset(point_csv_pairs(points), out, target_mpp=0.5, patch_size=64, background_ratio=10.0,
                    slide_mpp=mpp, progress=False, strict_labels=True)
    coco = json.loads((out / "annotations.json").read_text())
    assert coco["info"]["point_box_um"] == 20.0
    names = {i["id"]: i["file_name"] for i in coco["images"]}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        if w == pytest.approx(40.0) and h == pytest.approx(40.0):  # a whole box: 20 um at 0.5 um/px
            image = next(i for i in coco["images"] if i["id"] == a["image_id"])
            scale = image["level0_size"] / 64
            centre = (image["x"] + (x + w / 2) * scale, image["y"] + (y + h / 2) * scale)
            assert centre == pytest.approx((200, 150), abs=scale), names[a["image_id"]]
    whole = [a for a in coco["annotations"] if a["bbox"][2] == pytest.approx(40.0) and a["bbox"][3] == pytest.approx(40.0)]
    assert {TAX.names[a["category_id"] - 1] for a in whole} == {"HSIL", "LSIL"}


def test_a_field_listed_without_its_image_is_refused_before_anything_is_written(tmp_path, capsys):
    _field(tmp_path, "f1.jpg")
    points = _points_csv(tmp_path / "cells.csv", [("f1.jpg", 20, 20, "HSIL"), ("missing.jpg", 5, 5, "LSIL")])
    out = tmp_path / "set"
    code = main(["data", "build", "--out", str(out), "--points", str(points), "--mpp", "0.5"])
    err = capsys.readouterr().err
    assert code != 0 and "missing.jpg" in err and "cells.csv" in err and len(err.strip().splitlines()) == 1
    assert not out.exists(), "nothing written"
    # an unknown label is refused the same way, by default
    bad = _points_csv(tmp_path / "bad.csv", [("f1.jpg", 20, 20, "mystery cell")])
    assert main(["data", "build", "--out", str(out), "--points", str(bad), "--mpp", "0.5"]) != 0
    assert "mystery cell" in capsys.readouterr().err and not out.exists()


def test_draw_split_keeps_fields_whole_meets_the_minimum_and_is_reproducible():
    rng = np.random.default_rng(1)
    cells = {f"f{i}": Counter({"NILM": int(rng.integers(5, 30)), "SCC": int(i % 9 == 0) * 8}) for i in range(120)}
    sides, seed = draw_split(cells, ["NILM", "SCC"], 0.25, min_val_cells=10)
    assert set(sides) == set(cells) and set(sides.values()) == {"train", "val"}
    val_scc = sum(cells[f]["SCC"] for f, s in sides.items() if s == "val")
    total_scc = sum(c["SCC"] for c in cells.values())
    assert 10 <= val_scc <= total_scc / 2
    assert draw_split(cells, ["NILM", "SCC"], 0.25, min_val_cells=10) == (sides, seed)


def test_committed_split_is_what_its_command_draws_and_crops_follow_their_field(tmp_path, cytology_dir):
    fields_csv, index_csv = cytology_dir / "cric_fields" / "cells.csv", cytology_dir / "cric_cells" / "index.csv"
    redrawn = split_from_point_csvs([fields_csv, index_csv], tmp_path / "split.csv")
    assert (tmp_path / "split.csv").read_text() == SPLIT.read_text(), "configs/splits/cric.csv is the documented draw"
    split = read_split(SPLIT)
    assert split.sides == redrawn.sides
    with open(index_csv, newline="") as fh:
        crops = list(csv.DictReader(fh))
    val = {field_id(r["image"]) for r in crops if split.side(r["image"]) == "val"}
    # crops of a validation field never reach a training set built from the train side
    train_crops = read_crop_index(index_csv, split, "train")
    assert not {c.field for c in train_crops} & val
    per_class = Counter(r["label"] for r in crops if split.side(r["image"]) == "val")
    assert min(per_class.values()) >= 30, per_class
    fields = {field_id(p[0]) for p in point_csv_pairs(fields_csv)}
    assert fields <= set(split.sides), "every annotated field is on one side"


def test_cross_fitting_folds_split_the_training_side_and_never_train_on_a_validation_field():
    """configs/splits/cric_fold_{a,b}.csv (benchmarks/crossfit_thresholds.py): each fold trains on half the
    training side's fields; together they cover it once; no validation field is on a fold's train side."""
    main = read_split(SPLIT)
    folds = [read_split(SPLIT.parent / f"cric_fold_{f}.csv") for f in "ab"]
    train = [set(f.fields("train")) for f in folds]
    assert not train[0] & train[1], "a field in both folds"
    assert train[0] | train[1] == set(main.fields("train"))
    for fold in folds:
        assert set(fold.sides) == set(main.sides), "every field listed, the rest on the val side"
    with open(SPLIT.parent / "cric_fold_a.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for cls in ["NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"]:
        total = sum(int(r[cls]) for r in rows if r["field"] in train[0] | train[1])
        in_a = sum(int(r[cls]) for r in rows if r["field"] in train[0])
        assert 0.35 * total <= in_a <= 0.65 * total, cls


def test_turned_crops_keep_their_nucleus_boxes_on_the_nucleus():
    img = np.zeros((60, 60, 3), np.uint8)
    img[10, 45] = 255  # a marked pixel at x=45, y=10
    for turns in range(4):
        for flip in (False, True):
            out = _turn(img, turns, flip)
            y, x = np.argwhere(out[:, :, 0] == 255)[0]
            px, py = _turn_point(45.5, 10.5, 60, turns, flip)  # pixel centre
            assert (px, py) == pytest.approx((x + 0.5, y + 0.5)), (turns, flip)


def test_crop_mosaics_box_every_indexed_nucleus_of_the_chosen_side(tmp_path):
    root = tmp_path / "crops"
    rows = []
    for cls, fld in [("HSIL", "fa"), ("NILM", "fa"), ("SCC", "fb"), ("LSIL", "fc")]:
        (root / cls).mkdir(parents=True, exist_ok=True)
        img = np.full((100, 100, 3), 220, np.uint8)
        cv2.circle(img, (50, 50), 10, (90, 40, 60), -1)
        cv2.imwrite(str(root / cls / f"{fld}.jpg"), img)
        rows.append([f"{cls}/{fld}.jpg", fld, cls, 500 + (30 if cls == "NILM" else 0), 400])
    index = root / "index.csv"
    with open(index, "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "image", "label", "nucleus_x", "nucleus_y"], *rows])
    split_path = tmp_path / "split.csv"
    split_path.write_text("field,split\nfa,train\nfb,train\nfc,val\n")
    crops = read_crop_index(index, read_split(split_path), "train")
    assert sorted(c.class_name for c in crops) == ["HSIL", "NILM", "SCC"]
    s = build_crop_mosaics(crops, tmp_path / "mosaics", crops_mpp=0.3, n_images=4, grid=2, patch_size=128,
                           annotated_classes=CRIC_CLASSES, progress=False)
    coco = json.loads((tmp_path / "mosaics" / "annotations.json").read_text())
    assert len(coco["images"]) == 4 and coco["info"]["annotated_classes"] == CRIC_CLASSES
    assert s.class_counts["LSIL"] == 0, "validation-side crops are never used"
    # every crop slot's own nucleus is boxed at the slot centre, 20 um = 40 px wide
    centres = {(round(a["bbox"][0] + a["bbox"][2] / 2), round(a["bbox"][1] + a["bbox"][3] / 2))
               for a in coco["annotations"] if a["bbox"][2] == pytest.approx(40.0)}
    cell, margin = 60, 4
    slots = {(margin + c * cell + 30, margin + r * cell + 30) for r in range(2) for c in range(2)}
    assert slots <= centres


@pytest.mark.slow
def test_annotated_negatives_are_far_from_every_annotated_cell(tmp_path, cytology_dir):
    fields = cytology_dir / "cric_fields"
    pairs = point_csv_pairs(fields / "cells.csv")[:2]
    mpp = read_mpp_table(fields / "fields.csv")
    s = mine_annotated_negatives("starter", pairs, tmp_path / "neg", far_um=20.0, min_score=0.05, top=3,
                                 slide_mpp=mpp, annotated_classes=CRIC_CLASSES, progress=False)
    coco = json.loads((tmp_path / "neg" / "annotations.json").read_text())
    assert 1 <= s.n_images <= 6 and coco["info"]["annotated_classes"] == CRIC_CLASSES
    for image in coco["images"]:
        stem = image["slide"]
        points = np.array([(a.box[0], a.box[1]) for a in load_annotations(fields / "cells.csv", TAX, {"negative for intraepithelial lesion": "NILM"},
                                                                          image=f"{stem}.jpg")])
        call = np.array([image["call_x"], image["call_y"]])
        assert np.sqrt(((points - call) ** 2).sum(1)).min() * mpp[stem] > 20.0
        assert image["x"] <= call[0] <= image["x"] + image["level0_size"], "the call lies in its patch"
        assert image["score"] > 0.05 and image["negative_for"] in TAX.abnormal_names()
