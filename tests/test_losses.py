"""The long-tail classification losses: closed-form gradients, focal equivalence, statistics."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from wsi_pipeline.models.losses import (
    BCELoss,
    EQLv2Loss,
    EqualizedFocalLoss,
    GradLibraLoss,
    GradLibraV2Loss,
    SigmoidFocalLoss,
    build_loss,
)

C = 5


def make_batch(n: int = 64, num_classes: int = C, seed: int = 0, dtype=torch.float64):
    """Random logits and one-hot targets with about a third background rows."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, num_classes, generator=g, dtype=dtype) * 3
    labels = torch.randint(0, num_classes, (n,), generator=g)
    targets = torch.zeros(n, num_classes, dtype=dtype)
    fg = torch.rand(n, generator=g) < 0.66
    targets[fg, labels[fg]] = 1.0
    return logits, targets


def focal_grad(x, t, gamma, alpha):
    """d/dx of alpha_t (1-p_t)^gamma (-log p_t), gamma constant, written out by hand."""
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    sign = 2 * t - 1
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return alpha_t * sign * (gamma * (1 - p_t) ** gamma * p_t * torch.log(p_t) - (1 - p_t) ** (gamma + 1))


def autograd_grad(crit, x, t, avg):
    x = x.clone().requires_grad_(True)
    crit(x, t, avg_factor=avg).backward()
    return x.grad


def random_ratio(seed: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(C, generator=g)


# ---------------------------------------------------------------- focal-loss equivalence

@pytest.mark.parametrize("avg", [1.0, 7.0])
def test_efl_starts_as_torchvision_focal_loss(avg):
    x, t = make_batch(dtype=torch.float32)
    expected = sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, reduction="sum") / avg
    crit = EqualizedFocalLoss(C)
    assert torch.equal(crit.pos_neg, torch.ones(C))
    torch.testing.assert_close(crit(x, t, avg_factor=avg), expected)
    torch.testing.assert_close(SigmoidFocalLoss(C)(x, t, avg_factor=avg), expected)


def test_efl_with_balanced_statistics_is_focal_loss_for_other_gamma_alpha():
    x, t = make_batch(dtype=torch.float32, seed=3)
    crit = EqualizedFocalLoss(C, gamma=1.5, alpha=0.4, scale_factor=8.0)
    expected = sigmoid_focal_loss(x, t, alpha=0.4, gamma=1.5, reduction="sum") / 3
    torch.testing.assert_close(crit(x, t, avg_factor=3), expected)


def test_gradlibra_reduces_to_focal_loss_with_zero_scales_for_any_statistics():
    x, t = make_batch(dtype=torch.float32, seed=1)
    crit = GradLibraLoss(C, gamma=2.0, alpha=0.25, pos_scale=0.0, neg_scale=0.0)
    crit.pos_neg.copy_(random_ratio(5))
    expected = sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, reduction="sum") / 4
    torch.testing.assert_close(crit(x, t, avg_factor=4), expected)


def test_gradlibra_reduces_to_focal_loss_at_start_for_any_scales():
    x, t = make_batch(dtype=torch.float32, seed=2)
    crit = GradLibraLoss(C, pos_scale=6.0, neg_scale=1.0)
    expected = sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, reduction="sum") / 4
    torch.testing.assert_close(crit(x, t, avg_factor=4), expected)


def test_gradlibra_differs_from_focal_once_classes_are_unbalanced():
    x, t = make_batch(dtype=torch.float32, seed=2)
    crit = GradLibraLoss(C)
    crit.pos_neg.fill_(0.1)
    focal = sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, reduction="none")
    weighted = crit.loss(x, t)
    pos, neg = t > 0, t == 0
    assert torch.all(weighted[pos] > focal[pos])  # positives of suppressed classes up-weighted
    assert torch.all(weighted[neg] <= focal[neg] + 1e-7)  # negatives never up-weighted


def test_eqlv2_starts_as_plain_bce():
    x, t = make_batch(dtype=torch.float32)
    crit = EQLv2Loss(C)
    torch.testing.assert_close(crit(x, t, avg_factor=2), BCELoss(C)(x, t, avg_factor=2), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- closed-form gradients

def test_efl_gradient_matches_closed_form_with_fixed_statistics():
    x, t = make_batch()
    crit = EqualizedFocalLoss(C, gamma=2.0, alpha=0.25, scale_factor=8.0)
    crit.pos_neg.copy_(random_ratio(0))
    gamma_j = (2.0 + 8.0 * (1 - crit.pos_neg.double())).view(1, -1)
    expected = focal_grad(x, t, gamma_j, 0.25) * (gamma_j / 2.0) / 3.0
    torch.testing.assert_close(autograd_grad(crit, x, t, 3.0), expected)


def test_gradlibra_gradient_matches_closed_form_with_fixed_statistics():
    x, t = make_batch(seed=4)
    crit = GradLibraLoss(C, gamma=2.0, alpha=0.25, pos_scale=4.0, neg_scale=0.8)
    crit.pos_neg.copy_(random_ratio(1))
    r = (1 - crit.pos_neg.double()).view(1, -1)
    h = (torch.sigmoid(x) - t).abs()
    w = t * (1 + 4.0 * r) + (1 - t) * (1 - 0.8 * r * (1 - h))
    expected = w * focal_grad(x, t, 2.0, 0.25) / 5.0
    torch.testing.assert_close(autograd_grad(crit, x, t, 5.0), expected)


def test_eqlv2_gradient_matches_closed_form_with_fixed_statistics():
    x, t = make_batch(seed=5)
    crit = EQLv2Loss(C, gamma=12.0, mu=0.8, alpha=4.0)
    crit.pos_neg.copy_(random_ratio(2, 0.0, 1.6))
    neg_w = 1 / (1 + torch.exp(-12.0 * (crit.pos_neg.double() - 0.8)))
    pos_w = 1 + 4.0 * (1 - neg_w)
    w = t * pos_w + (1 - t) * neg_w
    expected = w * (torch.sigmoid(x) - t) / 2.0
    torch.testing.assert_close(autograd_grad(crit, x, t, 2.0), expected)


@pytest.mark.parametrize("crit", [SigmoidFocalLoss(C), BCELoss(C)])
def test_baseline_gradients_match_closed_form(crit):
    x, t = make_batch(seed=6)
    if isinstance(crit, BCELoss):
        expected = (torch.sigmoid(x) - t) / 2.0
    else:
        expected = focal_grad(x, t, 2.0, 0.25) / 2.0
    torch.testing.assert_close(autograd_grad(crit, x, t, 2.0), expected)


# ---------------------------------------------------------------- statistics

@pytest.mark.parametrize("cls", [EqualizedFocalLoss, GradLibraLoss])
def test_backward_adds_real_gradient_of_total_loss(cls):
    crit = cls(C)
    x, t = make_batch(dtype=torch.float32, seed=7)
    expected_pos = torch.zeros(C)
    expected_neg = torch.zeros(C)
    for _ in range(2):
        leaf = x.clone().requires_grad_(True)
        other = (leaf.detach() ** 2).sum()  # a term without gradient to the logits changes nothing
        total = 3.0 * crit(leaf, t, avg_factor=4) + other
        # the hand computation: the gradient of the *total* loss w.r.t. the logits, before backward
        # changes the statistics the loss was computed with
        ref = cls(C)
        ref.load_state_dict(crit.state_dict())
        ref_leaf = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(3.0 * _no_hook(ref, ref_leaf, t, 4), [ref_leaf])
        total.backward()
        torch.testing.assert_close(leaf.grad, grad)
        expected_pos += (grad.abs() * t).sum(0)
        expected_neg += (grad.abs() * (1 - t)).sum(0)
        torch.testing.assert_close(crit.pos_grad, expected_pos)
        torch.testing.assert_close(crit.neg_grad, expected_neg)
        torch.testing.assert_close(crit.pos_neg, torch.clamp(expected_pos / (expected_neg + 1e-10), 0, 1))


def _no_hook(crit, x, t, avg):
    """The loss value without registering the statistics hook."""
    return crit.loss(x, t).sum() / avg


def test_efl_statistics_by_hand_for_two_anchors():
    # one positive of class 0 and one background row, logits 0: p = 0.5 everywhere
    crit = EqualizedFocalLoss(2)
    x = torch.zeros(2, 2, requires_grad=True)
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    crit(x, t, avg_factor=1).backward()
    # focal gradient at p = 0.5, gamma 2: positive alpha*(-(2*0.25*0.5*ln 0.5) - 0.125) ... by hand:
    pos = 0.25 * (0.125 + 2 * 0.25 * 0.5 * -torch.log(torch.tensor(0.5)))  # |grad| of the positive
    neg = 0.75 * (0.125 + 2 * 0.25 * 0.5 * -torch.log(torch.tensor(0.5)))  # |grad| of each negative
    torch.testing.assert_close(crit.pos_grad, torch.stack([pos, torch.tensor(0.0)]))
    torch.testing.assert_close(crit.neg_grad, torch.stack([neg, 2 * neg]))
    torch.testing.assert_close(crit.pos_neg, torch.tensor([1 / 3, 0.0]))


def test_eqlv2_statistics_use_weighted_bce_gradient_without_normaliser():
    crit = EQLv2Loss(C)
    x, t = make_batch(dtype=torch.float32, seed=8)
    w = crit.sample_weights(t)
    mag = (torch.sigmoid(x) - t).abs() * w
    crit(x.clone().requires_grad_(True), t, avg_factor=9).backward()
    torch.testing.assert_close(crit.pos_grad, (mag * t).sum(0))
    torch.testing.assert_close(crit.neg_grad, (mag * (1 - t)).sum(0))
    torch.testing.assert_close(crit.pos_neg, crit.pos_grad / (crit.neg_grad + 1e-10))


@pytest.mark.parametrize("cls", [EqualizedFocalLoss, GradLibraLoss, EQLv2Loss])
def test_forward_without_backward_leaves_statistics_alone(cls):
    crit = cls(C)
    before = {k: v.clone() for k, v in crit.state_dict().items()}
    x, t = make_batch(dtype=torch.float32)
    crit(x.clone().requires_grad_(True), t, avg_factor=1)  # no backward
    with torch.no_grad():
        crit(x, t, avg_factor=1)
    for k, v in crit.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("cls", [EqualizedFocalLoss, GradLibraLoss, EQLv2Loss])
def test_buffers_in_state_dict_and_restored(cls):
    crit = cls(C)
    x, t = make_batch(dtype=torch.float32)
    crit(x.clone().requires_grad_(True), t, avg_factor=3).backward()
    state = crit.state_dict()
    assert set(state) == {"pos_grad", "neg_grad", "pos_neg"}
    assert all(v.shape == (C,) and v.dtype == torch.float32 for v in state.values())
    fresh = cls(C)
    assert not torch.equal(fresh.pos_grad, crit.pos_grad)
    fresh.load_state_dict(state)
    for name in state:
        assert torch.equal(getattr(fresh, name), getattr(crit, name))
    torch.testing.assert_close(fresh(x, t, avg_factor=3), crit(x, t, avg_factor=3))


def test_background_only_batch_updates_negatives_only():
    crit = EqualizedFocalLoss(C)
    x = torch.randn(10, C, requires_grad=True)
    crit(x, torch.zeros(10, C), avg_factor=1).backward()
    assert torch.all(crit.pos_grad == 0) and torch.all(crit.neg_grad > 0)
    assert torch.all(crit.pos_neg == 0)


# ---------------------------------------------------------------- mixed precision

@pytest.mark.parametrize("cls", [EqualizedFocalLoss, GradLibraLoss])
def test_bf16_autocast_keeps_statistics_float32_and_close(cls):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, C)
    feats = torch.randn(256, 16)
    _, t = make_batch(256, dtype=torch.float32, seed=9)
    ref, amp = cls(C), cls(C)
    ref(layer(feats), t, avg_factor=40).backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(feats)
        assert logits.dtype == torch.bfloat16
        loss = amp(logits, t, avg_factor=40)
    assert loss.dtype == torch.float32
    loss.backward()
    for name in ("pos_grad", "neg_grad", "pos_neg"):
        value = getattr(amp, name)
        assert value.dtype == torch.float32 and torch.isfinite(value).all()
        torch.testing.assert_close(value, getattr(ref, name), rtol=0.05, atol=1e-6)


def test_float16_logits_with_tiny_gradients_do_not_underflow_statistics():
    # 20,000 anchors normalised by 20,000: per-element gradients ~1e-6 to 1e-9, below float16's range
    x32, t = make_batch(20000, dtype=torch.float32, seed=10)
    ref, half = EqualizedFocalLoss(C), EqualizedFocalLoss(C)
    ref(x32.clone().requires_grad_(True), t, avg_factor=20000).backward()
    half(x32.half().requires_grad_(True), t.half(), avg_factor=20000).backward()
    assert torch.all(half.neg_grad > 0)
    torch.testing.assert_close(half.pos_grad, ref.pos_grad, rtol=0.02, atol=0)
    torch.testing.assert_close(half.neg_grad, ref.neg_grad, rtol=0.02, atol=0)


# ---------------------------------------------------------------- interface

def test_build_loss_by_name_and_bad_input():
    assert isinstance(build_loss("gradlibra", C), GradLibraLoss)
    with pytest.raises(KeyError):
        build_loss("nope", C)
    with pytest.raises(ValueError):
        build_loss("efl", C, {"bogus": 1})
    with pytest.raises(ValueError):
        EqualizedFocalLoss(C)(torch.zeros(2, C + 1), torch.zeros(2, C + 1))
    with pytest.raises(ValueError):
        GradLibraLoss(C, neg_scale=1.5)


def test_mmdet_adapter_converts_labels_and_matches_our_call():
    from wsi_pipeline.models.losses import EqualizedFocalLoss
    from wsi_pipeline.models.mmdet_adapter import MMDetLoss, mmdet_to_one_hot

    torch.manual_seed(0)
    scores = torch.randn(6, 3)
    labels = torch.tensor([0, 2, 3, 1, 3, 0])  # 3 = background in mmdet
    weights = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0])  # row 3 ignored
    logits, one_hot = mmdet_to_one_hot(scores, labels, weights)
    assert logits.shape == (5, 3)
    assert one_hot.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0], [1, 0, 0]]

    wrapped = MMDetLoss("efl", num_classes=3, loss_weight=2.0)
    ours = EqualizedFocalLoss(3)
    a = scores.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    la = wrapped(a, labels, weights, avg_factor=3)
    lb = ours(b, one_hot, avg_factor=3)
    assert torch.allclose(la, 2.0 * lb)
    la.backward()
    (2.0 * lb).backward()
    # the gradient statistics see the same gradients through the adapter
    assert torch.allclose(wrapped.criterion.pos_grad, ours.pos_grad)
    assert torch.allclose(wrapped.criterion.neg_grad, ours.neg_grad)
    assert torch.all(a.grad[3] == 0)  # the ignored anchor gets no gradient


# ---------------------------------------------------------------- Grad-Libra v2

def _train_steps(crit, steps: int = 3, n: int = 64, seed: int = 0, scale: float = 1.0):
    """Backward passes on random batches; returns the losses (statistics change between steps)."""
    values = []
    for k in range(steps):
        x, t = make_batch(n=n, seed=seed + k, dtype=torch.float32)
        leaf = x.requires_grad_(True)
        loss = crit(leaf, t, avg_factor=5.0)
        (scale * loss).backward()
        values.append(loss.detach())
    return values


def test_gradlibra_v2_with_kappa_zero_is_eqlv2_loss_and_statistics():
    v2 = GradLibraV2Loss(C, gamma=0.0, alpha=-1.0, kappa=0.0, lam=4.0, mu=0.8, mu_scale=12.0)
    eql = EQLv2Loss(C, gamma=12.0, mu=0.8, alpha=4.0)
    for a, b in zip(_train_steps(v2, steps=4), _train_steps(eql, steps=4)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(v2.pos_grad, eql.pos_grad)
    torch.testing.assert_close(v2.neg_grad, eql.neg_grad)
    assert not torch.allclose(v2.pos_neg, torch.full((C,), 100.0))  # the statistics did move
    # kappa = 0 gives EQL v2's class weights whatever the hardness, also with the focal modulation
    focal_v2 = GradLibraV2Loss(C, kappa=0.0)
    focal_v2.load_state_dict(v2.state_dict())
    x, t = make_batch(seed=3, dtype=torch.float32)
    torch.testing.assert_close(focal_v2.sample_weights(x, t), eql.sample_weights(t))


@pytest.mark.parametrize("kappa", [0.0, 1.0, 3.0])
def test_gradlibra_v2_with_beta_one_is_bce_or_focal(kappa):
    x, t = make_batch(dtype=torch.float32, seed=5)
    bce = GradLibraV2Loss(C, gamma=0.0, alpha=-1.0, kappa=kappa)  # beta = 1 at the start (pos_neg 100)
    torch.testing.assert_close(bce.class_beta(), torch.ones(C))
    torch.testing.assert_close(bce(x, t, avg_factor=3.0), BCELoss(C)(x, t, avg_factor=3.0))
    focal = GradLibraV2Loss(C, gamma=2.0, alpha=0.25, kappa=kappa)
    # beta = 1 also with hardness statistics present (after steps), when the ratio is balanced
    _train_steps(focal, steps=2)
    focal.pos_neg.fill_(100.0)
    torch.testing.assert_close(focal(x, t, avg_factor=3.0), SigmoidFocalLoss(C)(x, t, avg_factor=3.0))
    xg = x.clone().requires_grad_(True)
    focal.loss(xg, t).sum().backward()
    xf = x.clone().requires_grad_(True)
    SigmoidFocalLoss(C)(xf, t).backward()
    torch.testing.assert_close(xg.grad, xf.grad)


def test_gradlibra_v2_hardness_gate_keeps_hard_negatives_and_boosts_hard_positives():
    crit = GradLibraV2Loss(2, kappa=1.0)
    crit.pos_neg.fill_(0.2)  # suppressed classes: beta ~ 7e-4
    crit.pos_hard.fill_(3.0), crit.pos_count.fill_(10.0)  # typical positive h = 0.3
    crit.neg_hard.fill_(1.0), crit.neg_count.fill_(100.0)  # typical negative h = 0.01
    x = torch.tensor([[-8.0, 0.0], [4.0, -4.0]])  # negatives: easy, hard; positive: easy, hard
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    w = crit.sample_weights(x, t)
    beta = float(crit.class_beta()[0])
    assert w[0, 0] < 3 * beta ** 0.5 and w[0, 1] > 0.8  # easy negative suppressed, hard one (hc 0.98) ~kept
    assert 1 < w[1, 0] < w[1, 1] <= 1 + crit.lam  # hard positive gains more than easy one


def _longtail_stream(crit, steps: int = 40, anchors: int = 3000, seed: int = 0):
    """A dense detector's logit stream: prior 0.001, a learnable per-class bias, 6 classes with
    positives per image falling 300:1 from head to tail, and a few hard (high-score) negatives."""
    g = torch.Generator().manual_seed(seed)
    freq = torch.tensor([0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001])
    num_classes = len(freq)
    bias = torch.full((num_classes,), -6.9, requires_grad=True)
    opt = torch.optim.SGD([bias], lr=0.01)
    for _ in range(steps):
        labels = torch.multinomial(torch.cat([freq, 1 - freq.sum().view(1)]), anchors, replacement=True, generator=g)
        t = torch.nn.functional.one_hot(labels, num_classes + 1)[:, :num_classes].float()
        hard = (torch.rand(anchors, num_classes, generator=g) < 0.01).float()
        x = bias + torch.randn(anchors, num_classes, generator=g) + 7.0 * t + 5.0 * hard * (1 - t)
        loss = crit(x, t, avg_factor=max(1.0, float(t.sum())))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return crit


def test_gradlibra_v2_statistics_move_away_from_neutral_on_a_long_tailed_stream():
    crit = _longtail_stream(GradLibraV2Loss(6))
    beta, ratio = crit.class_beta(), crit.pos_neg
    print("gradlibra_v2 pos_neg", [round(v, 4) for v in ratio.tolist()], "beta", [round(v, 4) for v in beta.tolist()])
    assert ratio[-1] < 0.2 and beta[-1] < 0.05  # the tail class is far from neutral (1)
    assert beta[0] > beta[-1] and ratio[0] > ratio[-1]
    assert torch.all(crit.pos_count > 0) and torch.all(crit.neg_count > 0)


# ---------------------------------------------------------------- fp16 loss scaling

@pytest.mark.parametrize("name", ["efl", "gradlibra", "gradlibra_v2", "eqlv2"])
def test_statistics_are_unscaled_under_loss_scaling(name):
    """A GradScaler with scale 1024 (CPU: the same arithmetic as CUDA fp16) leaves the statistics
    equal to the unscaled run when the loss is told the scale, as the training loop does."""
    from wsi_pipeline.models.training import scaled_backward

    plain, scaled, untold = build_loss(name, C), build_loss(name, C), build_loss(name, C)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    off = torch.amp.GradScaler("cpu", enabled=False)
    for k in range(3):
        x, t = make_batch(seed=20 + k, dtype=torch.float32)
        scaled_backward(plain(x.clone().requires_grad_(True), t, avg_factor=4.0), off, plain)
        scaled_backward(scaled(x.clone().requires_grad_(True), t, avg_factor=4.0), scaler, scaled)
        (1024.0 * untold(x.clone().requires_grad_(True), t, avg_factor=4.0)).backward()
    assert scaled.grad_scale == 1024.0 and plain.grad_scale == 1.0
    for buf in ("pos_grad", "neg_grad", "pos_neg"):
        torch.testing.assert_close(getattr(scaled, buf), getattr(plain, buf), rtol=1e-5, atol=1e-6)
    if name in ("efl", "gradlibra"):  # without the scale the hook would see 1024x gradients
        torch.testing.assert_close(untold.pos_grad, 1024.0 * plain.pos_grad, rtol=1e-4, atol=1e-4)
