"""Stage 2b: run a detector over a patch store and merge the results into slide-level detections.

See docs/inference.md. The entry point is :func:`detect_store` (``wsi detect``).
"""

from .engine import DETECTIONS_NAME, DetectResult, check_compatible, detect_store
from .merge import merge_overlaps, to_level0, touches_patch_border

__all__ = ["DETECTIONS_NAME", "DetectResult", "check_compatible", "detect_store", "merge_overlaps", "to_level0",
           "touches_patch_border"]
