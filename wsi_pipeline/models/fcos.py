"""FCOS family (torchvision's ``FCOS``) with a pluggable classification loss.

Regression (GIoU) and centre-ness losses are torchvision's, normalised the same way; anchors are
ranked by ``sqrt(class score * centre-ness)`` at inference, as in the FCOS paper. Its settings
(centre sampling, head depth) are :class:`FCOSParams`, ``DetectorSpec.head``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import generalized_box_iou_loss

from .heads import FPN_STRIDES, DetectorFamily, HeadSpec, gather_classification_targets
from .losses import prior_bias

FCOS_REGRESSION_BIAS = 1.0  # initial l, t, r, b in anchor sizes (see FCOSLossHead)


@dataclass
class FCOSParams:
    """FCOS's settings: centre sampling of positive locations and the depth of the head branches."""

    center_sampling_radius: float = 1.5  # positives within this many strides of a box centre
    head_convs: int = 4  # conv layers in each head branch (2 halves the head's cost on CPU)

    def validate(self) -> None:
        if not 1 <= self.head_convs <= 8:
            raise ValueError("head_convs must be 1-8")
        if self.center_sampling_radius <= 0:
            raise ValueError(f"center_sampling_radius must be > 0, got {self.center_sampling_radius}")


class FCOSLossHead(FCOSHead):
    """FCOS head with the classification loss replaced by ``classification_head.criterion``.

    Regression (GIoU) and centre-ness losses are torchvision's, normalised the same way.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, criterion: nn.Module, prior_prob: float,
                 num_convs: int = 4):
        super().__init__(in_channels, num_anchors, num_classes, num_convs=num_convs)
        self.classification_head.criterion = criterion
        nn.init.constant_(self.classification_head.cls_logits.bias, prior_bias(prior_prob))
        # torchvision decodes relu(bbox_reg(x)); with zero bias and a random backbone about half the
        # outputs start below 0, so their boxes are empty, the GIoU loss sits at 1 and relu passes no
        # gradient. Some seeds never recovered (long-tail benchmark, seed 2, all losses). Starting at
        # one anchor size (box = 2 strides wide) keeps every regression output alive.
        nn.init.constant_(self.regression_head.bbox_reg.bias, FCOS_REGRESSION_BIAS)

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):  # noqa: D102
        logits, onehot, num_fg = gather_classification_targets(head_outputs["cls_logits"], targets, matched_idxs, None)
        loss_cls = self.classification_head.criterion(logits, onehot, avg_factor=max(1, num_fg))

        gt_boxes, fg_masks = [], []
        for target, matched in zip(targets, matched_idxs):
            if len(target["labels"]) == 0:
                gt_boxes.append(target["boxes"].new_zeros((len(matched), 4)))
            else:
                gt_boxes.append(target["boxes"][matched.clip(min=0)])
            fg_masks.append(matched >= 0)
        all_gt_boxes, foreground, anchors = torch.stack(gt_boxes), torch.stack(fg_masks), torch.stack(anchors)
        normaliser = max(1, num_fg)

        pred_boxes = self.box_coder.decode(head_outputs["bbox_regression"].float(), anchors)
        loss_box = generalized_box_iou_loss(pred_boxes[foreground], all_gt_boxes[foreground], reduction="sum")

        reg_targets = self.box_coder.encode(anchors, all_gt_boxes)
        left_right = reg_targets[:, :, [0, 2]]
        top_bottom = reg_targets[:, :, [1, 3]]
        ctr_targets = torch.sqrt(
            (left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0]).clamp(min=0)
            * (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0]).clamp(min=0)
        )
        pred_ctr = head_outputs["bbox_ctrness"].squeeze(dim=2)
        loss_ctr = nn.functional.binary_cross_entropy_with_logits(
            pred_ctr[foreground].float(), ctr_targets[foreground], reduction="sum"
        )
        return {
            "classification": loss_cls,
            "bbox_regression": loss_box / normaliser,
            "bbox_ctrness": loss_ctr / normaliser,
        }


def build(spec: HeadSpec, backbone: nn.Module, criterion: nn.Module, transform: dict[str, Any]) -> FCOS:
    params: FCOSParams = spec.head  # its class checked by DetectorSpec.validate
    anchors = AnchorGenerator(tuple((s,) for s in FPN_STRIDES), ((1.0,),) * len(FPN_STRIDES))
    head = FCOSLossHead(spec.fpn_channels, 1, spec.num_classes, criterion, spec.prior_prob, params.head_convs)
    return FCOS(backbone, spec.num_classes, anchor_generator=anchors, head=head,
                center_sampling_radius=params.center_sampling_radius, **transform)


def decode(model: FCOS, regression: Tensor, anchors: Tensor) -> Tensor:
    return model.head.box_coder.decode(regression, anchors)


def ranking_scores(head: dict[str, Tensor]) -> Tensor:
    return torch.sqrt(torch.sigmoid(head["cls_logits"].float()) * torch.sigmoid(head["bbox_ctrness"].float()))


FAMILY = DetectorFamily(params=FCOSParams, build=build, decode=decode, ranking_scores=ranking_scores)
