"""The detections table: one row per detected cell, in level-0 slide pixels (``detections.parquet``).

Written by ``wsi detect``, read by ``wsi report``. Layout (schema version 1, see docs/artifacts.md):

=============  ==================  ==================================================
column         type                meaning
=============  ==================  ==================================================
x0, y0, x1, y1 float32             box in level-0 pixels of the slide
score          float32             score of the predicted class
class_index    int16               index into the taxonomy stored in the metadata
class_name     string              taxonomy name of ``class_index``
patch_index    int32               row of the patch store the detection came from
scores         list<float32>[C]    per-class score vector (C = number of classes)
=============  ==================  ==================================================

The Parquet key-value metadata ``wsi_pipeline`` holds JSON with the schema version, the
completion flag, the taxonomy names, and the identity of the slide, patch store and model.
A file is written to a temporary name and renamed, so a half-written table never exists
under the final name; ``complete`` is true only when every patch was processed.

Example:
    >>> import numpy as np, tempfile, os
    >>> det = Detections.empty(num_classes=2)
    >>> path = os.path.join(tempfile.mkdtemp(), "detections.parquet")
    >>> write_detections(path, det, {"taxonomy": ["NILM", "HSIL"], "complete": True})
    >>> read_detections(path).meta.complete
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ArtifactError
from ..fsutil import atomic_path
from .contracts import DETECTIONS_SCHEMA, DETECTIONS_VERSION, DetectionsMeta

SCHEMA_NAME = DETECTIONS_SCHEMA
SCHEMA_VERSION = DETECTIONS_VERSION
META_KEY = b"wsi_pipeline"


@dataclass
class Detections:
    """Columns of the detections table as numpy arrays (all of length N)."""

    boxes: np.ndarray  # (N, 4) float32 x0, y0, x1, y1 level-0 px
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int16 class index
    patch_index: np.ndarray  # (N,) int32
    class_scores: np.ndarray  # (N, C) float32
    class_names: list[str] = field(default_factory=list)  # per row
    meta: DetectionsMeta | None = None  # a mapping is parsed into DetectionsMeta

    def __post_init__(self) -> None:
        if isinstance(self.meta, Mapping):
            self.meta = DetectionsMeta.from_dict(self.meta)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls, num_classes: int) -> "Detections":
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            labels=np.zeros(0, np.int16),
            patch_index=np.zeros(0, np.int32),
            class_scores=np.zeros((0, num_classes), np.float32),
        )

    def to_arrow(self, taxonomy: list[str]) -> pa.Table:
        n, c = len(self), self.class_scores.shape[1] if self.class_scores.ndim == 2 else len(taxonomy)
        names = self.class_names or [taxonomy[int(i)] for i in self.labels]
        flat = pa.array(np.ascontiguousarray(self.class_scores, np.float32).reshape(-1), pa.float32())
        b = np.asarray(self.boxes, np.float32).reshape(n, 4)
        return pa.table(
            {
                "x0": b[:, 0], "y0": b[:, 1], "x1": b[:, 2], "y1": b[:, 3],
                "score": np.asarray(self.scores, np.float32),
                "class_index": np.asarray(self.labels, np.int16),
                "class_name": pa.array(names, pa.string()),
                "patch_index": np.asarray(self.patch_index, np.int32),
                "scores": pa.FixedSizeListArray.from_arrays(flat, c),
            }
        )


def write_detections(path: str | Path, det: Detections, meta: DetectionsMeta | Mapping[str, Any]) -> None:
    """Atomically write ``det`` with ``meta`` (a mapping is checked against :class:`DetectionsMeta`)."""
    path = Path(path)
    if not isinstance(meta, DetectionsMeta):
        meta = DetectionsMeta.from_dict(meta, path)
    table = det.to_arrow(meta.taxonomy)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta.to_dict()).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_detections(path: str | Path, require_complete: bool = True) -> Detections:
    """Read a detections table; a missing, foreign or incomplete file is an :class:`ArtifactError`."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(path, "detections table not found (run `wsi detect` first)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ArtifactError(path, f"not a readable Parquet file ({exc.__class__.__name__})") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ArtifactError(path, "not a wsi_pipeline detections table (no wsi_pipeline metadata)")
    raw_meta = json.loads(raw)
    if raw_meta.get("schema") != SCHEMA_NAME or int(raw_meta.get("version", 0)) > SCHEMA_VERSION:
        raise ArtifactError(path, f"unsupported detections schema {raw_meta.get('schema')} v{raw_meta.get('version')}")
    meta = DetectionsMeta.from_dict(raw_meta, path)
    if require_complete and not meta.complete:
        raise ArtifactError(path, "detections table is incomplete (the detection run did not finish); rerun `wsi detect`")
    n = table.num_rows
    c = len(meta.taxonomy)
    scores_col = table.column("scores").combine_chunks()
    class_scores = (
        scores_col.flatten().to_numpy(zero_copy_only=False).reshape(n, c).astype(np.float32)
        if n else np.zeros((0, c), np.float32)
    )
    col = lambda name, dt: table.column(name).to_numpy().astype(dt)  # noqa: E731
    return Detections(
        boxes=np.stack([col(k, np.float32) for k in ("x0", "y0", "x1", "y1")], axis=1).reshape(n, 4),
        scores=col("score", np.float32),
        labels=col("class_index", np.int16),
        patch_index=col("patch_index", np.int32),
        class_scores=class_scores,
        class_names=table.column("class_name").to_pylist(),
        meta=meta,
    )
