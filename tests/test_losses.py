"""Tests of the training losses and their registry."""

from __future__ import annotations

import math

import ot as pot
import pytest
import torch
import torch.nn.functional as F

from atr_demo.errors import ConfigError
from atr_demo.losses import (
    LOSSES,
    CACLLoss,
    InfoNCELoss,
    KCLLoss,
    MLTMLoss,
    PartialMLTMLoss,
    SoftLabelContrastiveLoss,
    TripletLoss,
    build_loss,
    target_plan,
)
from atr_demo.metric import MahalanobisMetric


def _pairs(b: int = 12, d: int = 16, noise: float = 0.1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    audio = F.normalize(torch.randn(b, d, generator=gen, dtype=dtype), dim=-1)
    text = F.normalize(audio + noise * torch.randn(b, d, generator=gen, dtype=dtype), dim=-1)
    return audio, text


PAIRWISE = sorted(n for n, cls in LOSSES.items() if not getattr(cls, "multilingual", False))


@pytest.mark.parametrize("name", PAIRWISE)
def test_aligned_beats_shuffled(name: str) -> None:
    audio, text = _pairs()
    metric = MahalanobisMetric(16)
    loss = build_loss(name)
    aligned = loss(audio, text, metric)
    shuffled = loss(audio, text[torch.roll(torch.arange(12), 1)], metric)
    assert torch.isfinite(aligned) and torch.isfinite(shuffled)
    assert aligned < shuffled


def test_mltm_equals_hand_computed_with_pot_plan() -> None:
    audio, text = _pairs(noise=0.6, dtype=torch.float64)
    metric = MahalanobisMetric(16).double()
    eps = 0.05
    loss = MLTMLoss(eps=eps, max_iter=5000, tol=1e-12)(audio, text, metric)
    cost = torch.cdist(audio, text)
    unif = torch.full((12,), 1 / 12, dtype=torch.float64)
    plan = pot.sinkhorn(unif, unif, cost, eps, method="sinkhorn_log", numItermax=20000, stopThr=1e-12)
    expected = -torch.log(12 * plan.diagonal()).mean()
    assert expected > 0.1  # a non-trivial plan
    assert abs(loss.item() - expected.item()) < 1e-8


def test_mltm_gradients_reach_embeddings_and_metric() -> None:
    audio, text = _pairs()
    audio.requires_grad_(True)
    metric = MahalanobisMetric(16)
    MLTMLoss(eps=0.05)(audio, text, metric).backward()
    assert torch.isfinite(audio.grad).all() and audio.grad.abs().sum() > 0
    assert torch.isfinite(metric.M.grad).all() and metric.M.grad.abs().sum() > 0


def test_partial_loss_target_and_value() -> None:
    # noise 0.6: a non-trivial plan on which both solvers reach tol 1e-12 in at most a few hundred
    # iterations (a near-permutation plan, as with noise 0.1, needs over 10^4 at this eps)
    audio, text = _pairs(noise=0.6, dtype=torch.float64)
    metric = MahalanobisMetric(16).double()
    s, eps = 0.9, 0.1
    loss = PartialMLTMLoss(eps=eps, mass=s, max_iter=2000, tol=1e-12)(audio, text, metric)
    unif = torch.full((12,), 1 / 12, dtype=torch.float64)
    plan = pot.partial.entropic_partial_wasserstein(unif, unif, torch.cdist(audio, text), eps, m=s,
                                                    numItermax=1000)
    expected = -(s / 12) * torch.log(12 * plan.diagonal() / s).sum()
    assert expected > 0.1  # a non-trivial plan
    assert abs(loss.item() - expected.item()) < 1e-10
    # s = 1 is the balanced m-LTM loss
    full = PartialMLTMLoss(eps=eps, mass=1.0, max_iter=2000, tol=1e-12)(audio, text, metric)
    balanced = MLTMLoss(eps=eps, max_iter=2000, tol=1e-12)(audio, text, metric)
    assert abs(full.item() - balanced.item()) < 1e-10


def test_target_plan_blocks() -> None:
    groups = torch.tensor([0, 0, 1, 2, 2, 2])
    t = target_plan(6, groups, dtype=torch.float64)
    assert torch.allclose(t.sum(0), torch.full((6,), 1 / 6, dtype=torch.float64))
    assert torch.allclose(t.sum(1), torch.full((6,), 1 / 6, dtype=torch.float64))
    assert t[0, 1] == pytest.approx(1 / 12) and t[3, 5] == pytest.approx(1 / 18) and t[0, 2] == 0
    assert torch.equal(target_plan(4), torch.eye(4) / 4)


def test_group_ids_give_block_target_in_mltm() -> None:
    audio, text = _pairs(b=6, dtype=torch.float64)
    metric = MahalanobisMetric(16).double()
    groups = torch.tensor([0, 0, 1, 2, 2, 2])
    loss_fn = MLTMLoss(eps=0.1, max_iter=5000, tol=1e-12)
    log_plan = loss_fn.plan(metric(audio, text))
    t = target_plan(6, groups, dtype=torch.float64)
    mask = t > 0
    expected = (t[mask] * (t[mask].log() - log_plan[mask])).sum()
    got = loss_fn(audio, text, metric, group_ids=groups)
    assert abs(got.item() - expected.item()) < 1e-10
    # distinct group per item == no groups
    assert torch.allclose(loss_fn(audio, text, metric, torch.arange(6)), loss_fn(audio, text, metric))
    assert not torch.allclose(got, loss_fn(audio, text, metric))


def test_group_ids_in_baselines() -> None:
    audio, text = _pairs(b=4)
    groups = torch.tensor([0, 0, 1, 1])
    # InfoNCE with groups = soft-target cross-entropy over the group
    loss = InfoNCELoss(init_temperature=0.1, learnable=False)
    logits = (audio @ text.T) / 0.1
    soft = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])
    expected = 0.5 * (-(soft * logits.log_softmax(1)).sum(1).mean()
                      - (soft * logits.T.log_softmax(1)).sum(1).mean())
    assert torch.allclose(loss(audio, text, None, groups), expected, atol=1e-6)
    # Triplet: same-group items are not negatives
    trip = TripletLoss(margin=0.2)
    sim = audio @ text.T
    neg = sim.masked_fill(soft > 0, float("-inf"))
    pos = sim.diagonal()
    exp_t = ((0.2 - pos + neg.amax(1)).clamp_min(0) + (0.2 - pos + neg.amax(0)).clamp_min(0)).mean()
    assert torch.allclose(trip(audio, text, None, groups), exp_t)


def test_infonce_temperature_is_learnable_and_clamped() -> None:
    loss = InfoNCELoss(init_temperature=0.07)
    assert loss.logit_scale.requires_grad
    assert loss.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    audio, text = _pairs()
    with torch.no_grad():
        loss.logit_scale.fill_(10.0)  # beyond log(100)
    clamped = loss(audio, text)
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(100.0))
    assert torch.allclose(clamped, loss(audio, text))


def test_triplet_zero_when_margin_satisfied() -> None:
    audio = torch.eye(4)
    assert TripletLoss(margin=0.2)(audio, audio.clone()).item() == 0.0
    assert TripletLoss(margin=1.5)(audio, audio.clone()).item() == pytest.approx(2 * 0.5)


def test_registry_and_errors() -> None:
    assert set(LOSSES) == {"mltm", "mltm_partial", "infonce", "triplet", "softlabel", "kcl", "cacl"}
    assert isinstance(build_loss("mltm", eps=0.03), MLTMLoss)
    assert build_loss("mltm_partial", mass=0.9).mass == 0.9
    with pytest.raises(ConfigError, match="infonce.*mltm.*mltm_partial.*triplet"):
        build_loss("clip")
    with pytest.raises(ConfigError, match="temperature"):
        build_loss("triplet", temperature=0.1)
    with pytest.raises(ConfigError, match="eps"):
        build_loss("mltm", eps=-1.0)


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        MLTMLoss()(torch.randn(3, 4), torch.randn(2, 4), MahalanobisMetric(4))
    with pytest.raises(ValueError):
        TripletLoss()(torch.randn(3, 4), torch.randn(3, 4), None, torch.tensor([0, 1]))


# -- soft-label contrastive -------------------------------------------------------------------

def test_softlabel_reduces_to_infonce_for_one_hot_targets() -> None:
    audio, text = _pairs()
    soft = SoftLabelContrastiveLoss(target_temperature=1e-4)
    hard = InfoNCELoss()
    # caption similarity with a clear maximum on the diagonal → one-hot targets at tiny τ_q
    sim = torch.eye(12) * 0.5 + 0.1 * torch.rand(12, 12)
    assert torch.allclose(soft(audio, text, text_similarity=sim), hard(audio, text), atol=1e-5)


def test_softlabel_targets_share_mass_between_similar_captions() -> None:
    loss = SoftLabelContrastiveLoss(target_temperature=0.1)
    sim = torch.tensor([[1.0, 0.95, 0.0], [0.95, 1.0, 0.0], [0.0, 0.0, 1.0]])
    q = loss.targets(sim)
    assert torch.allclose(q.sum(dim=1), torch.ones(3))
    assert q[0, 1] > 0.3 and q[2, 2] > 0.99  # near-duplicates share; a distinct caption stays one-hot
    # near-duplicate captions ("footsteps on gravel" / "on stone"): when the audio space already
    # mirrors the caption similarity (audio = text, τ_q = τ), the soft targets equal the model's
    # softmax and the soft loss is stationary, while InfoNCE still pushes the near-duplicate apart
    gen = torch.Generator().manual_seed(3)
    base = F.normalize(torch.randn(3, 16, generator=gen), dim=-1)
    text = F.normalize(torch.stack([base[0], base[0] + 0.3 * base[1], base[2]]), dim=-1)
    grads = []
    for fn in (SoftLabelContrastiveLoss(target_temperature=0.07, init_temperature=0.07), InfoNCELoss(0.07)):
        audio = text.clone().requires_grad_(True)
        if isinstance(fn, SoftLabelContrastiveLoss):
            value = fn(audio, text, text_similarity=text @ text.T)
        else:
            value = fn(audio, text)
        value.backward()
        grads.append(audio.grad.norm())
    assert grads[0] < 1e-3 * grads[1] and grads[1] > 0.1


def test_softlabel_gradients_and_shape_check() -> None:
    audio, text = _pairs()
    audio.requires_grad_(True)
    loss = SoftLabelContrastiveLoss()
    value = loss(audio, text)  # falls back to the joint-space text similarity
    value.backward()
    assert torch.isfinite(value) and audio.grad is not None and torch.isfinite(audio.grad).all()
    with pytest.raises(ValueError, match="text_similarity"):
        loss(audio, text, text_similarity=torch.zeros(3, 3))
    with pytest.raises(ConfigError, match="target_temperature"):
        build_loss("softlabel", target_temperature=0.0)


# -- multilingual: KCL and CACL -----------------------------------------------------------------

def _languages(k: int = 3, b: int = 12, d: int = 16, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    audio, _ = _pairs(b, d)
    gen = torch.Generator().manual_seed(1)
    texts = torch.stack([F.normalize(audio + noise * torch.randn(b, d, generator=gen), dim=-1) for _ in range(k)])
    return audio, texts


@pytest.mark.parametrize("base", ["infonce", "mltm"])
def test_kcl_is_the_mean_of_per_language_terms(base: str) -> None:
    audio, texts = _languages()
    metric = MahalanobisMetric(16)
    kcl = KCLLoss(base=base)
    expected = torch.stack([kcl.base(audio, texts[k], metric) for k in range(3)]).mean()
    assert torch.allclose(kcl(audio, texts, metric), expected)
    assert torch.allclose(kcl(audio, list(texts), metric), expected)  # a list of (b, d) works too


@pytest.mark.parametrize("base", ["infonce", "mltm"])
def test_cacl_has_three_terms_and_prefers_aligned_languages(base: str) -> None:
    audio, texts = _languages(k=2)
    metric = MahalanobisMetric(16)
    cacl = CACLLoss(base=base)
    b = cacl.base
    expected = (b(audio, texts[0], metric) + b(audio, texts[1], metric) + b(texts[0], texts[1], metric)) / 3
    assert torch.allclose(cacl(audio, texts, metric), expected)
    shuffled = torch.stack([texts[0], texts[1][torch.roll(torch.arange(12), 1)]])
    assert cacl(audio, texts, metric) < cacl(audio, shuffled, metric)
    with pytest.raises(ValueError, match="K = 3"):
        cacl(audio, torch.cat([texts, texts[:1]]), metric)


@pytest.mark.parametrize("name", ["kcl", "cacl"])
def test_multilingual_losses_registry_and_gradients(name: str) -> None:
    audio, texts = _languages(k=2)
    audio.requires_grad_(True)
    loss = build_loss(name, base="mltm", eps=0.1)
    assert getattr(loss, "multilingual", False) and isinstance(loss.base, MLTMLoss) and loss.base.eps == 0.1
    value = loss(audio, texts, MahalanobisMetric(16))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(audio.grad).all() and audio.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="base"):
        build_loss(name, base="triplet")
    with pytest.raises(ValueError, match=r"\(K, b, d\)"):
        loss(audio, texts[0], MahalanobisMetric(16))
