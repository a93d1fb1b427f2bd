"""Fine-tuning controls: parameter groups, layer-wise decay, warm-up + cosine, gradient clipping.

Every trainable parameter belongs to one of :data:`GROUPS` by its name in the model:

* ``audio_backbone`` (``audio_backbone.*``), ``text_backbone`` (``text_backbone.*``),
* ``heads`` (``audio_head.*``, ``text_head.*``), ``metric`` (``metric.*``, the matrix ``M``),
* ``loss`` (parameters of the loss module, e.g. the InfoNCE temperature).

Each group has its own learning rate and weight decay (``param_groups`` in the training config;
unset values fall back to ``lr`` / ``weight_decay``). Biases, normalisation weights and other
1-D parameters get no weight decay (unless ``decay_bias_and_norm``). With ``layer_decay`` γ < 1,
a backbone parameter of layer ``l`` (of ``L`` numbered layers, found in names such as
``layers.3.`` / ``layer.3.`` / ``blocks.3.``; embeddings are layer 0, everything after the last
layer is ``L + 1``) has learning rate ``lr · γ^(L + 1 − l)``: the layers near the input move least.

The schedule multiplies each group's base learning rate: linear warm-up over ``warmup_steps``,
then constant or cosine to 0 at the last step (:func:`lr_at`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from atr_demo.errors import ConfigError

#: Parameter groups, in the order they appear in the optimiser.
GROUPS = ("audio_backbone", "text_backbone", "heads", "metric", "loss")
_PREFIXES = {"audio_backbone.": "audio_backbone", "text_backbone.": "text_backbone", "audio_head.": "heads",
             "text_head.": "heads", "metric.": "metric"}
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers?|blocks?|h)\.(\d+)\.")
_EMBEDDING_RE = re.compile(r"embed", re.IGNORECASE)


@dataclass(frozen=True)
class GroupSettings:
    """Learning rate and weight decay of one group (``None``: the run's ``lr`` / ``weight_decay``)."""

    lr: float | None = None
    weight_decay: float | None = None


def group_of(name: str) -> str:
    """The group of a model parameter name (loss parameters are named by the caller)."""
    for prefix, group in _PREFIXES.items():
        if name.startswith(prefix):
            return group
    return "heads"


def no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, normalisation weights and every other parameter with fewer than 2 dimensions."""
    lowered = name.lower()
    return param.ndim < 2 or lowered.endswith(".bias") or "norm" in lowered or lowered.startswith("ln")


def layer_index(name: str, n_layers: int) -> int:
    """Depth of a backbone parameter for layer-wise decay: 0 embeddings, l + 1 for ``layers.l.``,
    ``n_layers + 1`` for what follows the last layer (pooling, final norm)."""
    match = _LAYER_RE.search(name)
    if match:
        return int(match.group(1)) + 1
    if _EMBEDDING_RE.search(name):
        return 0
    return n_layers + 1


def count_layers(names: Iterable[str]) -> int:
    """Number of numbered layers among the parameter names (0 when none are numbered)."""
    found = [int(m.group(1)) for n in names if (m := _LAYER_RE.search(n))]
    return max(found) + 1 if found else 0


def build_param_groups(
    model: nn.Module,
    loss_fn: nn.Module | None,
    lr: float,
    weight_decay: float,
    groups: Mapping[str, GroupSettings] | None = None,
    layer_decay: float = 1.0,
    decay_bias_and_norm: bool = False,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups: one per (group, decay or not, layer) that has parameters.

    Each dict has ``params``, ``lr`` (its base learning rate), ``base_lr`` (the same, kept for
    the schedule), ``weight_decay`` and ``name`` (``heads``, ``audio_backbone/no_decay/layer3`` …).
    Frozen parameters (``requires_grad`` false) are left out.

    Raises:
        ConfigError: ``groups`` names a group not in :data:`GROUPS`.
    """
    groups = dict(groups or {})
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ConfigError(f"param_groups: unknown group(s) {', '.join(unknown)}; use {', '.join(GROUPS)}")
    named = [(n, p, group_of(n)) for n, p in model.named_parameters() if p.requires_grad]
    if loss_fn is not None:
        named += [(f"loss.{n}", p, "loss") for n, p in loss_fn.named_parameters() if p.requires_grad]
    depth = {g: count_layers(n for n, _, grp in named if grp == g) for g in ("audio_backbone", "text_backbone")}
    buckets: dict[tuple[str, bool, int], list[nn.Parameter]] = {}
    for name, param, group in named:
        plain = no_decay(name, param) and not decay_bias_and_norm
        layer = -1
        if layer_decay != 1.0 and group in depth:
            layer = layer_index(name.split(".", 1)[1], depth[group])
        buckets.setdefault((group, plain, layer), []).append(param)
    result = []
    for (group, plain, layer), params in sorted(buckets.items(), key=lambda kv: (GROUPS.index(kv[0][0]), kv[0][1:])):
        settings = groups.get(group, GroupSettings())
        base = lr if settings.lr is None else settings.lr
        if layer >= 0:
            base = base * layer_decay ** (depth[group] + 1 - layer)
        decay = weight_decay if settings.weight_decay is None else settings.weight_decay
        name = group + ("/no_decay" if plain else "") + (f"/layer{layer}" if layer >= 0 else "")
        result.append({"params": params, "lr": base, "base_lr": base, "weight_decay": 0.0 if plain else decay,
                       "name": name})
    return result


def make_optimizer(kind: str, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """``adam`` | ``adamw`` | ``sgd`` (momentum 0.9) over the groups of :func:`build_param_groups`."""
    if kind == "adam":
        return torch.optim.Adam(param_groups)
    if kind == "adamw":
        return torch.optim.AdamW(param_groups)
    if kind == "sgd":
        return torch.optim.SGD(param_groups, momentum=0.9)
    raise ConfigError(f"optimizer: unknown {kind!r}; use adam, adamw or sgd")


def lr_at(base_lr: float, step: int, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine") -> float:
    r"""Learning rate of step ``step`` (0-based): linear warm-up, then constant or cosine to 0.

    .. math::
        \eta_t = \eta\,\frac{t+1}{W}\ (t < W), \qquad
        \eta_t = \eta\cdot\tfrac12\Big(1 + \cos\frac{\pi (t - W)}{\max(1, T - W)}\Big)\ (t \ge W).
    """
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rates(optimizer: torch.optim.Optimizer, step: int, total_steps: int, warmup_steps: int,
                       schedule: str) -> dict[str, float]:
    """Set every group's ``lr`` for ``step`` from its ``base_lr``; return {group name: lr}."""
    lrs = {}
    for group in optimizer.param_groups:
        group["lr"] = lr_at(group.get("base_lr", group["lr"]), step, total_steps, warmup_steps, schedule)
        lrs[group.get("name", str(len(lrs)))] = group["lr"]
    return lrs


def clip_gradients(params: Iterable[torch.Tensor], max_norm: float) -> float:
    """Clip the global L2 norm of the gradients to ``max_norm`` (0: no clipping); return the norm
    before clipping (for the log)."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(grads, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads])))
