"""What a detector is: :class:`DetectorSpec`, stored in every checkpoint so the network can be rebuilt.

The top-level fields are shared by all families; ``head`` holds the family's own settings, the
params dataclass its module defines (:class:`~wsi_pipeline.models.retinanet.RetinaNetParams`:
anchors and IoU matcher; :class:`~wsi_pipeline.models.fcos.FCOSParams`: centre sampling and head
depth). In a checkpoint the spec is a dict with ``head`` nested; :meth:`DetectorSpec.from_dict`
also reads the flat dicts of checkpoints written before the families had their own params.

Example:
    >>> spec = DetectorSpec(num_classes=3, detector="fcos")
    >>> spec.head
    FCOSParams(center_sampling_radius=1.5, head_convs=4)
    >>> DetectorSpec.from_dict({"num_classes": 3, "detector": "fcos", "head_convs": 2, "anchor_sizes": [8] * 5}).head
    FCOSParams(center_sampling_radius=1.5, head_convs=2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .backbones import BACKBONES
from .families import FAMILIES
from .heads import FamilyParams


@dataclass
class DetectorSpec:
    """Everything needed to rebuild the network; stored in checkpoints."""

    num_classes: int
    detector: str = "retinanet"  # a name in wsi_pipeline.models.families.FAMILIES
    backbone: str = "resnet18"  # a name in wsi_pipeline.models.backbones.BACKBONES
    image_size: int = 256  # patches are resized so their short side is this (no resize when equal)
    fpn_channels: int = 256
    prior_prob: float = 0.01  # classification bias starts at -log((1 - pi) / pi)
    trainable_backbone_layers: int = 5
    frozen_batchnorm: bool = False  # True when starting from backbone weights
    image_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    image_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    topk_candidates: int = 1000
    detections_per_img: int = 300
    nms_iou: float = 0.5
    # the family's own settings, an instance of FAMILIES[detector].params; None: that class's defaults
    head: FamilyParams | None = None

    def __post_init__(self) -> None:
        if self.head is None and self.detector in FAMILIES:
            self.head = FAMILIES[self.detector].params()

    def to_dict(self) -> dict[str, Any]:
        """Plain values, the family's settings nested under ``head``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DetectorSpec":
        """The spec of a checkpoint's ``meta["architecture"]``.

        Keys this version does not know are ignored, at the top level and in ``head``. A flat dict
        (no ``head`` mapping: checkpoints written before the families had their own params) is
        migrated: the family's keys move into its params, other families' keys are dropped.
        """
        shared = {f.name for f in dataclasses.fields(cls)} - {"head"}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in shared}
        family = FAMILIES.get(kwargs.get("detector", cls.detector))
        if family is not None:  # an unknown family is reported by validate()
            head = data.get("head")
            source = head if isinstance(head, Mapping) else data
            names = {f.name for f in dataclasses.fields(family.params)}
            kwargs["head"] = family.params(**{k: v for k, v in source.items() if k in names})
        return cls(**kwargs)

    def validate(self) -> None:
        family = FAMILIES[self.detector]
        if not isinstance(self.head, family.params):
            raise ValueError(f"head of a {self.detector} detector must be a {family.params.__name__}, "
                             f"got {type(self.head).__name__}")
        self.head.validate()
        BACKBONES[self.backbone]  # an unknown name raises UnknownNameError
        if not 0 <= self.trainable_backbone_layers <= 5:
            raise ValueError("trainable_backbone_layers must be 0-5")
