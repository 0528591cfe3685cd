"""Per-batch results on disk, so an interrupted detection run continues where it stopped.

``OUT/detections.partial/`` holds ``run.json`` (what the results belong to: store fingerprint,
model checksum, thresholds) and one ``patches_<start>_<stop>.npz`` per finished batch with its
raw (not yet merged) level-0 boxes. Each file is written to a temporary name and renamed, so a
file that exists is complete. A rerun with the same identity skips the finished patches; a rerun
with another model, store or threshold starts afresh. The folder is removed once the final
``detections.parquet`` is written.

Example:
    >>> import tempfile, numpy as np
    >>> part = PartialResults.open(tempfile.mkdtemp(), {"model": "abc"})
    >>> part.save(0, 4, RawDetections.empty(num_classes=2))
    >>> part.done_mask(6).tolist()
    [True, True, True, True, False, False]
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..fsutil import atomic_path, atomic_write
from ..store.artifacts import DETECTIONS_PARTIAL_NAME

log = logging.getLogger(__name__)
_NAME = re.compile(r"^patches_(\d+)_(\d+)\.npz$")


@dataclass
class RawDetections:
    """Detections of some patches in level-0 px, before the overlap merge."""

    boxes: np.ndarray  # (N, 4) float32 level-0 xyxy
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64
    class_scores: np.ndarray  # (N, C) float32
    patch_index: np.ndarray  # (N,) int64
    truncated: np.ndarray  # (N,) bool: touches a patch border (maybe a cut cell)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls, num_classes: int) -> "RawDetections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                   np.zeros((0, num_classes), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))

    @classmethod
    def concat(cls, parts: list["RawDetections"], num_classes: int) -> "RawDetections":
        if not parts:
            return cls.empty(num_classes)
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def take(self, index: np.ndarray) -> "RawDetections":
        return RawDetections(*(getattr(self, f.name)[index] for f in fields(self)))


class PartialResults:
    """The ``detections.partial`` folder of one output directory."""

    def __init__(self, folder: Path):
        self.folder = folder

    @classmethod
    def open(cls, out_dir: str | Path, identity: dict[str, Any]) -> "PartialResults":
        folder = Path(out_dir) / DETECTIONS_PARTIAL_NAME
        run_file = folder / "run.json"
        if run_file.is_file():
            try:
                previous = json.loads(run_file.read_text())
            except json.JSONDecodeError:
                previous = None
            if previous != identity:
                log.info("Earlier partial results in %s belong to another model, store or setting; starting afresh", folder)
                shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not run_file.is_file():
            atomic_write(run_file, json.dumps(identity, indent=1, sort_keys=True))
        return cls(folder)

    def finished_ranges(self) -> list[tuple[int, int]]:
        ranges = []
        for path in self.folder.iterdir():
            match = _NAME.match(path.name)
            if match:
                ranges.append((int(match.group(1)), int(match.group(2))))
        return sorted(ranges)

    def done_mask(self, n_patches: int) -> np.ndarray:
        done = np.zeros(n_patches, bool)
        for start, stop in self.finished_ranges():
            done[start:stop] = True
        return done

    def save(self, start: int, stop: int, raw: RawDetections) -> None:
        path = self.folder / f"patches_{start:09d}_{stop:09d}.npz"
        with atomic_path(path) as tmp:
            np.savez(tmp, **{f.name: getattr(raw, f.name) for f in fields(raw)})

    def load_all(self, num_classes: int) -> RawDetections:
        parts = []
        for start, stop in self.finished_ranges():
            with np.load(self.folder / f"patches_{start:09d}_{stop:09d}.npz") as data:
                parts.append(RawDetections(**{f.name: data[f.name] for f in fields(RawDetections)}))
        return RawDetections.concat(parts, num_classes)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
