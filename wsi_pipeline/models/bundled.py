"""The starter model shipped inside the package (``wsi_pipeline/models/starter/``).

FCOS on ImageNet EfficientNet-Lite0 at 0.5 um/px, trained by ``wsi train configs/starter.yaml`` on
real crops composited onto a real TCT field; what it can and cannot do: ``docs/model_card.md``.
``wsi-run`` uses it when ``--model`` is not given. Nothing is downloaded.

Example:
    >>> starter_model_path().name
    'starter_fcos_lite0.pt'
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ArtifactError

STARTER_MODEL = Path(__file__).resolve().parent / "starter" / "starter_fcos_lite0.pt"


def starter_model_path() -> Path:
    """Path of the bundled starter checkpoint (a one-line error when the install lacks it)."""
    if not STARTER_MODEL.is_file():
        raise ArtifactError(STARTER_MODEL, "bundled starter model missing from this install; reinstall or pass --model")
    return STARTER_MODEL
