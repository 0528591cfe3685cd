"""One-stage cell detectors with a pluggable classification loss: the family registry and the wrapper.

A detector is a backbone (:mod:`~wsi_pipeline.models.backbones`) plus a family's heads and box
coding (:mod:`~wsi_pipeline.models.retinanet`, :mod:`~wsi_pipeline.models.fcos`), described by a
:class:`~wsi_pipeline.models.spec.DetectorSpec` whose ``head`` holds the family's own settings.
Every family's classification head calls
``criterion(logits (N, C), onehot (N, C), avg_factor=max(1, num_foreground))`` - any loss from
:mod:`wsi_pipeline.models.losses`. A new family is one module (its params dataclass, ``build``,
``decode`` and a ``FAMILY``) and one line in :data:`~wsi_pipeline.models.families.FAMILIES`.

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

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import boxes as box_ops

from .backbones import build_backbone
from .families import FAMILIES
from .spec import DetectorSpec


# ------------------------------------------------------------------ detector


class Detector(nn.Module):
    """A torchvision one-stage detector plus its spec; normalisation happens inside.

    ``forward(images, targets)`` in training mode returns the loss dict; :meth:`predict` is the
    inference entry point used by ``wsi detect``.
    """

    def __init__(self, model: nn.Module, spec: DetectorSpec) -> None:
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
            scores = FAMILIES[self.spec.detector].ranking_scores(head)
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
        boxes = FAMILIES[self.spec.detector].decode(self.model, regression[keep], anchors[keep])
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
    transform: dict[str, Any] = dict(
        min_size=spec.image_size,
        max_size=spec.image_size,
        image_mean=list(spec.image_mean),
        image_std=list(spec.image_std),
        topk_candidates=spec.topk_candidates,
        detections_per_img=spec.detections_per_img,
        nms_thresh=spec.nms_iou,
    )
    return Detector(FAMILIES[spec.detector].build(spec, backbone, criterion, transform), spec)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (for logs)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["FAMILIES", "DetectorSpec", "Detector", "build_detector", "count_parameters"]
