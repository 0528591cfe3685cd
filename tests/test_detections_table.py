import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from wsi_pipeline.errors import ArtifactError
from wsi_pipeline.store.detections import Detections, read_detections, write_detections


def _det(n=3, c=4):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, (n, 2)).astype(np.float32)
    return Detections(
        boxes=np.concatenate([xy, xy + 20], axis=1),
        scores=rng.uniform(size=n).astype(np.float32),
        labels=np.arange(n, dtype=np.int16) % c,
        patch_index=np.arange(n, dtype=np.int32),
        class_scores=rng.uniform(size=(n, c)).astype(np.float32),
    )


def test_round_trip(tmp_path):
    det = _det()
    tax = ["A", "B", "C", "D"]
    write_detections(tmp_path / "d.parquet", det, {"taxonomy": tax, "complete": True, "slide": {"name": "s"}})
    back = read_detections(tmp_path / "d.parquet")
    np.testing.assert_allclose(back.boxes, det.boxes)
    np.testing.assert_allclose(back.class_scores, det.class_scores)
    assert back.class_names == [tax[i] for i in det.labels]
    assert back.meta.slide.name == "s" and back.meta.version == 1


def test_empty_round_trip(tmp_path):
    write_detections(tmp_path / "d.parquet", Detections.empty(2), {"taxonomy": ["A", "B"], "complete": True})
    back = read_detections(tmp_path / "d.parquet")
    assert len(back) == 0 and back.class_scores.shape == (0, 2)


def test_incomplete_and_foreign_files_are_refused(tmp_path):
    write_detections(tmp_path / "d.parquet", _det(), {"taxonomy": list("ABCD"), "complete": False})
    with pytest.raises(ArtifactError, match="incomplete"):
        read_detections(tmp_path / "d.parquet")
    (tmp_path / "x.parquet").write_text("hello")
    with pytest.raises(ArtifactError, match="not a readable Parquet"):
        read_detections(tmp_path / "x.parquet")
    with pytest.raises(ArtifactError, match="not found"):
        read_detections(tmp_path / "missing.parquet")


def test_unknown_or_missing_metadata_keys_name_the_file_and_key(tmp_path):
    path = tmp_path / "d.parquet"
    with pytest.raises(ArtifactError, match=r"d.parquet: unknown key 'slide.colour'"):
        write_detections(path, _det(), {"taxonomy": list("ABCD"), "complete": True, "slide": {"colour": 1}})
    write_detections(path, _det(), {"taxonomy": list("ABCD"), "complete": True})
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"wsi_pipeline"])
    del meta["taxonomy"]
    pq.write_table(table.replace_schema_metadata({b"wsi_pipeline": json.dumps(meta).encode()}), path)
    with pytest.raises(ArtifactError, match=r"d.parquet: missing key 'taxonomy'") as err:
        read_detections(path)
    assert "\n" not in str(err.value)
