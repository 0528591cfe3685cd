"""What a detector is: :class:`DetectorSpec`, stored in every checkpoint so the network can be rebuilt.

Fields are shared by all families except where marked with the family that reads them (RetinaNet:
anchors and IoU matcher; FCOS: centre sampling and head depth); the flat layout keeps checkpoints
readable across versions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .backbones import BACKBONES

FPN_STRIDES = (8, 16, 32, 64, 128)  # P3-P7 from C3-C5 plus P6/P7


@dataclass
class DetectorSpec:
    """Everything needed to rebuild the network; stored in checkpoints."""

    num_classes: int
    detector: str = "retinanet"  # retinanet | fcos
    backbone: str = "resnet18"  # a name in wsi_pipeline.models.backbones.BACKBONES
    image_size: int = 256  # patches are resized so their short side is this (no resize when equal)
    fpn_channels: int = 256
    anchor_sizes: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])  # RetinaNet, per level
    anchor_scales: list[float] = field(default_factory=lambda: [1.0, 2 ** (1 / 3), 2 ** (2 / 3)])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    fg_iou: float = 0.5  # RetinaNet matcher
    bg_iou: float = 0.4
    center_sampling_radius: float = 1.5  # FCOS
    head_convs: int = 4  # FCOS: conv layers in each head branch (2 halves the head's cost on CPU)
    prior_prob: float = 0.01  # classification bias starts at -log((1 - pi) / pi)
    trainable_backbone_layers: int = 5
    frozen_batchnorm: bool = False  # True when starting from backbone weights
    image_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    image_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    topk_candidates: int = 1000
    detections_per_img: int = 300
    nms_iou: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DetectorSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if len(self.anchor_sizes) != len(FPN_STRIDES):
            raise ValueError(f"anchor_sizes needs {len(FPN_STRIDES)} values (one per FPN level P3-P7)")
        if not 1 <= self.head_convs <= 8:
            raise ValueError("head_convs must be 1-8")
        if not 0 <= self.trainable_backbone_layers <= 5:
            raise ValueError("trainable_backbone_layers must be 0-5")
