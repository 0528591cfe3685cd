"""RetinaNet family (torchvision's ``RetinaNet``) with a pluggable classification loss.

The classification head's ``compute_loss`` gathers, over all images of the batch, the logits of the
anchors that take part in the loss (matched foreground and background; anchors between the IoU
thresholds are left out) and calls ``criterion(logits, onehot, avg_factor=max(1, num_foreground))``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetHead

from .heads import DetectorFamily, gather_classification_targets
from .spec import DetectorSpec


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


def build(spec: DetectorSpec, backbone: nn.Module, criterion: nn.Module, transform: dict[str, Any]) -> RetinaNet:
    sizes = tuple(tuple(int(round(s * k)) for k in spec.anchor_scales) for s in spec.anchor_sizes)
    ratios = (tuple(spec.aspect_ratios),) * len(sizes)
    anchors = AnchorGenerator(sizes, ratios)
    num_anchors = anchors.num_anchors_per_location()[0]
    head = RetinaNetHead(spec.fpn_channels, num_anchors, spec.num_classes)
    head.classification_head = RetinaNetLossClassificationHead(
        spec.fpn_channels, num_anchors, spec.num_classes, criterion, spec.prior_prob
    )
    return RetinaNet(backbone, spec.num_classes, anchor_generator=anchors, head=head,
                     fg_iou_thresh=spec.fg_iou, bg_iou_thresh=spec.bg_iou, **transform)


def decode(model: RetinaNet, regression: Tensor, anchors: Tensor) -> Tensor:
    return model.box_coder.decode_single(regression, anchors)


FAMILY = DetectorFamily(build=build, decode=decode)
