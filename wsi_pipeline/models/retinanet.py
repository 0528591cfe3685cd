"""RetinaNet family (torchvision's ``RetinaNet``) with a pluggable classification loss.

The classification head's ``compute_loss`` gathers, over all images of the batch, the logits of the
anchors that take part in the loss (matched foreground and background; anchors between the IoU
thresholds are left out) and calls ``criterion(logits, onehot, avg_factor=max(1, num_foreground))``.
Its settings (anchors and the IoU matcher) are :class:`RetinaNetParams`, ``DetectorSpec.head``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetHead

from .heads import FPN_STRIDES, DetectorFamily, HeadSpec, gather_classification_targets


@dataclass
class RetinaNetParams:
    """RetinaNet's settings: anchors per FPN level and the IoU thresholds of the anchor matcher."""

    anchor_sizes: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])  # px, one per level P3-P7
    anchor_scales: list[float] = field(default_factory=lambda: [1.0, 2 ** (1 / 3), 2 ** (2 / 3)])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    fg_iou: float = 0.5  # an anchor with IoU >= fg_iou is foreground
    bg_iou: float = 0.4  # below bg_iou background; in between left out of the loss

    def validate(self) -> None:
        if len(self.anchor_sizes) != len(FPN_STRIDES):
            raise ValueError(f"anchor_sizes needs {len(FPN_STRIDES)} values (one per FPN level P3-P7)")
        if not self.anchor_scales or not self.aspect_ratios:
            raise ValueError("anchor_scales and aspect_ratios need at least one value each")
        if not 0 <= self.bg_iou <= self.fg_iou <= 1:
            raise ValueError(f"bg_iou and fg_iou must satisfy 0 <= bg_iou <= fg_iou <= 1, got {self.bg_iou}, {self.fg_iou}")


class RetinaNetLossClassificationHead(RetinaNetClassificationHead):
    """RetinaNet classification head whose loss is ``criterion`` over all images' valid anchors."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, criterion: nn.Module, prior_prob: float):
        super().__init__(in_channels, num_anchors, num_classes, prior_probability=prior_prob)
        self.criterion = criterion

    def compute_loss(self, targets, head_outputs, matched_idxs):  # noqa: D102 (torchvision signature)
        logits, onehot, num_fg = gather_classification_targets(
            head_outputs["cls_logits"], targets, matched_idxs, self.BETWEEN_THRESHOLDS
        )
        return self.criterion(logits, onehot, avg_factor=max(1, num_fg))


def build(spec: HeadSpec, backbone: nn.Module, criterion: nn.Module, transform: dict[str, Any]) -> RetinaNet:
    params: RetinaNetParams = spec.head  # its class checked by DetectorSpec.validate
    sizes = tuple(tuple(int(round(s * k)) for k in params.anchor_scales) for s in params.anchor_sizes)
    ratios = (tuple(params.aspect_ratios),) * len(sizes)
    anchors = AnchorGenerator(sizes, ratios)
    num_anchors = anchors.num_anchors_per_location()[0]
    head = RetinaNetHead(spec.fpn_channels, num_anchors, spec.num_classes)
    head.classification_head = RetinaNetLossClassificationHead(
        spec.fpn_channels, num_anchors, spec.num_classes, criterion, spec.prior_prob
    )
    return RetinaNet(backbone, spec.num_classes, anchor_generator=anchors, head=head,
                     fg_iou_thresh=params.fg_iou, bg_iou_thresh=params.bg_iou, **transform)


def decode(model: RetinaNet, regression: Tensor, anchors: Tensor) -> Tensor:
    return model.box_coder.decode_single(regression, anchors)


FAMILY = DetectorFamily(params=RetinaNetParams, build=build, decode=decode)
