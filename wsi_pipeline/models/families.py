"""The detector-family registry: ``DetectorSpec.detector`` names one of :data:`FAMILIES`.

A new family is one module (its :class:`~wsi_pipeline.models.heads.FamilyParams` dataclass, ``build``,
``decode`` and a ``FAMILY``; see ``retinanet.py`` and ``fcos.py``) and one line here.

Example:
    >>> sorted(FAMILIES), FAMILIES["fcos"].params().head_convs
    (['fcos', 'retinanet'], 4)
"""

from __future__ import annotations

from ..registry import Registry
from . import fcos, retinanet
from .heads import DetectorFamily

FAMILIES: Registry[DetectorFamily] = Registry("detector family", {
    "retinanet": retinanet.FAMILY,
    "fcos": fcos.FAMILY,
})
