"""One-stage cell detectors (torchvision RetinaNet / FCOS) with a pluggable classification loss.

The classification head is subclassed so its ``compute_loss`` gathers, over all images of the
batch, the logits of the anchors that take part in the loss (matched foreground and background;
anchors between the IoU thresholds are left out) as an ``(N, C)`` tensor with ``(N, C)`` one-hot
targets, and calls ``criterion(logits, targets, avg_factor=max(1, num_foreground))`` - any loss
from :mod:`wsi_pipeline.models.losses`.

:class:`Detector` wraps the torchvision model: ``forward(images, targets)`` returns the training
losses, :meth:`Detector.predict` returns boxes with a per-class sigmoid score vector per box.

Example:
    >>> import torch
    >>> from wsi_pipeline.models.losses import EqualizedFocalLoss
    >>> spec = DetectorSpec(num_classes=3, backbone="resnet18", image_size=128, fpn_channels=32)
    >>> det = build_detector(spec, EqualizedFocalLoss(3))
    >>> out = det.predict(torch.zeros(1, 128, 128, 3, dtype=torch.uint8), score_threshold=0.0)
    >>> out[0]["class_scores"].shape[1]
    3
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetHead
from torchvision.ops import boxes as box_ops, generalized_box_iou_loss

from .backbones import BACKBONES, build_backbone
from .losses import prior_bias

DETECTORS = ("retinanet", "fcos")
FCOS_REGRESSION_BIAS = 1.0  # initial l, t, r, b in anchor sizes (see FCOSLossHead)
FPN_STRIDES = (8, 16, 32, 64, 128)  # P3-P7 from ResNet C3-C5 plus P6/P7


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
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if len(self.anchor_sizes) != len(FPN_STRIDES):
            raise ValueError(f"anchor_sizes needs {len(FPN_STRIDES)} values (one per FPN level P3-P7)")
        if not 1 <= self.head_convs <= 8:
            raise ValueError("head_convs must be 1-8")
        if not 0 <= self.trainable_backbone_layers <= 5:
            raise ValueError("trainable_backbone_layers must be 0-5")


# ------------------------------------------------------------------ classification heads


def gather_classification_targets(
    cls_logits: Tensor, targets: list[dict[str, Tensor]], matched_idxs: list[Tensor], ignore_idx: int | None
) -> tuple[Tensor, Tensor, int]:
    """Flatten all images' anchors into ``(N, C)`` logits and one-hot targets.

    ``matched_idxs[i][a]`` is the ground-truth index of anchor ``a`` or a negative number
    (background); anchors equal to ``ignore_idx`` are dropped.
    """
    logits, onehots, num_fg = [], [], 0
    for target, logits_img, matched in zip(targets, cls_logits, matched_idxs):
        foreground = matched >= 0
        num_fg += int(foreground.sum())
        onehot = torch.zeros_like(logits_img, dtype=torch.float32)
        if foreground.any():
            onehot[foreground, target["labels"][matched[foreground]]] = 1.0
        valid = matched != ignore_idx if ignore_idx is not None else torch.ones_like(foreground)
        logits.append(logits_img[valid])
        onehots.append(onehot[valid])
    return torch.cat(logits), torch.cat(onehots), num_fg


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


# ------------------------------------------------------------------ detector


class Detector(nn.Module):
    """A torchvision one-stage detector plus its spec; normalisation happens inside.

    ``forward(images, targets)`` in training mode returns the loss dict; :meth:`predict` is the
    inference entry point used by ``wsi detect``.
    """

    def __init__(self, model: RetinaNet | FCOS, spec: DetectorSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec

    @property
    def criterion(self) -> nn.Module:
        return self.model.head.classification_head.criterion

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        return self.model(images, targets)

    @staticmethod
    def as_float_images(images: Tensor) -> Tensor:
        """uint8 ``(B, H, W, 3)`` or float ``(B, 3, H, W)`` in 0..1 -> float ``(B, 3, H, W)``."""
        if images.dtype == torch.uint8:
            if images.dim() != 4 or images.shape[-1] != 3:
                raise ValueError(f"uint8 images must have shape (B, H, W, 3), got {tuple(images.shape)}")
            return images.permute(0, 3, 1, 2).float().div_(255.0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"float images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        return images.float()

    @torch.no_grad()
    def predict(self, images: Tensor, score_threshold: float = 0.05) -> list[dict[str, Tensor]]:
        """Detect cells in a batch of patches.

        Returns one dict per image: ``boxes`` (K, 4) float xyxy in patch pixels, ``scores`` (K,)
        the best class score, ``labels`` (K,) its class index and ``class_scores`` (K, C) the
        sigmoid score of every class. Anchors are ranked by their best class score, the top
        ``spec.topk_candidates`` above ``score_threshold`` are decoded and merged by class-aware NMS.
        """
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            batch = self.as_float_images(images.to(device))
            original_sizes = [tuple(img.shape[-2:]) for img in batch]
            image_list, _ = self.model.transform(list(batch))
            features = list(self.model.backbone(image_list.tensors).values())
            head = self.model.head(features)
            anchors = self.model.anchor_generator(image_list, features)
            scores = torch.sigmoid(head["cls_logits"].float())
            if "bbox_ctrness" in head:  # FCOS ranks by sqrt(class score * centre-ness)
                scores = torch.sqrt(scores * torch.sigmoid(head["bbox_ctrness"].float()))
            results = []
            for i, (resized, original) in enumerate(zip(image_list.image_sizes, original_sizes)):
                results.append(
                    self._postprocess(
                        scores[i], head["bbox_regression"][i].float(), anchors[i], resized, original, score_threshold
                    )
                )
            return results
        finally:
            self.train(was_training)

    def _postprocess(
        self, scores: Tensor, regression: Tensor, anchors: Tensor, resized: tuple[int, int],
        original: tuple[int, int], score_threshold: float,
    ) -> dict[str, Tensor]:
        best, labels = scores.max(dim=1)
        keep = torch.where(best > score_threshold)[0]
        if keep.numel() > self.spec.topk_candidates:
            keep = keep[best[keep].topk(self.spec.topk_candidates).indices]
        coder = self.model.head.box_coder if self.spec.detector == "fcos" else self.model.box_coder
        if self.spec.detector == "fcos":
            boxes = coder.decode(regression[keep], anchors[keep])
        else:
            boxes = coder.decode_single(regression[keep], anchors[keep])
        boxes = box_ops.clip_boxes_to_image(boxes, resized)
        nms_keep = box_ops.batched_nms(boxes, best[keep], labels[keep], self.spec.nms_iou)
        nms_keep = nms_keep[: self.spec.detections_per_img]
        idx = keep[nms_keep]
        ratio_h, ratio_w = original[0] / resized[0], original[1] / resized[1]
        boxes = boxes[nms_keep] * torch.tensor([ratio_w, ratio_h, ratio_w, ratio_h], device=boxes.device)
        return {"boxes": boxes, "scores": best[idx], "labels": labels[idx], "class_scores": scores[idx]}


def build_detector(spec: DetectorSpec, criterion: nn.Module, backbone_weights: str | Path | None = None) -> Detector:
    """Build the network for ``spec`` with ``criterion`` as the classification loss.

    Example:
        >>> from wsi_pipeline.models.losses import SigmoidFocalLoss
        >>> det = build_detector(DetectorSpec(num_classes=2, detector="fcos", fpn_channels=32), SigmoidFocalLoss(2))
        >>> type(det.model).__name__, type(det.criterion).__name__
        ('FCOS', 'SigmoidFocalLoss')
    """
    spec.validate()
    backbone = build_backbone(spec.backbone, spec.fpn_channels, str(backbone_weights or ""),
                              spec.trainable_backbone_layers, spec.frozen_batchnorm)
    common: dict[str, Any] = dict(
        min_size=spec.image_size,
        max_size=spec.image_size,
        image_mean=list(spec.image_mean),
        image_std=list(spec.image_std),
        topk_candidates=spec.topk_candidates,
        detections_per_img=spec.detections_per_img,
        nms_thresh=spec.nms_iou,
    )
    if spec.detector == "retinanet":
        sizes = tuple(tuple(int(round(s * k)) for k in spec.anchor_scales) for s in spec.anchor_sizes)
        ratios = (tuple(spec.aspect_ratios),) * len(sizes)
        anchors = AnchorGenerator(sizes, ratios)
        num_anchors = anchors.num_anchors_per_location()[0]
        head = RetinaNetHead(spec.fpn_channels, num_anchors, spec.num_classes)
        head.classification_head = RetinaNetLossClassificationHead(
            spec.fpn_channels, num_anchors, spec.num_classes, criterion, spec.prior_prob
        )
        model = RetinaNet(
            backbone, spec.num_classes, anchor_generator=anchors, head=head,
            fg_iou_thresh=spec.fg_iou, bg_iou_thresh=spec.bg_iou, **common,
        )
    else:
        anchors = AnchorGenerator(tuple((s,) for s in FPN_STRIDES), ((1.0,),) * len(FPN_STRIDES))
        head = FCOSLossHead(spec.fpn_channels, 1, spec.num_classes, criterion, spec.prior_prob, spec.head_convs)
        model = FCOS(
            backbone, spec.num_classes, anchor_generator=anchors, head=head,
            center_sampling_radius=spec.center_sampling_radius, **common,
        )
    return Detector(model, spec)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (for logs)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = [
    "DetectorSpec",
    "Detector",
    "build_detector",
    "gather_classification_targets",
    "count_parameters",
]
