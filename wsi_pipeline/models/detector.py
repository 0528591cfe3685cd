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

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import boxes as box_ops

from .backbones import build_backbone
from .families import FAMILIES
from .heads import FPN_STRIDES
from .spec import DetectorSpec


# ------------------------------------------------------------------ detector

SIZE_DIVISIBLE = 32  # inputs are zero-padded to a multiple of this, as torchvision's transform does
MIN_INPUT_SIDE = 2 * FPN_STRIDES[-1]  # px: two cells of the coarsest level (P7); smaller tiles are zero-padded up to it


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
    def as_float_images(images: Tensor, contiguous: bool = False) -> Tensor:
        """uint8 ``(B, H, W, 3)`` or float ``(B, 3, H, W)`` in 0..1 -> float ``(B, 3, H, W)``.

        From uint8 the result keeps the channels-last strides (eager torch convolves them ~1.35x faster on the
        CPU) unless ``contiguous`` (what an exported runtime takes: converted in one pass, not copied later)."""
        if images.dtype == torch.uint8:
            if images.dim() != 4 or images.shape[-1] != 3:
                raise ValueError(f"uint8 images must have shape (B, H, W, 3), got {tuple(images.shape)}")
            layout = torch.contiguous_format if contiguous else torch.preserve_format
            return images.permute(0, 3, 1, 2).to(torch.float32, memory_format=layout).div_(255.0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"float images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        return images.float()

    def normalise(self, images: Tensor) -> Tensor:
        """Float ``(B, 3, H, W)`` in 0..1 -> the network's input: normalised with the spec's mean and std and
        zero-padded on the right and bottom to a multiple of :data:`SIZE_DIVISIBLE` (as torchvision's transform
        pads), and to at least :data:`MIN_INPUT_SIDE` (a tile cut from a small image). Never resized: the detector is fully convolutional, so a tile of any size at the training
        resolution is seen as the training patches were (no resize happened there either: the training
        patch side is ``spec.image_size``)."""
        mean = torch.tensor(self.spec.image_mean, device=images.device, dtype=images.dtype)[None, :, None, None]
        std = torch.tensor(self.spec.image_std, device=images.device, dtype=images.dtype)[None, :, None, None]
        x = images.sub(mean).div_(std)
        h, w = x.shape[-2:]
        # at least two cells of the coarsest level: its group norm needs more than one value per channel
        pad_h = max(-h % SIZE_DIVISIBLE, MIN_INPUT_SIDE - h)
        pad_w = max(-w % SIZE_DIVISIBLE, MIN_INPUT_SIDE - w)
        return nn.functional.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x

    def head_outputs(self, normalised: Tensor) -> dict[str, Tensor]:
        """The network alone: normalised padded images -> the head's outputs, anchors of all levels flattened
        (``cls_logits`` (B, A, C), ``bbox_regression`` (B, A, 4), and FCOS's ``bbox_ctrness`` (B, A, 1)).
        This is the part an exported runtime replaces (``wsi_pipeline.inference.runtime``)."""
        return self.model.head(list(self.model.backbone(normalised).values()))

    def level_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Feature map sizes of the FPN levels for a padded input of ``height`` x ``width`` (P3-P7: strides
        8-32 from the backbone, then two stride-2 convolutions, ``ceil`` each)."""
        sizes = [(height // s, width // s) for s in FPN_STRIDES[:3]]
        for _ in FPN_STRIDES[3:]:
            h, w = sizes[-1]
            sizes.append(((h + 1) // 2, (w + 1) // 2))
        return sizes

    def tile_limits(self, height: int, width: int) -> tuple[int, int]:
        """``(topk_candidates, detections_per_img)`` for a tile of ``height`` x ``width`` px: the spec's limits
        are per training patch (``image_size`` squared) and grow with the tile's area, so a crowded tile
        larger than the training patch loses no cells to a limit meant for a small one."""
        factor = max(1.0, height * width / float(self.spec.image_size) ** 2)
        return int(math.ceil(self.spec.topk_candidates * factor)), int(math.ceil(self.spec.detections_per_img * factor))

    @torch.no_grad()
    def predict(self, images: Tensor, score_threshold: float = 0.05,
                network: Callable[[Tensor], dict[str, Tensor]] | None = None) -> list[dict[str, Tensor]]:
        """Detect cells in a batch of patches (tiles) of any size at the training resolution.

        Returns one dict per image: ``boxes`` (K, 4) float xyxy in patch pixels, ``scores`` (K,)
        the best class score, ``labels`` (K,) its class index and ``class_scores`` (K, C) the
        sigmoid score of every class. Anchors are ranked by their best class score, the top
        ``topk_candidates`` above ``score_threshold`` are decoded and merged by class-aware NMS, and
        ``detections_per_img`` are kept; both limits scale with the tile's area (:meth:`tile_limits`).
        ``network`` replaces :meth:`head_outputs` (an exported runtime); the post-processing is the same.
        """
        was_training = self.training
        if was_training:  # switching modes walks every submodule: not on each batch of a slide
            self.eval()
        try:
            device = next(self.parameters()).device
            batch = self.as_float_images(images.to(device), contiguous=network is not None)
            height, width = batch.shape[-2:]
            normalised = self.normalise(batch)
            head = (network or self.head_outputs)(normalised)
            image_list = ImageList(normalised, [(height, width)] * len(batch))
            grids = [torch.empty((1, 0, h, w), device=device) for h, w in self.level_sizes(*normalised.shape[-2:])]
            anchors = self.model.anchor_generator(image_list, grids)
            if anchors[0].shape[0] != head["cls_logits"].shape[1]:
                raise RuntimeError(f"{anchors[0].shape[0]} anchors for {head['cls_logits'].shape[1]} head outputs")
            # a family's ranking rises with each class logit and shares its other terms (FCOS's centre-ness)
            # across an anchor's classes: the best class is the largest logit, and only it is scored at every
            # anchor; every class is scored for the kept anchors only (the same numbers, far less work)
            best_logits, labels = head["cls_logits"].float().max(dim=-1)
            best = FAMILIES[self.spec.detector].ranking_scores({**head, "cls_logits": best_logits[..., None]})[..., 0]
            limits = self.tile_limits(height, width)
            return [self._postprocess(best[i], labels[i], {k: v[i] for k, v in head.items()}, anchors[i],
                                      (height, width), score_threshold, *limits) for i in range(len(batch))]
        finally:
            if was_training:
                self.train()

    def _postprocess(
        self, best: Tensor, labels: Tensor, head: dict[str, Tensor], anchors: Tensor, size: tuple[int, int],
        score_threshold: float, topk_candidates: int, detections_per_img: int,
    ) -> dict[str, Tensor]:
        """One image: ``best`` (A,) score and ``labels`` (A,) class of each anchor, ``head`` its outputs."""
        family = FAMILIES[self.spec.detector]
        keep = torch.where(best > score_threshold)[0]
        if keep.numel() > topk_candidates:
            keep = keep[best[keep].topk(topk_candidates).indices]
        boxes = family.decode(self.model, head["bbox_regression"][keep].float(), anchors[keep])
        boxes = box_ops.clip_boxes_to_image(boxes, size)
        nms_keep = box_ops.batched_nms(boxes, best[keep], labels[keep], self.spec.nms_iou)
        nms_keep = nms_keep[:detections_per_img]
        idx = keep[nms_keep]
        class_scores = family.ranking_scores({k: v[idx] for k, v in head.items()})
        return {"boxes": boxes[nms_keep], "scores": best[idx], "labels": labels[idx], "class_scores": class_scores}


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
