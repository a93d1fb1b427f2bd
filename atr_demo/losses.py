r"""Training losses for audio-text retrieval, as small ``nn.Module`` s with one signature.

Every loss is called as ``loss(audio, text, metric, group_ids=None) -> scalar`` with ``audio`` and
``text`` (b, d) L2-normalised embeddings of b matched pairs (row i of each is pair i) and a
:class:`~atr_demo.metric.MahalanobisMetric` (used by the OT losses, ignored by the cosine
baselines). ``group_ids`` (b,) optionally marks items that share a caption group (e.g. several
captions of one clip in the batch): the target then matches item i with every item of its
group, uniformly, instead of only with item i:

.. math::
    T_{ij} = \frac{[\,g_i = g_j\,]}{b\,|G(i)|}, \qquad T 1 = T^\top 1 = 1/b

(``T = I/b`` without groups). Losses are chosen by name through :data:`LOSSES` /
:func:`build_loss`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atr_demo.errors import ConfigError
from atr_demo.metric import MahalanobisMetric
from atr_demo.ot import partial_sinkhorn_log, sinkhorn_log

__all__ = [
    "MLTMLoss",
    "PartialMLTMLoss",
    "InfoNCELoss",
    "TripletLoss",
    "LOSSES",
    "build_loss",
    "target_plan",
]


def _check_inputs(audio: Tensor, text: Tensor, group_ids: Tensor | None) -> None:
    if audio.dim() != 2 or text.dim() != 2 or audio.shape != text.shape:
        raise ValueError(
            f"audio and text must both be (b, d) with the same shape, got "
            f"{tuple(audio.shape)} and {tuple(text.shape)}"
        )
    if group_ids is not None and tuple(group_ids.shape) != (audio.shape[0],):
        raise ValueError(f"group_ids must have shape ({audio.shape[0]},), got {tuple(group_ids.shape)}")


def _same_group(b: int, group_ids: Tensor | None, device: torch.device) -> Tensor:
    """Boolean (b, b) matrix of pairs in the same group (the identity without groups)."""
    if group_ids is None:
        return torch.eye(b, dtype=torch.bool, device=device)
    g = group_ids.to(device)
    return g.unsqueeze(0) == g.unsqueeze(1)


def target_plan(b: int, group_ids: Tensor | None = None, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Tensor:
    r"""The target coupling ``T`` (b, b): ``I/b``, or the block target ``[g_i=g_j]/(b|G(i)|)``."""
    same = _same_group(b, group_ids, torch.device(device) if device is not None else torch.device("cpu"))
    t = same.to(dtype)
    return t / (t.sum(dim=1, keepdim=True) * b)


def _kl_to_plan(target: Tensor, log_plan: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(T\|\pi) = \sum_{ij} T_{ij}(\log T_{ij} - \log \pi_{ij})` over the support
    of ``T`` (the ``-\sum T + \sum \pi`` terms of the generalised KL cancel: equal masses)."""
    support = target > 0
    t = target[support]
    return (t * (torch.log(t) - log_plan[support])).sum()


class MLTMLoss(nn.Module):
    r"""m-LTM loss: KL from the target coupling to the entropic OT plan of the batch.

    .. math::
        C_{ij} = c(x_i, y_j),\quad \pi = \mathrm{sinkhorn}(C, \varepsilon; 1/b, 1/b),\quad
        \mathcal{L} = \mathrm{KL}(T \,\|\, \pi) = -\frac{1}{b}\sum_i \log(b\,\pi_{ii})
        \ \ (T = I/b).

    The entropy of ``T`` (the ``log b`` inside the log) is kept, so the loss is the exact KL:
    ≥ 0, and 0 iff π = T. It differs from the cross-entropy :math:`-\sum T\log\pi` only by that
    constant, so gradients are the same. Gradients flow through the Sinkhorn solution to the
    embeddings and to ``M`` (implicit differentiation, see :mod:`atr_demo.ot`).
    """

    def __init__(self, eps: float = 0.05, max_iter: int = 1000, tol: float = 1e-6) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps, self.max_iter, self.tol = float(eps), int(max_iter), float(tol)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, max_iter={self.max_iter}, tol={self.tol}"

    def plan(self, cost: Tensor) -> Tensor:
        """log π (b, b) for a cost matrix (b, b)."""
        return sinkhorn_log(cost, self.eps, max_iter=self.max_iter, tol=self.tol, log_plan=True)

    def forward(self, audio: Tensor, text: Tensor, metric: MahalanobisMetric,
                group_ids: Tensor | None = None) -> Tensor:
        _check_inputs(audio, text, group_ids)
        cost = metric(audio, text)
        log_plan = self.plan(cost)
        target = target_plan(audio.shape[0], group_ids, dtype=cost.dtype, device=cost.device)
        return _kl_to_plan(target, log_plan)


class PartialMLTMLoss(MLTMLoss):
    r"""m-LTM with the entropic *partial* OT plan (mass ``s`` < 1), for noisy pairs.

    .. math::
        \pi = \mathrm{partial\_sinkhorn}(C, \varepsilon, s),\qquad
        \mathcal{L} = \mathrm{KL}(s\,T \,\|\, \pi) = -\frac{s}{b}\sum_i \log\frac{b\,\pi_{ii}}{s}
        \ \ (T = I/b).

    Target: ``s·T``. The partial plan carries total mass ``s``, so the target is scaled to the
    same mass: then the generalised KL is a proper divergence (≥ 0, = 0 iff π = s·T; ``s·T`` is
    a feasible partial plan since its marginals ``s/b ≤ 1/b``), and with ``s = 1`` the loss is
    exactly :class:`MLTMLoss`. Leaving the target at mass 1 would add a constant gap and
    make the optimum unreachable.
    """

    def __init__(self, eps: float = 0.05, mass: float = 0.95, max_iter: int = 2000,
                 tol: float = 1e-6) -> None:
        super().__init__(eps=eps, max_iter=max_iter, tol=tol)
        if not 0 < mass <= 1:
            raise ValueError(f"mass must be in (0, 1], got {mass}")
        self.mass = float(mass)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, mass={self.mass}, max_iter={self.max_iter}, tol={self.tol}"

    def plan(self, cost: Tensor) -> Tensor:
        return partial_sinkhorn_log(cost, self.eps, self.mass, max_iter=self.max_iter,
                                    tol=self.tol, log_plan=True)

    def forward(self, audio: Tensor, text: Tensor, metric: MahalanobisMetric,
                group_ids: Tensor | None = None) -> Tensor:
        _check_inputs(audio, text, group_ids)
        cost = metric(audio, text)
        log_plan = self.plan(cost)
        target = self.mass * target_plan(audio.shape[0], group_ids, dtype=cost.dtype,
                                         device=cost.device)
        return _kl_to_plan(target, log_plan)


class InfoNCELoss(nn.Module):
    r"""Symmetric InfoNCE (CLIP) on cosine similarity with a learnable temperature.

    .. math::
        S = \frac{x y^\top}{\tau},\quad
        \mathcal{L} = \tfrac12\big(\mathrm{CE}(S, T_{\text{row}}) + \mathrm{CE}(S^\top, T_{\text{row}})\big),

    with soft targets ``b·T`` (one-hot without groups). ``log(1/τ)`` is a parameter initialised
    to ``log(1/init_temperature)`` and clamped to ``[0, log 100]`` as in CLIP (τ ≥ 0.01).
    """

    max_logit_scale = math.log(100.0)

    def __init__(self, init_temperature: float = 0.07, learnable: bool = True) -> None:
        super().__init__()
        if not init_temperature > 0:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature}")
        value = torch.tensor(math.log(1.0 / init_temperature))
        if learnable:
            self.logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("logit_scale", value)

    def forward(self, audio: Tensor, text: Tensor, metric: MahalanobisMetric | None = None,
                group_ids: Tensor | None = None) -> Tensor:
        _check_inputs(audio, text, group_ids)
        scale = self.logit_scale.clamp(0.0, self.max_logit_scale).exp()
        logits = scale * (audio @ text.transpose(0, 1))
        b = audio.shape[0]
        if group_ids is None:
            labels = torch.arange(b, device=audio.device)
            return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        soft = b * target_plan(b, group_ids, dtype=logits.dtype, device=logits.device)
        return 0.5 * (F.cross_entropy(logits, soft) + F.cross_entropy(logits.T, soft.T))


class TripletLoss(nn.Module):
    r"""VSE++ triplet loss with the hardest negative, both directions, on cosine similarity.

    .. math::
        \mathcal{L} = \frac1b\sum_i \big[m - s_{ii} + \max_{j \notin G(i)} s_{ij}\big]_+
                    + \big[m - s_{ii} + \max_{j \notin G(i)} s_{ji}\big]_+ .

    With ``group_ids`` the items of the same group are not negatives (block target); the
    positive of row i is still its own pair.
    """

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = float(margin)

    def forward(self, audio: Tensor, text: Tensor, metric: MahalanobisMetric | None = None,
                group_ids: Tensor | None = None) -> Tensor:
        _check_inputs(audio, text, group_ids)
        sim = audio @ text.transpose(0, 1)
        pos = sim.diagonal()
        same = _same_group(sim.shape[0], group_ids, sim.device)
        neg = sim.masked_fill(same, float("-inf"))
        hard_a2t = neg.amax(dim=1)
        hard_t2a = neg.amax(dim=0)
        # a row with no negative (whole batch one group) has max = -inf: contributes 0
        loss_a2t = (self.margin - pos + hard_a2t).clamp_min(0)
        loss_t2a = (self.margin - pos + hard_t2a).clamp_min(0)
        loss_a2t = torch.where(torch.isfinite(hard_a2t), loss_a2t, torch.zeros_like(loss_a2t))
        loss_t2a = torch.where(torch.isfinite(hard_t2a), loss_t2a, torch.zeros_like(loss_t2a))
        return (loss_a2t + loss_t2a).mean()


LOSSES: dict[str, type[nn.Module]] = {
    "mltm": MLTMLoss,
    "mltm_partial": PartialMLTMLoss,
    "infonce": InfoNCELoss,
    "triplet": TripletLoss,
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the loss registered as ``name`` with ``kwargs``.

    Raises :class:`~atr_demo.errors.ConfigError` for an unknown name (listing the valid ones)
    or for keyword arguments the loss does not accept or values it rejects.
    """
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; valid choices: {', '.join(sorted(LOSSES))}")
    cls = LOSSES[name]
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for loss {name!r} ({cls.__name__}): {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"bad value for loss {name!r} ({cls.__name__}): {exc}") from exc
