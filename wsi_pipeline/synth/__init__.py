"""Synthetic and composited TCT slides with ground truth, and detection training-set extraction.

Example:
    >>> from wsi_pipeline.synth import generate_slide, make_training_set
    >>> s = generate_slide("/tmp/synth", 4096, seed=0, progress=False)  # doctest: +SKIP
    >>> s.slide_path.suffix  # doctest: +SKIP
    '.svs'
"""

from ..datasets.slides import DatasetSummary, extract_dataset
from .slide import SynthSlide, generate_slide
from .training import make_training_set

__all__ = ["DatasetSummary", "SynthSlide", "extract_dataset", "generate_slide", "make_training_set"]
