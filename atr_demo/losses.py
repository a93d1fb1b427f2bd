"""Training losses of the joint embedding, selected by name from a small registry.

Every loss is an ``nn.Module`` with the same call::

    loss(audio (b, d), text (b, d), metric, group_ids=None) -> scalar

``audio`` and ``text`` are L2-normalised embeddings of b matched pairs (row i of each is a
pair). ``group_ids`` (b,) optionally marks pairs that share a caption group (several clips
with the same caption): the target then is block-uniform over each group instead of the
identity, so duplicates are not pushed apart. ``T`` below is that target with rows summing to
1: T_ij = [g_i = g_j] / |{k : g_k = g_i}| (the identity when no ids are given).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atr_demo.errors import ConfigError
from atr_demo.metric import MahalanobisMetric
from atr_demo.ot import partial_sinkhorn_log, sinkhorn_log


def target_matrix(b: int, group_ids: Tensor | None, device: torch.device) -> Tensor:
    """(b, b) row-stochastic target T: identity, or block-uniform over equal ``group_ids``."""
    if group_ids is None:
        return torch.eye(b, device=device)
    same = (group_ids.view(-1, 1) == group_ids.view(1, -1)).float().to(device)
    return same / same.sum(dim=1, keepdim=True)


class MLTMLoss(nn.Module):
    """m-LTM: KL between the ideal matching and the entropic OT plan of the batch.

    C_ij = c(f(x_i), g(y_j)) under the ground metric; π = argmin ⟨π, C⟩ − ε H(π) with uniform
    marginals 1/b; π̂ = T / b (I/b without groups). KL(π̂ ‖ π) = Σ π̂ log π̂ − Σ π̂ log π, and the
    first term is a constant, so the loss is the cross-entropy −Σ_ij π̂_ij log(b · π_ij), which
    is −mean_i log(b · π_ii) for the identity target (0 at the perfect plan). Gradients flow
    through the Sinkhorn solution (implicit differentiation in :mod:`atr_demo.ot`).
    """

    def __init__(self, eps: float = 0.05, max_iter: int = 1000, tol: float = 1e-6) -> None:
        super().__init__()
        if eps <= 0:
            raise ConfigError(f"eps must be positive, got {eps}")
        self.eps, self.max_iter, self.tol = eps, max_iter, tol

    def log_plan(self, cost: Tensor) -> Tensor:
        """log π (b, b) for the cost matrix."""
        return sinkhorn_log(cost, self.eps, max_iter=self.max_iter, tol=self.tol, log_plan=True)

    def forward(self, audio: Tensor, text: Tensor, metric: MahalanobisMetric, group_ids: Tensor | None = None) -> Tensor:
        b = audio.shape[0]
        log_pi = self.log_plan(metric(audio, text))
        target = target_matrix(b, group_ids, audio.device)
        return -(target * (log_pi + math.log(b))).sum() / b


class PartialMLTMLoss(MLTMLoss):
    """m-LTM with the entropic *partial* plan moving mass s < 1 (robust to mismatched pairs).

    π = argmin ⟨π, C⟩ − ε H(π) s.t. π1 ≤ 1/b, πᵀ1 ≤ 1/b, 1ᵀπ1 = s. The target keeps the same
    total mass, π̂ = s · T / b, so that KL(π̂ ‖ π) has no mass-mismatch term; divided by s it is
    −Σ_ij (T_ij / b) log(b · π_ij / s) + const. The plan may leave the (1 − s) share of the
    mass untransported, which is where mismatched pairs go, so they stop pulling the
    embeddings.
    """

    def __init__(self, eps: float = 0.05, mass: float = 0.95, max_iter: int = 2000, tol: float = 1e-7) -> None:
        super().__init__(eps, max_iter, tol)
        if not 0 < mass <= 1:
            raise ConfigError(f"mass must be in (0, 1], got {mass}")
        self.mass = mass

    def log_plan(self, cost: Tensor) -> Tensor:
        log_pi = partial_sinkhorn_log(cost, self.eps, self.mass, max_iter=self.max_iter, tol=self.tol, log_plan=True)
        return log_pi - math.log(self.mass)


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE on cosine similarity with a learnable temperature τ (CLIP style).

    logits = exp(t) · A Tᵀ with t = log(1/τ) clamped to ≤ log(100); loss = ½ [CE(logits, T) +
    CE(logitsᵀ, Tᵀ)] with soft targets T (rows of the target matrix).
    """

    def __init__(self, init_temperature: float = 0.07, learnable: bool = True) -> None:
        super().__init__()
        value = torch.tensor(math.log(1.0 / init_temperature))
        if learnable:
            self.logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("logit_scale", value)

    def forward(self, audio: Tensor, text: Tensor, metric: MahalanobisMetric | None = None, group_ids: Tensor | None = None) -> Tensor:
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * audio @ text.T
        target = target_matrix(audio.shape[0], group_ids, audio.device)
        a2t = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        t2a = -(target.T * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
        return 0.5 * (a2t + t2a)


class TripletLoss(nn.Module):
    """VSE++ triplet loss with the hardest negative in each direction, on cosine similarity.

    For pair i with similarity s_ii: ℓ_i = max_{j ∉ G(i)} [m + s_ij − s_ii]₊ (audio → text) +
    max_{j ∉ G(i)} [m + s_ji − s_ii]₊ (text → audio); loss = mean_i ℓ_i. Items of the same group
    are never negatives.
    """

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, audio: Tensor, text: Tensor, metric: MahalanobisMetric | None = None, group_ids: Tensor | None = None) -> Tensor:
        sim = audio @ text.T
        pos = sim.diagonal().view(-1, 1)
        positive = target_matrix(sim.shape[0], group_ids, sim.device) > 0
        a2t = (self.margin + sim - pos).clamp_min(0).masked_fill(positive, 0)
        t2a = (self.margin + sim.T - pos).clamp_min(0).masked_fill(positive, 0)
        return (a2t.max(dim=1).values + t2a.max(dim=1).values).mean()


LOSSES: dict[str, type[nn.Module]] = {
    "mltm": MLTMLoss,
    "mltm_partial": PartialMLTMLoss,
    "infonce": InfoNCELoss,
    "triplet": TripletLoss,
}


def build_loss(name: str, **kwargs: object) -> nn.Module:
    """Instantiate the loss registered as ``name`` with ``kwargs``; ConfigError on bad input."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    try:
        return LOSSES[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad options for loss {name!r}: {exc}") from exc
