"""`wsi data preview`: a contact sheet of a patch set with every stored box drawn in its class colour."""

from __future__ import annotations

import base64
import json
import re

import cv2
import numpy as np
import pytest
from test_negatives import finished_run

from wsi_pipeline.cli.main import main
from wsi_pipeline.datasets.negatives import mine_negatives
from wsi_pipeline.datasets.preview import render_preview
from wsi_pipeline.errors import ConfigError
from wsi_pipeline.taxonomy import load_taxonomy

TAX = load_taxonomy()


def embedded_images(html: str) -> list[np.ndarray]:
    return [cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
            for b64 in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', html)]


def test_boxes_are_drawn_where_annotations_json_puts_them(make_dataset, tmp_path, capsys):
    data = make_dataset(tmp_path / "set", n_images=6)
    assert main(["data", "preview", str(data), "--max-images", "4"]) == 0
    assert "4 of 6 patches" in capsys.readouterr().out
    html = (data / "preview.html").read_text()
    shown = embedded_images(html)
    assert len(shown) == 4
    coco = json.loads((data / "annotations.json").read_text())
    first = [a for a in coco["annotations"] if a["image_id"] == 1]  # evenly spaced picks start at the first patch
    for ann in first:
        x, y, w, h = (int(round(v)) for v in ann["bbox"])
        colour = np.array(TAX.classes[ann["category_id"] - 1].rgb, float)
        for edge in (shown[0][y, x + w // 2], shown[0][y + h // 2, x]):  # middle of the top and the left edge
            assert np.abs(edge.astype(float) - colour).max() < 60  # the class colour (JPEG-blurred), not disc or background
    counts = {n: sum(1 for a in coco["annotations"] if a["category_id"] == TAX.index(n) + 1) for n in ("NILM", "HSIL")}
    assert f"HSIL</td><td>{counts['HSIL']}<" in html and f"NILM</td><td>{counts['NILM']}<" in html


def test_class_filter_and_limits(make_dataset, tmp_path):
    data = make_dataset(tmp_path / "set", n_images=6)
    coco = json.loads((data / "annotations.json").read_text())
    with_hsil = {a["image_id"] for a in coco["annotations"] if a["category_id"] == TAX.index("HSIL") + 1}
    s = render_preview(data, tmp_path / "hsil.html", class_name="HSIL")
    assert (s.n_shown, s.n_candidates, s.n_total) == (len(with_hsil), len(with_hsil), 6)
    with pytest.raises(ConfigError, match="not in the set's categories"):
        render_preview(data, class_name="HSIL-ish")
    with pytest.raises(ConfigError, match="max_images"):
        render_preview(data, max_images=0)


def test_hard_negatives_show_their_call_and_a_rerun_drops_the_old_preview(tmp_path):
    out = tmp_path / "negatives"
    mine_negatives([finished_run(tmp_path)], out, progress=False)
    html = render_preview(out).path.read_text()
    assert "no box; cut for its AGC call, score 0.6" in html and "Annotated classes" in html
    mine_negatives([tmp_path / "results"], out, top=1, progress=False)
    assert not (out / "preview.html").exists()  # it showed the old set
