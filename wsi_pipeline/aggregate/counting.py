"""The counted-cell rule, the one place it is written: a detection **counts** for its predicted class when
its score is at least that class's report threshold (``report.score_threshold`` / ``class_score_thresholds``).

The slide summary, the exports and the cell-level evaluation all count cells with :func:`counted_mask`.

Example:
    >>> counted_mask([0.6, 0.4, 0.4], [0, 1, 0], [0.5, 0.3]).tolist()
    [True, True, False]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def counted_mask(scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[int],
                 thresholds: np.ndarray | Sequence[float]) -> np.ndarray:
    """Boolean mask of the detections that count: ``scores >= thresholds[labels]`` (float32 comparison)."""
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return np.zeros(0, bool)
    return np.asarray(scores, np.float32) >= np.asarray(thresholds, np.float32)[labels]
