"""Sigmoid classification losses for one-stage detectors, free of any detection engine.

Every loss has the same call: ``crit(logits, targets, avg_factor=...)`` with ``logits`` of shape
``(N, C)`` (one row per anchor/location that takes part in the loss; ignored anchors are simply not
passed), ``targets`` the ``(N, C)`` one-hot float tensor (an all-zero row is background; there is no
background channel) and ``avg_factor`` the normaliser (the number of positive anchors). It returns
a scalar: the summed element losses divided by ``avg_factor``.

The long-tail losses (:class:`EqualizedFocalLoss`, :class:`GradLibraLoss`, :class:`EQLv2Loss`)
keep per-class gradient statistics in registered buffers ``pos_grad``, ``neg_grad`` and
``pos_neg`` (shape ``(C,)``), so they travel in ``state_dict`` and in checkpoints. The statistics
are updated by ``loss.backward()``: ``forward`` registers a hook on the (float32) logits tensor that
receives the real gradient of the total loss with respect to the logits. They are accumulated in
float32 even under autocast, and summed across processes when ``torch.distributed`` is initialised.

Example:
    >>> import torch
    >>> crit = EqualizedFocalLoss(num_classes=3)
    >>> logits = torch.zeros(4, 3, requires_grad=True)
    >>> targets = torch.tensor([[1., 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]])
    >>> loss = crit(logits, targets, avg_factor=2)
    >>> loss.backward()
    >>> [round(v, 4) for v in crit.pos_neg.tolist()]  # class 1 has no positives: ratio 0
    [0.1111, 0.0, 0.1111]

See docs/losses.md for the equations, the sources and the deviations from the official code.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry

__all__ = [
    "BCELoss",
    "SigmoidFocalLoss",
    "EqualizedFocalLoss",
    "GradLibraLoss",
    "GradLibraV2Loss",
    "EQLv2Loss",
    "LOSSES",
    "build_loss",
]


def _check_inputs(logits: Tensor, targets: Tensor, num_classes: int) -> None:
    if logits.dim() != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"logits must have shape (N, {num_classes}), got {tuple(logits.shape)}")
    if targets.shape != logits.shape:
        raise ValueError(f"targets must have the shape of logits {tuple(logits.shape)}, got {tuple(targets.shape)}")


def _as_float(tensor: Tensor) -> Tensor:
    """float32 for every dtype except float64 (kept, so gradients can be checked in double)."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def _all_reduce(tensor: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def focal_term(logits: Tensor, targets: Tensor, gamma: Tensor | float) -> Tensor:
    """Element-wise ``(1 - p_t) ** gamma * -log(p_t)`` in float32; ``gamma`` is a constant (no gradient).

    ``-log(p_t)`` is computed stably as BCE-with-logits.

    Example:
        >>> import torch
        >>> round(focal_term(torch.zeros(1, 1), torch.ones(1, 1), 0.0).item(), 4)   # -log(0.5)
        0.6931
    """
    pred = torch.sigmoid(logits)
    pred_t = pred * targets + (1 - pred) * (1 - targets)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return ce * torch.pow(1 - pred_t, gamma)


def alpha_weight(targets: Tensor, alpha: float) -> Tensor | float:
    """``alpha * t + (1 - alpha) * (1 - t)``, or 1 when ``alpha < 0`` (the focal-loss convention)."""
    if alpha < 0:
        return 1.0
    return alpha * targets + (1 - alpha) * (1 - targets)


class BCELoss(nn.Module):
    """Plain sigmoid binary cross-entropy, summed and divided by ``avg_factor``.

    Example:
        >>> import torch
        >>> round(BCELoss(2)(torch.zeros(1, 2), torch.tensor([[1., 0.]]), avg_factor=1).item(), 4)
        1.3863
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits: Tensor, targets: Tensor, avg_factor: float = 1.0) -> Tensor:
        _check_inputs(logits, targets, self.num_classes)
        x = _as_float(logits)
        t = targets.to(x.dtype)
        return F.binary_cross_entropy_with_logits(x, t, reduction="sum") / avg_factor

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


class SigmoidFocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017): ``sum(alpha_t * (1-p_t)^gamma * -log p_t) / avg_factor``.

    Equal to ``torchvision.ops.sigmoid_focal_loss(..., reduction="sum") / avg_factor``.

    Example:
        >>> import torch
        >>> crit = SigmoidFocalLoss(2)
        >>> round(crit(torch.zeros(1, 2), torch.tensor([[1., 0.]]), avg_factor=1).item(), 4)
        0.1733
    """

    def __init__(self, num_classes: int, gamma: float = 2.0, alpha: float = 0.25) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.gamma = float(gamma)
        self.alpha = float(alpha)

    def forward(self, logits: Tensor, targets: Tensor, avg_factor: float = 1.0) -> Tensor:
        _check_inputs(logits, targets, self.num_classes)
        x = _as_float(logits)
        t = targets.to(x.dtype)
        return (alpha_weight(t, self.alpha) * focal_term(x, t, self.gamma)).sum() / avg_factor

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}, alpha={self.alpha}"


class _GradientStatisticsLoss(nn.Module):
    """Base for losses that accumulate per-class positive/negative gradient magnitudes.

    Subclasses implement :meth:`loss` and may override :meth:`gradient_magnitude` (what is added
    to the statistics) and :meth:`update_ratio` (how ``pos_neg`` follows from the sums).
    """

    initial_pos_neg: float = 1.0

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        # The factor the backward pass's gradients are multiplied by (fp16 loss scaling): the
        # training loop sets it to ``GradScaler.get_scale()`` before ``backward()`` so the hook
        # accumulates unscaled gradients. 1 without loss scaling. Not a buffer: it is per step.
        self.grad_scale: float = 1.0
        self.register_buffer("pos_grad", torch.zeros(num_classes, dtype=torch.float32))
        self.register_buffer("neg_grad", torch.zeros(num_classes, dtype=torch.float32))
        self.register_buffer("pos_neg", torch.full((num_classes,), self.initial_pos_neg, dtype=torch.float32))

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Element-wise loss ``(N, C)`` in float32 (before summing and ``avg_factor``)."""
        raise NotImplementedError

    def gradient_magnitude(self, grad: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        """What is accumulated: by default ``|dL_total / dlogits|``, the real gradient."""
        return grad.abs()

    def update_ratio(self) -> None:
        self.pos_neg.copy_(torch.clamp(self.pos_grad / (self.neg_grad + 1e-10), 0, 1))

    def log_statistics(self) -> dict[str, list[float]]:
        """Per-class statistics for the training log: ``pos_neg`` (and ``beta`` where the loss has one)."""
        return {"pos_neg": self.pos_neg.tolist()}

    def forward(self, logits: Tensor, targets: Tensor, avg_factor: float = 1.0) -> Tensor:
        _check_inputs(logits, targets, self.num_classes)
        x = _as_float(logits)  # statistics and loss in float32, even under autocast
        t = targets.detach().to(x.dtype)
        if x.requires_grad and torch.is_grad_enabled():
            x.register_hook(self._make_hook(x.detach(), t))
        return self.loss(x, t).sum() / avg_factor

    def _make_hook(self, logits: Tensor, targets: Tensor):
        def collect(grad: Tensor) -> None:
            self.collect_grad(grad, logits, targets)

        return collect

    @torch.no_grad()
    def collect_grad(self, grad: Tensor, logits: Tensor, targets: Tensor) -> None:
        """Add the gradient magnitudes of one backward pass to ``pos_grad`` / ``neg_grad``.

        ``grad`` is divided by :attr:`grad_scale` first, so fp16 loss scaling does not change the sums.
        """
        grad = grad.to(logits.dtype)
        if self.grad_scale != 1.0:
            grad = grad / self.grad_scale
        magnitude = self.gradient_magnitude(grad, logits, targets).float()
        pos = _all_reduce(torch.sum(magnitude * targets, dim=0))
        neg = _all_reduce(torch.sum(magnitude * (1 - targets), dim=0))
        self.pos_grad += pos.to(self.pos_grad.device)
        self.neg_grad += neg.to(self.neg_grad.device)
        self.update_ratio()


class EqualizedFocalLoss(_GradientStatisticsLoss):
    """Equalized Focal Loss (Li et al., CVPR 2022), as in the official ModelTC EOD code.

    Per class j, with ``g_j = pos_neg_j = clamp(pos_grad_j / (neg_grad_j + 1e-10), 0, 1)``::

        gamma_j = gamma + scale_factor * (1 - g_j)          # focusing factor   (constant)
        w_j     = gamma_j / gamma                            # weighting factor  (constant)
        loss    = sum(alpha_t * w_j * (1 - p_t)^gamma_j * -log(p_t)) / avg_factor

    ``g`` starts at 1, so the loss starts as the sigmoid focal loss. After each backward pass,
    ``|dL_total/dx|`` is added to ``pos_grad`` (target-1 entries) and ``neg_grad`` (target-0
    entries): plain running sums, summed over processes.

    Example:
        >>> import torch
        >>> crit = EqualizedFocalLoss(num_classes=2)
        >>> round(crit(torch.zeros(1, 2), torch.tensor([[1., 0.]]), avg_factor=1).item(), 4)  # focal at start
        0.1733
    """

    def __init__(self, num_classes: int, gamma: float = 2.0, alpha: float = 0.25, scale_factor: float = 8.0) -> None:
        super().__init__(num_classes)
        if gamma <= 0:
            raise ValueError("EqualizedFocalLoss needs gamma > 0 (the weighting factor divides by it)")
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.scale_factor = float(scale_factor)

    def class_gamma(self) -> Tensor:
        """The per-class focusing factor ``gamma_j`` for the current statistics."""
        return self.gamma + self.scale_factor * (1 - self.pos_neg.detach())

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        ff = self.class_gamma().view(1, -1).expand_as(logits)
        wf = ff / self.gamma
        return alpha_weight(targets, self.alpha) * focal_term(logits, targets, ff.detach()) * wf.detach()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}, alpha={self.alpha}, scale_factor={self.scale_factor}"


class GradLibraLoss(_GradientStatisticsLoss):
    """Grad-Libra loss: OUR RECONSTRUCTION of Liu et al., MICCAI 2022 (arXiv 2208.03779).

    The paper's equations and code were not available; this follows its description ("uses
    gradients to calibrate each sample's hardness per category and re-balances positive and
    negative gradients"). With ``p = sigmoid(x)``, ``t`` the one-hot target and, per class j,
    ``g_j = pos_neg_j = clamp(pos_grad_j / (neg_grad_j + 1e-10), 0, 1)`` (1 = balanced)::

        h_ij  = |p_ij - t_ij|                      # sample hardness = |dBCE/dx|, in [0, 1]
        r_j   = 1 - g_j                            # how much class j's positives are out-gradiented
        w+_ij = 1 + pos_scale * r_j                # positives of a suppressed class gain weight
        w-_ij = 1 - neg_scale * r_j * (1 - h_ij)   # only EASY negatives of that class lose weight;
                                                   # hard negatives (h -> 1) keep weight 1
        w_ij  = t * w+ + (1 - t) * w-              # constant (detached)
        loss  = sum(alpha_t * w_ij * h_ij^gamma * -log(p_t)) / avg_factor

    ``h^gamma = (1 - p_t)^gamma`` is the focal modulating factor (it keeps its gradient), so hard
    samples of every class, head or tail, gain weight relative to easy ones, while the per-class
    factors move positive/negative gradient balance towards tail classes. The statistics are the
    real gradients of the total loss (as in EFL).

    It reduces to the sigmoid focal loss (``gamma``, ``alpha``) exactly when
    ``pos_scale = neg_scale = 0`` (any statistics), and at the start of training (``g = 1``) for
    any scales. ``0 <= neg_scale <= 1`` keeps every weight non-negative.

    Example:
        >>> import torch
        >>> crit = GradLibraLoss(num_classes=2)
        >>> round(crit(torch.zeros(1, 2), torch.tensor([[1., 0.]]), avg_factor=1).item(), 4)  # focal at start
        0.1733
    """

    def __init__(
        self,
        num_classes: int,
        gamma: float = 2.0,
        alpha: float = 0.25,
        pos_scale: float = 4.0,
        neg_scale: float = 0.8,
    ) -> None:
        super().__init__(num_classes)
        if not 0.0 <= neg_scale <= 1.0:
            raise ValueError("GradLibraLoss needs 0 <= neg_scale <= 1 (negative weights must stay >= 0)")
        if pos_scale < 0:
            raise ValueError("GradLibraLoss needs pos_scale >= 0")
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.pos_scale = float(pos_scale)
        self.neg_scale = float(neg_scale)

    def sample_weights(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The constant per-element weights ``w_ij`` (no gradient)."""
        with torch.no_grad():
            hardness = (torch.sigmoid(logits) - targets).abs()
            imbalance = (1 - self.pos_neg).view(1, -1)
            pos_w = 1 + self.pos_scale * imbalance
            neg_w = 1 - self.neg_scale * imbalance * (1 - hardness)
            return targets * pos_w + (1 - targets) * neg_w

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        weights = self.sample_weights(logits, targets)
        return alpha_weight(targets, self.alpha) * weights * focal_term(logits, targets, self.gamma)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, gamma={self.gamma}, alpha={self.alpha}, "
            f"pos_scale={self.pos_scale}, neg_scale={self.neg_scale}"
        )


class EQLv2Loss(_GradientStatisticsLoss):
    """Equalization Loss v2 (Tan et al., CVPR 2021), sigmoid form without a background channel.

    Per class j, with ``q_j = pos_neg_j = pos_grad_j / (neg_grad_j + 1e-10)`` (not clamped, as in
    the official code)::

        neg_w_j = 1 / (1 + exp(-gamma * (q_j - mu)))
        pos_w_j = 1 + alpha * (1 - neg_w_j)
        w_ij    = t * pos_w_j + (1 - t) * neg_w_j       # constant (detached)
        loss    = sum(BCE_with_logits(x, t) * w) / avg_factor

    What is accumulated is the gradient of the *weighted* BCE before normalisation,
    ``|sigmoid(x) - t| * w`` (as in the official ``collect_grad``). Deviations from
    tztztztztz/eqlv2: no objectness/background channel; the normaliser is ``avg_factor`` (the
    official divides by the number of samples, a two-stage convention); the statistics are
    updated on ``backward()`` rather than in ``forward()``, so a forward pass without a backward
    pass (validation) leaves them alone; ``pos_neg`` starts at 100 so the first weights are ~1,
    which is what the official code does with its "no statistics yet" branch.

    Example:
        >>> import torch
        >>> crit = EQLv2Loss(num_classes=2)
        >>> round(crit(torch.zeros(1, 2), torch.tensor([[1., 0.]]), avg_factor=1).item(), 4)  # BCE at start
        1.3863
    """

    initial_pos_neg = 100.0

    def __init__(self, num_classes: int, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0) -> None:
        super().__init__(num_classes)
        self.gamma = float(gamma)
        self.mu = float(mu)
        self.alpha = float(alpha)

    def class_weights(self) -> tuple[Tensor, Tensor]:
        """``(pos_w, neg_w)`` per class for the current statistics."""
        neg_w = torch.sigmoid(self.gamma * (self.pos_neg.detach() - self.mu))
        pos_w = 1 + self.alpha * (1 - neg_w)
        return pos_w, neg_w

    def sample_weights(self, targets: Tensor) -> Tensor:
        pos_w, neg_w = self.class_weights()
        return targets * pos_w.view(1, -1) + (1 - targets) * neg_w.view(1, -1)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return bce * self.sample_weights(targets).detach()

    def gradient_magnitude(self, grad: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        return (torch.sigmoid(logits) - targets).abs() * self.sample_weights(targets)

    def update_ratio(self) -> None:
        self.pos_neg.copy_(self.pos_grad / (self.neg_grad + 1e-10))

    def log_statistics(self) -> dict[str, list[float]]:
        return {"pos_neg": self.pos_neg.tolist(), "beta": self.class_weights()[1].tolist()}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}, mu={self.mu}, alpha={self.alpha}"


class GradLibraV2Loss(_GradientStatisticsLoss):
    """Grad-Libra v2: OUR SECOND RECONSTRUCTION of Liu et al., MICCAI 2022 - EQL v2's class balance
    with a per-sample hardness gate, on the focal-modulated BCE. Not the authors' loss.

    With ``p = sigmoid(x)``, ``h = |p - t|`` (detached; the magnitude of dBCE/dx) and, per class j,
    running sums over positives (+) and negatives (-) of the weighted gradient ``G = sum h w``, the
    hardness ``H = sum h`` and the count ``N``::

        r_j    = G+_j / (G-_j + 1e-10)                  (``pos_neg``; not clamped)
        beta_j = sigmoid(mu_scale * (r_j - mu))         (EQL v2's mapping; 1 = balanced)
        hc_ij  = h / (h + H_j / N_j)                    (hardness relative to the class's typical
                                                         positive / negative; 0.5 when N_j = 0)
        w-_ij  = beta_j ** ((1 - hc_ij) ** kappa)       easy negatives of a suppressed class lose
                                                        weight, hard ones (hc -> 1) keep weight 1
        w+_ij  = 1 + lam * (1 - beta_j) * hc_ij ** kappa  hard positives of a suppressed class gain
        loss   = sum(alpha_t * w * (1 - p_t)^gamma * -log(p_t)) / avg_factor      (w detached)

    The statistic is the un-modulated ``h * w`` (as EQL v2), not the focal-modulated real
    gradient: with gamma = 2 easy negatives contribute ~p^3 and the ratio never leaves 1 in short
    runs (issue 11). ``kappa = 0`` is EQL v2's weighting (with ``gamma = 0, alpha = -1`` it is
    :class:`EQLv2Loss` exactly, statistics included); ``beta = 1`` (the start: ``pos_neg`` begins
    at 100) is the focal loss (BCE with ``gamma = 0, alpha = -1``). Statistics are collected on
    ``backward()``; they do not depend on the gradient's scale.

    Example:
        >>> crit = GradLibraV2Loss(num_classes=2)
        >>> round(crit(torch.zeros(1, 2), torch.tensor([[1., 0.]]), avg_factor=1).item(), 4)  # focal at start
        0.1733
    """

    initial_pos_neg = EQLv2Loss.initial_pos_neg  # as in EQLv2: the first weights are ~1

    def __init__(self, num_classes: int, gamma: float = 2.0, alpha: float = 0.25, kappa: float = 1.0, lam: float = 4.0,
                 mu: float = 0.8, mu_scale: float = 12.0) -> None:
        super().__init__(num_classes)
        if kappa < 0 or lam < 0 or mu_scale <= 0:
            raise ValueError("GradLibraV2Loss needs kappa >= 0, lam >= 0 and mu_scale > 0")
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.kappa = float(kappa)
        self.lam = float(lam)
        self.mu = float(mu)
        self.mu_scale = float(mu_scale)
        for name in ("pos_hard", "neg_hard", "pos_count", "neg_count"):
            self.register_buffer(name, torch.zeros(num_classes, dtype=torch.float32))

    def class_beta(self) -> Tensor:
        """``beta_j`` per class for the current statistics (1: balanced, towards 0: suppressed)."""
        return torch.sigmoid(self.mu_scale * (self.pos_neg.detach() - self.mu))

    def sample_weights(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The constant per-element weights ``w_ij`` (no gradient)."""
        with torch.no_grad():
            h = (torch.sigmoid(logits) - targets).abs()
            beta = self.class_beta().to(logits.dtype).view(1, -1)
            typical_pos = (self.pos_hard / self.pos_count.clamp(min=1)).to(logits.dtype).view(1, -1)
            typical_neg = (self.neg_hard / self.neg_count.clamp(min=1)).to(logits.dtype).view(1, -1)
            typical = targets * typical_pos + (1 - targets) * typical_neg
            seen = (targets * (self.pos_count > 0).view(1, -1) + (1 - targets) * (self.neg_count > 0).view(1, -1)) > 0
            hc = torch.where(seen, h / (h + typical + 1e-12), torch.full_like(h, 0.5))
            neg_w = torch.pow(beta, torch.pow(1 - hc, self.kappa))
            pos_w = 1 + self.lam * (1 - beta) * torch.pow(hc, self.kappa)
            return targets * pos_w + (1 - targets) * neg_w

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        weights = self.sample_weights(logits, targets)
        return alpha_weight(targets, self.alpha) * weights * focal_term(logits, targets, self.gamma)

    @torch.no_grad()
    def collect_grad(self, grad: Tensor, logits: Tensor, targets: Tensor) -> None:
        # weights with the statistics the forward pass used (backward has not changed them yet)
        h = (torch.sigmoid(logits) - targets).abs()
        weighted = (h * self.sample_weights(logits, targets)).float()
        h, t = h.float(), targets.float()
        sums = _all_reduce(torch.stack([
            (weighted * t).sum(0), (weighted * (1 - t)).sum(0), (h * t).sum(0), (h * (1 - t)).sum(0),
            t.sum(0), (1 - t).sum(0),
        ]).to(self.pos_grad.device))
        for buffer, value in zip((self.pos_grad, self.neg_grad, self.pos_hard, self.neg_hard, self.pos_count,
                                  self.neg_count), sums):
            buffer += value
        self.pos_neg.copy_(self.pos_grad / (self.neg_grad + 1e-10))

    def log_statistics(self) -> dict[str, list[float]]:
        return {"pos_neg": self.pos_neg.tolist(), "beta": self.class_beta().tolist()}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, gamma={self.gamma}, alpha={self.alpha}, kappa={self.kappa}, "
            f"lam={self.lam}, mu={self.mu}, mu_scale={self.mu_scale}"
        )


LOSSES: Registry[type[nn.Module]] = Registry("loss", {
    "bce": BCELoss,
    "focal": SigmoidFocalLoss,
    "eqlv2": EQLv2Loss,
    "efl": EqualizedFocalLoss,
    "gradlibra": GradLibraLoss,
    "gradlibra_v2": GradLibraV2Loss,
})


def build_loss(name: str, num_classes: int, params: dict[str, Any] | None = None) -> nn.Module:
    """A loss by its config name (``bce``, ``focal``, ``eqlv2``, ``efl``, ``gradlibra``, ``gradlibra_v2``).

    Example:
        >>> build_loss("efl", 10, {"scale_factor": 4.0}).scale_factor
        4.0
    """
    loss = LOSSES[name]  # an unknown name raises UnknownNameError (a KeyError)
    try:
        return loss(num_classes, **(params or {}))
    except TypeError as exc:
        raise ValueError(f"bad parameters for loss {name!r}: {exc}") from None


def prior_bias(prior_prob: float = 0.01) -> float:
    """Initial classification bias ``-log((1 - pi) / pi)`` so every class starts at probability ``pi``.

    Example:
        >>> round(prior_bias(0.01), 3)
        -4.595
    """
    return -math.log((1 - prior_prob) / prior_prob)
