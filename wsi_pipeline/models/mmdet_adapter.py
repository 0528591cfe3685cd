"""The long-tail losses as OpenMMLab mmdet (3.x) classification losses.

mmdet's one-stage heads (RetinaHead, FCOSHead, ...) call their ``loss_cls`` as
``loss_cls(cls_score (N, C), labels (N,), label_weights (N,), avg_factor=...)`` where a label equal
to ``C`` is background and a weight of 0 marks an ignored anchor. :class:`MMDetLoss` turns that
call into ours (``crit(logits, one_hot, avg_factor)``), so the same loss objects and gradient
statistics serve both engines. Use it from an mmdet config without changing mmdet::

    custom_imports = dict(imports=["wsi_pipeline.models.mmdet_adapter"], allow_failed_imports=False)
    model = dict(bbox_head=dict(loss_cls=dict(type="WsiEqualizedFocalLoss", num_classes=10,
                                              gamma=2.0, alpha=0.25, scale_factor=8.0)))

Importing this module registers ``WsiBCELoss``, ``WsiFocalLoss``, ``WsiEQLv2Loss``,
``WsiEqualizedFocalLoss``, ``WsiGradLibraLoss`` and ``WsiGradLibraV2Loss`` in
``mmdet.registry.MODELS`` when mmdet is installed (the ``mmdet`` extra: mmdet 3.3 with mmengine and
the pure-Python mmcv-lite). ``tests/test_mmdet.py`` builds each loss through ``MODELS.build`` and
checks value, gradient and statistics against the native call; the label conversion is also tested
without mmdet (``tests/test_losses.py``). An example config for labs with a full mmcv:
``configs/mmdet/retinanet_r50_fpn_gradlibra_v2_tct.py``.

Example:
    >>> import torch
    >>> loss = MMDetLoss("efl", num_classes=3)
    >>> scores = torch.zeros(4, 3, requires_grad=True)
    >>> labels = torch.tensor([0, 2, 3, 3])          # 3 = background
    >>> loss(scores, labels, torch.ones(4), avg_factor=2).shape
    torch.Size([])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .losses import LOSSES, build_loss

REGISTERED_NAMES = {
    "bce": "WsiBCELoss",
    "focal": "WsiFocalLoss",
    "eqlv2": "WsiEQLv2Loss",
    "efl": "WsiEqualizedFocalLoss",
    "gradlibra": "WsiGradLibraLoss",
    "gradlibra_v2": "WsiGradLibraV2Loss",
}


def mmdet_to_one_hot(cls_score: Tensor, labels: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor]:
    """Drop ignored rows (weight 0) and turn class indices (``C`` = background) into one-hot rows."""
    num_classes = cls_score.shape[-1]
    keep = weight > 0 if weight is not None else torch.ones_like(labels, dtype=torch.bool)
    if keep.ndim > 1:  # per-class weights: an anchor counts when any class weight is positive
        keep = keep.any(dim=-1)
    logits, labels = cls_score[keep], labels[keep]
    one_hot = torch.zeros(labels.shape[0], num_classes + 1, dtype=logits.dtype, device=logits.device)
    one_hot[torch.arange(labels.shape[0], device=labels.device), labels.clamp(0, num_classes)] = 1
    return logits, one_hot[:, :num_classes]


class MMDetLoss(nn.Module):
    """One of our losses (by config name) behind mmdet's ``loss_cls`` call signature."""

    def __init__(self, name: str, num_classes: int, loss_weight: float = 1.0, use_sigmoid: bool = True,
                 **params: Any) -> None:
        super().__init__()
        if not use_sigmoid:
            raise ValueError("the wsi_pipeline losses are sigmoid losses (use_sigmoid=True)")
        self.criterion = build_loss(name, num_classes, params)
        self.loss_weight = loss_weight

    def forward(self, cls_score: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None) -> Tensor:
        logits, one_hot = mmdet_to_one_hot(cls_score, labels, weight)
        if avg_factor is None:
            avg_factor = max(1.0, float(one_hot.sum()))
        return self.loss_weight * self.criterion(logits, one_hot, avg_factor=avg_factor)


def register_mmdet_losses() -> list[str]:
    """Register every loss in ``mmdet.registry.MODELS``; returns the registered names."""
    from mmdet.registry import MODELS  # noqa: PLC0415 (optional dependency)

    names = []
    for key, registered in REGISTERED_NAMES.items():
        cls = type(registered, (MMDetLoss,), {
            "__init__": lambda self, num_classes, _key=key, **kw: MMDetLoss.__init__(self, _key, num_classes, **kw),
            "__doc__": f"mmdet wrapper of wsi_pipeline's {LOSSES[key].__name__}.",
        })
        MODELS.register_module(name=registered, module=cls, force=True)
        names.append(registered)
    return names


try:  # registering on import is what mmdet's `custom_imports` expects
    import mmdet.registry  # noqa: F401

    register_mmdet_losses()
except ImportError:
    pass
