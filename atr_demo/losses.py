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

Two further call conventions (declared for the trainer by :data:`TRAINING_LOSSES`, the one
registry of training losses: names, the config keys each reads, the inputs each needs):

* ``needs_text_similarity``: :class:`SoftLabelContrastiveLoss` also takes
  ``text_similarity`` (b, b), the caption–caption similarity its soft targets come from.
* ``multilingual``: :class:`KCLLoss` and :class:`CACLLoss` take ``texts`` (K, b, d) — the
  captions of the same b items in K languages — instead of one (b, d) text batch, and wrap a
  pairwise base loss (InfoNCE, or the m-LTM KL term for the OT variant).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atr_demo.errors import ConfigError
from atr_demo.metric import MahalanobisMetric
from atr_demo.ot import OTInfo, partial_sinkhorn_log, sinkhorn_log

__all__ = [
    "MLTMLoss",
    "PartialMLTMLoss",
    "InfoNCELoss",
    "TripletLoss",
    "SoftLabelContrastiveLoss",
    "KCLLoss",
    "CACLLoss",
    "LOSSES",
    "build_loss",
    "target_plan",
    "LossSpec",
    "TRAINING_LOSSES",
    "build_training_loss",
    "float32_loss",
    "ot_infos",
]


def _check_inputs(audio: Tensor, text: Tensor, group_ids: Tensor | None) -> None:
    if audio.dim() != 2 or text.dim() != 2 or audio.shape != text.shape:
        raise ValueError(
            f"audio and text must both be (b, d) with the same shape, got "
            f"{tuple(audio.shape)} and {tuple(text.shape)}"
        )
    if group_ids is not None and tuple(group_ids.shape) != (audio.shape[0],):
        raise ValueError(f"group_ids must have shape ({audio.shape[0]},), got {tuple(group_ids.shape)}")


def _to_float32(value: Any) -> Any:
    if isinstance(value, Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Tensor) for v in value):
        return type(value)(_to_float32(v) for v in value)
    return value


def float32_loss(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Run a loss's ``forward`` with autocast off, whatever the caller's autocast: half-precision
    tensor arguments (and lists of them) are cast to float32 (float64 stays float64). Under bf16/fp16 autocast
    the backbones run in half precision, the cost matrix, the OT plan and the loss do not."""

    @functools.wraps(forward)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
        args = tuple(_to_float32(a) for a in args)
        kwargs = {k: _to_float32(v) for k, v in kwargs.items()}
        first = next((a for a in args if isinstance(a, Tensor)), None)
        device_type = first.device.type if first is not None else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            return forward(self, *args, **kwargs)

    return wrapper


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
        self.last_info: OTInfo | None = None

    def extra_repr(self) -> str:
        return f"eps={self.eps}, max_iter={self.max_iter}, tol={self.tol}"

    def plan(self, cost: Tensor) -> Tensor:
        """log π (b, b) for a cost matrix (b, b); the solver's :class:`~atr_demo.ot.OTInfo`
        (iterations, marginal error) is kept in ``last_info`` for the training log."""
        log_plan, self.last_info = sinkhorn_log(cost, self.eps, max_iter=self.max_iter, tol=self.tol, log_plan=True,
                                                return_info=True)
        return log_plan

    @float32_loss
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
        log_plan, self.last_info = partial_sinkhorn_log(cost, self.eps, self.mass, max_iter=self.max_iter,
                                                        tol=self.tol, log_plan=True, return_info=True)
        return log_plan

    @float32_loss
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

    def logits(self, audio: Tensor, text: Tensor) -> Tensor:
        """(b, b) audio–text cosine similarities over the clamped learnable temperature."""
        scale = self.logit_scale.clamp(0.0, self.max_logit_scale).exp()
        return scale * (audio @ text.transpose(0, 1))

    @float32_loss
    def forward(self, audio: Tensor, text: Tensor, metric: MahalanobisMetric | None = None,
                group_ids: Tensor | None = None) -> Tensor:
        _check_inputs(audio, text, group_ids)
        logits = self.logits(audio, text)
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

    @float32_loss
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


class SoftLabelContrastiveLoss(InfoNCELoss):
    r"""Contrastive loss with soft targets from caption–caption similarity.

    For a batch whose captions have pairwise similarity :math:`S^{tt}` (b, b) (cosine of the
    text-backbone features, passed as ``text_similarity``), the targets are

    .. math::
        Q_{ij} = \frac{\exp(S^{tt}_{ij}/\tau_q)}{\sum_k \exp(S^{tt}_{ik}/\tau_q)},\qquad
        \mathcal{L} = \tfrac12\big(\mathrm{CE}(S/\tau, Q) + \mathrm{CE}(S^\top/\tau, Q^\top_{\text{row}})\big),

    with :math:`S = x y^\top` the audio–text cosine logits and the learnable :math:`\tau` of
    :class:`InfoNCELoss` (whose temperature and logits it inherits);
    :math:`Q^\top_{\text{row}}` is the row softmax of :math:`S^{tt\top}`.
    Clips whose captions say nearly the same thing ("footsteps on gravel" / "footsteps on
    stone") share target mass instead of being pushed apart as negatives. As
    :math:`\tau_q \to 0` the targets become one-hot and the loss is InfoNCE. Items of the same
    ``group_ids`` group get similarity 1 (the maximum) before the softmax. Without
    ``text_similarity`` the detached joint-space text embeddings give :math:`S^{tt}`.
    """

    needs_text_similarity = True

    def __init__(self, target_temperature: float = 0.05, init_temperature: float = 0.07) -> None:
        super().__init__(init_temperature)
        if not target_temperature > 0:
            raise ValueError(f"target_temperature must be > 0, got {target_temperature}")
        self.target_temperature = float(target_temperature)

    def extra_repr(self) -> str:
        return f"target_temperature={self.target_temperature}"

    def targets(self, text_similarity: Tensor, group_ids: Tensor | None = None) -> Tensor:
        """Row-stochastic soft targets Q (b, b) from a (b, b) similarity matrix."""
        sim = text_similarity.detach().float()
        if group_ids is not None:
            sim = sim.masked_fill(_same_group(sim.shape[0], group_ids, sim.device), 1.0)
        return torch.softmax(sim / self.target_temperature, dim=1)

    @float32_loss
    def forward(self, audio: Tensor, text: Tensor, metric: MahalanobisMetric | None = None,
                group_ids: Tensor | None = None, text_similarity: Tensor | None = None) -> Tensor:
        _check_inputs(audio, text, group_ids)
        b = audio.shape[0]
        if text_similarity is None:
            text_similarity = text.detach() @ text.detach().transpose(0, 1)
        if tuple(text_similarity.shape) != (b, b):
            raise ValueError(f"text_similarity must have shape ({b}, {b}), got {tuple(text_similarity.shape)}")
        logits = self.logits(audio, text)
        q_rows = self.targets(text_similarity, group_ids).to(logits.dtype)
        q_cols = self.targets(text_similarity.transpose(0, 1), group_ids).to(logits.dtype)
        return 0.5 * (F.cross_entropy(logits, q_rows) + F.cross_entropy(logits.T, q_cols))


def _check_texts(audio: Tensor, texts: Tensor | Sequence[Tensor], k_min: int) -> Tensor:
    stacked = texts if isinstance(texts, Tensor) else torch.stack(list(texts))
    if stacked.dim() != 3 or stacked.shape[1:] != audio.shape:
        raise ValueError(f"texts must be (K, b, d) with (b, d) = {tuple(audio.shape)}, got {tuple(stacked.shape)}")
    if stacked.shape[0] < k_min:
        raise ValueError(f"texts must hold at least {k_min} language(s), got {stacked.shape[0]}")
    return stacked


class _MultilingualLoss(nn.Module):
    """Shared part of the multilingual losses: the pairwise ``base`` loss they sum."""

    multilingual = True

    def __init__(self, base: str = "infonce", **base_kwargs: Any) -> None:
        super().__init__()
        if base not in ("infonce", "mltm"):
            raise ValueError(f"base must be 'infonce' or 'mltm', got {base!r}")
        self.base_name = base
        self.base = LOSSES[base](**base_kwargs)

    def extra_repr(self) -> str:
        return f"base={self.base_name}"


class KCLLoss(_MultilingualLoss):
    r"""KCL, 1-to-K contrastive learning (ATRI): every audio with its captions in all K languages.

    .. math::
        \mathcal{L} = \frac1K \sum_{k=1}^{K} \ell(x, y^{(k)}),

    where :math:`y^{(k)}` (b, d) are the b items' captions in language k and :math:`\ell` is the
    pairwise base loss: symmetric InfoNCE (``base="infonce"``, both directions, one shared
    temperature) or the m-LTM KL term (``base="mltm"``, the OT variant). Memory grows with K:
    all K caption batches are encoded each step.

    Called as ``loss(audio (b, d), texts (K, b, d), metric, group_ids=None)``.
    """

    @float32_loss
    def forward(self, audio: Tensor, texts: Tensor | Sequence[Tensor], metric: MahalanobisMetric | None = None,
                group_ids: Tensor | None = None) -> Tensor:
        stacked = _check_texts(audio, texts, 1)
        terms = [self.base(audio, stacked[k], metric, group_ids=group_ids) for k in range(stacked.shape[0])]
        return torch.stack(terms).mean()


class CACLLoss(_MultilingualLoss):
    r"""CACL, co-anchor contrastive learning (ATRI): audio, English caption, one other language.

    Each item i contributes the triplet (x_i, y_i^{en}, y_i^{o}) where :math:`y^{o}_i` is its
    caption in a language drawn at random per item (the trainer draws it). Three pairwise terms:

    .. math::
        \mathcal{L} = \tfrac13\big(\ell(x, y^{en}) + \ell(x, y^{o}) + \ell(y^{en}, y^{o})\big),

    so English is a second anchor that pulls the other languages' captions towards it. The
    base :math:`\ell` is symmetric InfoNCE or the m-LTM KL term (OT variant; the text–text term
    then matches the two caption batches by entropic OT under the same ground metric).

    Called as ``loss(audio (b, d), texts (2, b, d), metric, group_ids=None)`` with
    ``texts[0]`` the English and ``texts[1]`` the other-language captions.
    """

    @float32_loss
    def forward(self, audio: Tensor, texts: Tensor | Sequence[Tensor], metric: MahalanobisMetric | None = None,
                group_ids: Tensor | None = None) -> Tensor:
        stacked = _check_texts(audio, texts, 2)
        if stacked.shape[0] != 2:
            raise ValueError(f"CACL takes texts (2, b, d): English and one other language, got K = {stacked.shape[0]}")
        english, other = stacked[0], stacked[1]
        terms = [self.base(audio, english, metric, group_ids=group_ids),
                 self.base(audio, other, metric, group_ids=group_ids),
                 self.base(english, other, metric, group_ids=group_ids)]
        return torch.stack(terms).mean()


LOSSES: dict[str, type[nn.Module]] = {
    "mltm": MLTMLoss,
    "mltm_partial": PartialMLTMLoss,
    "infonce": InfoNCELoss,
    "triplet": TripletLoss,
    "softlabel": SoftLabelContrastiveLoss,
    "kcl": KCLLoss,
    "cacl": CACLLoss,
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


# -- the training-loss registry ----------------------------------------------------------------

#: How the trainer feeds a loss: ``pair`` — ``(audio, text, metric, group_ids)``;
#: ``text_similarity`` — also the (b, b) cosine similarity of the captions' backbone features;
#: ``all_languages`` — ``texts`` (K, b, d) with one caption per item in every language (KCL);
#: ``anchor_and_one`` — ``texts`` (2, b, d): the anchor language and one other drawn per item (CACL).
LossInputs = Literal["pair", "text_similarity", "all_languages", "anchor_and_one"]


@dataclass(frozen=True)
class LossSpec:
    """One training loss, declared once: what builds it, what it reads, what it needs.

    Attributes:
        build: settings → the loss module; settings is a mapping holding at least ``settings``.
        settings: the training-config keys the loss reads (``eps``, ``mass``, ``margin``, …).
        inputs: the call convention (:data:`LossInputs`).
        min_languages: caption languages the config must name (2 for the multilingual losses).
        uses_metric: the loss reads the ground metric ``M`` (the OT losses); otherwise ``M``
            gets no gradient (distributed training leaves it out of the gradient sync).
        description: one line for the docs and error messages.
    """

    build: Callable[[Mapping[str, Any]], nn.Module]
    settings: tuple[str, ...] = ()
    inputs: LossInputs = "pair"
    min_languages: int = 0
    uses_metric: bool = False
    description: str = ""

    @property
    def multilingual(self) -> bool:
        return self.inputs in ("all_languages", "anchor_and_one")


#: Every loss the trainer knows, by config name. Adding a loss: add its class above and one entry
#: here; the config's ``loss`` choices, its validation and the trainer's call follow from it.
TRAINING_LOSSES: dict[str, LossSpec] = {
    "mltm": LossSpec(lambda s: MLTMLoss(eps=s["eps"]), ("eps",), uses_metric=True,
                     description="m-LTM (entropic OT plan, KL)"),
    "mltm_partial": LossSpec(lambda s: PartialMLTMLoss(eps=s["eps"], mass=s["mass"]), ("eps", "mass"),
                             uses_metric=True, description="m-LTM with partial OT (mass s)"),
    "infonce": LossSpec(lambda s: InfoNCELoss(), description="symmetric InfoNCE"),
    "triplet": LossSpec(lambda s: TripletLoss(margin=s["margin"]), ("margin",), description="VSE++ triplet"),
    "softlabel": LossSpec(lambda s: SoftLabelContrastiveLoss(target_temperature=s["target_temperature"]),
                          ("target_temperature",), inputs="text_similarity",
                          description="contrastive with caption-similarity soft targets"),
    "kcl": LossSpec(lambda s: KCLLoss(base="infonce"), inputs="all_languages", min_languages=2,
                    description="multilingual 1-to-K InfoNCE"),
    "kcl_mltm": LossSpec(lambda s: KCLLoss(base="mltm", eps=s["eps"]), ("eps",), inputs="all_languages",
                         min_languages=2, uses_metric=True, description="multilingual 1-to-K m-LTM"),
    "cacl": LossSpec(lambda s: CACLLoss(base="infonce"), inputs="anchor_and_one", min_languages=2,
                     description="multilingual co-anchor InfoNCE"),
    "cacl_mltm": LossSpec(lambda s: CACLLoss(base="mltm", eps=s["eps"]), ("eps",), inputs="anchor_and_one",
                          min_languages=2, uses_metric=True, description="multilingual co-anchor m-LTM"),
}


def build_training_loss(name: str, settings: Mapping[str, Any]) -> nn.Module:
    """The loss registered in :data:`TRAINING_LOSSES` as ``name``, built from ``settings``.

    Raises:
        ConfigError: an unknown name, a missing setting or a value the loss rejects.
    """
    if name not in TRAINING_LOSSES:
        raise ConfigError(f"unknown loss {name!r}; valid choices: {', '.join(TRAINING_LOSSES)}")
    spec = TRAINING_LOSSES[name]
    missing = [k for k in spec.settings if k not in settings]
    if missing:
        raise ConfigError(f"loss {name!r} needs the setting(s) {', '.join(missing)}")
    try:
        return spec.build(settings)
    except ValueError as exc:
        raise ConfigError(f"bad value for loss {name!r}: {exc}") from exc


def ot_infos(loss_fn: nn.Module) -> list[OTInfo]:
    """The :class:`~atr_demo.ot.OTInfo` of the last plans an OT loss solved (its own and those of
    its submodules, e.g. the m-LTM base of KCL/CACL; one per plan of the last call at most)."""
    return [m.last_info for m in loss_fn.modules() if isinstance(m, MLTMLoss) and m.last_info is not None]
