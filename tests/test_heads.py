"""Margin heads against independent NumPy computations and the spec checklists
(../shared/spec/arcface-subcenter.md, magface-adaface.md)."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.heads import build_head
from models.heads.adaface import AdaFace
from models.heads.magface import MagFace, lambda_min

torch.manual_seed(0)
D, C, B = 16, 10, 32


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g) * 5, torch.randint(0, C, (B,), generator=g)


def np_logits(head, emb, labels, target_fn):
    x = emb.detach().numpy().astype(np.float64)
    w = head.weight.detach().numpy().astype(np.float64).reshape(C, head.k, D)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w /= np.linalg.norm(w, axis=2, keepdims=True)
    cos = np.einsum("bd,ckd->bck", x, w).max(axis=2)
    y = labels.numpy()
    out = cos.copy()
    out[np.arange(B), y] = target_fn(cos[np.arange(B), y])
    return head.s * out


@pytest.mark.parametrize("name,kw,fn", [
    ("softmax", {}, lambda c: c),
    ("cosface", {"m": 0.35}, lambda c: c - 0.35),
    ("arcface", {"m": 0.5}, lambda c: np.where(c > np.cos(np.pi - 0.5), np.cos(np.arccos(c) + 0.5), c - 0.5 * np.sin(0.5))),
    ("combined", {"m1": 1.0, "m2": 0.3, "m3": 0.2},
     lambda c: np.where(c > np.cos(np.pi - 0.3), np.cos(np.arccos(c) + 0.3), c - 0.3 * np.sin(0.3)) - 0.2),
])
def test_margin_logits_match_numpy(name, kw, fn):
    head = build_head(name, D, C, **kw)
    emb, y = batch()
    logits, target, _ = head.logits(emb, y)
    np.testing.assert_allclose(logits.detach().numpy(), np_logits(head, emb, y, fn), rtol=1e-4, atol=1e-3)
    assert torch.equal(target, y)


def test_arcface_beyond_pi_is_monotone_with_finite_gradients():
    head = build_head("arcface", D, C, m=0.5)
    theta = torch.linspace(0, math.pi, 2001)
    cos = torch.cos(theta).requires_grad_(True)
    out = head.margin(cos, torch.ones_like(cos))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(cos.grad).all()
    assert (out[1:] <= out[:-1] + 1e-6).all()  # non-increasing in theta over [0, pi]
    assert (cos.grad[1:] > 0).all() and cos.grad[0] >= 0  # pushes the target up (theta = 0: nothing to push)
    past = theta > math.pi - 0.5
    np.testing.assert_allclose(out[past].detach(), (cos[past] - 0.5 * math.sin(0.5)).detach(), atol=1e-6)
    np.testing.assert_allclose(cos.grad[past], 1.0, atol=1e-6)


def test_subcenter_k1_equals_arcface_logits_and_gradients():
    emb, y = batch(1)
    arc, sub = build_head("arcface", D, C), build_head("subcenter", D, C, k=1)
    sub.weight.data.copy_(arc.weight.data)
    e1, e2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    l1, l2 = arc(e1, y), sub(e2, y)
    l1.backward(), l2.backward()
    assert torch.allclose(l1, l2) and torch.allclose(e1.grad, e2.grad) and torch.allclose(arc.weight.grad, sub.weight.grad)


def test_subcenter_max_pools_before_the_margin_on_the_target_only():
    head = build_head("subcenter", D, C, k=3)
    emb, y = batch(2)
    per_sub = head.subcenter_cosines(F.normalize(emb, dim=1))
    pooled = per_sub.amax(2)
    logits, _, _ = head.logits(emb, y)
    other = torch.ones_like(pooled, dtype=torch.bool)
    other[torch.arange(B), y] = False
    assert torch.allclose(logits[other], head.s * pooled[other], atol=1e-5)
    cy = pooled[torch.arange(B), y]
    expect = torch.where(cy > head.th, torch.cos(torch.acos(cy) + 0.5), cy - head.mm)
    assert torch.allclose(logits[torch.arange(B), y], head.s * expect, atol=1e-3)


def test_subcenter_cleaning_finds_injected_label_noise():
    """30% of each identity drawn from other identities: the dominant sub-center holds the clean
    70%, and the noisy samples sit beyond 75 degrees of it (checklist item 3)."""
    g = torch.Generator().manual_seed(3)
    n_id, per, dim = 8, 40, 64
    centers = F.normalize(torch.randn(n_id, dim, generator=g), dim=1)
    labels = torch.arange(n_id).repeat_interleave(per)
    true_id = labels.clone()
    noisy = torch.rand(len(labels), generator=g) < 0.3
    true_id[noisy] = (labels[noisy] + torch.randint(1, n_id, (int(noisy.sum()),), generator=g)) % n_id
    emb = F.normalize(centers[true_id] + 0.15 * torch.randn(len(labels), dim, generator=g), dim=1) * 10
    head = build_head("subcenter", dim, n_id, k=3)
    opt = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9)
    for _ in range(150):
        opt.zero_grad()
        head(emb, labels).backward()
        opt.step()
    rep = head.report(emb, labels)
    keep = head.keep_mask(rep, labels, 75.0)
    precision = (noisy & ~keep).sum() / (~keep).sum()
    recall = (noisy & ~keep).sum() / noisy.sum()
    assert precision >= 0.95 and recall >= 0.9, (precision, recall)
    # within 75 degrees of the dominant sub-centers: (nearly) only clean faces; noise is beyond
    # the threshold or in non-dominant sub-centers
    in_dominant = (rep.subcenter == rep.dominant[labels]) & keep
    assert (~noisy[in_dominant]).float().mean() >= 0.95
    assert ((~keep) | (rep.subcenter != rep.dominant[labels]))[noisy].float().mean() >= 0.9
    single = head.to_single_center(rep.dominant)
    assert single.k == 1 and single(emb[keep], labels[keep]) < head(emb, labels)


# -- MagFace -------------------------------------------------------------------------------
def test_magface_margin_and_regulariser():
    head = MagFace(D, C)
    a = torch.tensor([5.0, 10.0, 60.0, 110.0, 200.0])
    np.testing.assert_allclose(head.m(a).numpy(), [0.45, 0.45, 0.625, 0.8, 0.8], atol=1e-6)
    x = torch.linspace(10, 110, 1001, dtype=torch.float64, requires_grad=True)
    g = head.g(x)
    (dg,) = torch.autograd.grad(g.sum(), x, create_graph=True)
    (d2g,) = torch.autograd.grad(dg.sum(), x)
    assert (d2g > 0).all() and (dg[:-1] < 0).all() and abs(dg[-1].item()) < 1e-9
    assert g.argmin().item() == 1000 and g.min().item() == pytest.approx(2 / 110)


def test_magface_lambda_bound_warns_below_it():
    assert lambda_min(64, 10, 110, 0.45, 0.8) == pytest.approx(22.59, abs=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MagFace(D, C, lambda_g=35)
    with pytest.warns(UserWarning, match="below the convexity bound 22.59"):
        MagFace(D, C, lambda_g=20)


def test_magface_fixed_margin_without_regulariser_is_arcface():
    emb, y = batch(4)
    emb = F.normalize(emb, dim=1) * 50  # inside [l_a, u_a]
    mag = MagFace(D, C, l_m=0.5, u_m=0.5, lambda_g=0.0)
    arc = build_head("arcface", D, C, m=0.5, easy_margin=True)
    arc.weight.data.copy_(mag.weight.data)
    assert torch.allclose(mag(emb, y), arc(emb, y), atol=1e-5)


def magface_per_sample_optimum(theta_deg, neg_cos=0.0, n_neg=85741):
    head = MagFace(D, C)
    a = torch.linspace(10, 110, 10001, dtype=torch.float64)
    cos_y = torch.full_like(a, math.cos(math.radians(theta_deg)))
    target = head.s * head.margin(cos_y, a)
    neg = head.s * neg_cos + math.log(n_neg)
    loss = -target + torch.logaddexp(target, torch.full_like(target, neg)) + head.lambda_g * head.g(a)
    return a[loss.argmin()].item(), loss


def test_magface_optimal_magnitude_rises_as_samples_get_easier():
    """Checklist 6: a* 110 -> 101.7 -> 63.4 -> 24.8 -> 12.4 at 20/30/40/50/60 degrees (negatives at
    cos 0), falls when negatives get closer, and the per-sample loss is convex in a."""
    ref = {20: 110.0, 30: 101.7, 40: 63.4, 50: 24.8, 60: 12.4}
    got = {t: magface_per_sample_optimum(t)[0] for t in ref}
    for t in ref:
        assert got[t] == pytest.approx(ref[t], abs=0.3), got
    assert [got[t] for t in sorted(got)] == sorted(got.values(), reverse=True)
    assert magface_per_sample_optimum(30, neg_cos=0.2)[0] == pytest.approx(54.9, abs=0.3)
    _, loss = magface_per_sample_optimum(40)
    assert (torch.diff(loss, 2) > -1e-9).all()  # convex on the grid


def test_magface_easy_margin_below_zero_cosine():
    head = MagFace(D, C)
    cos = torch.tensor([-0.3, 0.3])
    out = head.margin(cos, torch.tensor([60.0, 60.0]))
    assert out[0] == pytest.approx(-0.3) and out[1] == pytest.approx(math.cos(math.acos(0.3) + 0.625), abs=1e-5)


# -- AdaFace -------------------------------------------------------------------------------
def ada_with_stats(mean=20.0, std=5.0, m=0.4):
    head = AdaFace(D, C, m=m).eval()
    head.batch_mean.fill_(mean)
    head.batch_std.fill_(std)
    return head


@pytest.mark.parametrize("norm,expect", [
    (0.5, lambda th: math.cos(th + 0.4)),              # below mu - 3 sigma: z = -1, ArcFace(0.4)
    (20.0, lambda th: math.cos(th) - 0.4),             # mu: z = 0, CosFace(0.4)
    (40.0, lambda th: math.cos(max(th - 0.4, 1e-3)) - 0.8),  # above mu + 3 sigma: z = +1 (angle clamped at eps)
    (25.0, lambda th: math.cos(th - 0.4 * 0.333) - 0.4 * 1.333),  # mu + sigma: z = 0.333
])
def test_adaface_special_cases(norm, expect):
    head = ada_with_stats()
    for th in (0.3, 1.0, 2.0):
        out = head.margin(torch.tensor([math.cos(th)]), torch.tensor([norm]))
        assert out.item() == pytest.approx(expect(th), abs=1e-4)


def test_adaface_norm_is_detached_and_ema_updates():
    head = AdaFace(D, C)
    assert head.batch_mean.item() == 20 and head.batch_std.item() == 100
    emb, y = batch(5)
    emb.requires_grad_(True)
    norms = emb.norm(dim=1)
    out = head.margin(torch.full((B,), 0.5), norms)  # margin path only
    assert not out.requires_grad  # no gradient reaches the norm through the margin
    m = norms.detach().clamp(0.001, 100)
    assert head.batch_mean.item() == pytest.approx(0.99 * 20 + 0.01 * m.mean().item(), rel=1e-6)
    assert head.batch_std.item() == pytest.approx(0.99 * 100 + 0.01 * m.std().item(), rel=1e-6)
    assert "batch_mean" in head.state_dict()


@pytest.mark.parametrize("norm,expect", [(40.0, [0.25, 0.70, 0.92]), (0.5, [1.60, 1.15, 0.92]), (20.0, [1, 1, 1])])
def test_adaface_gradient_scaling_shape(norm, expect):
    head = ada_with_stats()
    got = []
    for deg in (30, 60, 90):
        cos = torch.tensor([math.cos(math.radians(deg))], requires_grad=True)
        head.margin(cos, torch.tensor([norm])).backward()
        got.append(cos.grad.item())
    np.testing.assert_allclose(got, expect, atol=0.01)


# -- Partial FC ----------------------------------------------------------------------------
def test_partial_fc_keeps_positives_and_matches_the_subset_loss():
    torch.manual_seed(7)
    full = build_head("arcface", D, 100)
    part = build_head("arcface", D, 100, sample_rate=0.2)
    part.weight.data.copy_(full.weight.data)
    emb, y = torch.randn(B, D), torch.randint(0, 100, (B,))
    torch.manual_seed(9)
    classes, target = part.sample_classes(y)
    assert len(classes) == max(20, len(torch.unique(y))) and torch.equal(classes[target], y)
    torch.manual_seed(9)
    logits, t2, _ = part.logits(emb, y)
    assert logits.shape == (B, len(classes)) and torch.equal(t2, target)
    full_logits, _, _ = full.logits(emb, y)
    assert torch.allclose(logits, full_logits[:, classes], atol=1e-4)
    part.eval()  # evaluation scores every class
    assert part.logits(emb, y)[0].shape == (B, 100)
