"""Synthetic and composited TCT slides with ground truth, and detection training-set extraction.

Example:
    >>> from wsi_pipeline.synth import generate_slide
    >>> s = generate_slide("/tmp/synth", 4096, seed=0, progress=False)  # doctest: +SKIP
    >>> s.slide_path.suffix, s.most_severe  # doctest: +SKIP
    ('.svs', 'SCC')
"""

from .slide import SynthSlide, generate_slide

__all__ = ["SynthSlide", "generate_slide"]
