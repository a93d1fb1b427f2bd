"""One optimiser step of the trainer: embeddings of this rank's shard, one loss over the global
batch, backward (through DDP, or chunk by chunk with the gradient cache), clipping, the step, the
PSD projection of the metric.

The loss is called as :data:`atr_demo.losses.TRAINING_LOSSES` declares for ``config.loss``
(``pair``, ``text_similarity`` or the multilingual layouts); everything batch-wide — group ids,
the other-language captions, the caption–caption similarity — is computed on the *global* batch,
identically on every rank, so that a run on W processes computes what one process computes on
the same global batch (see :mod:`training.distributed` for the gradient).

Precision: ``amp: bf16 | fp16`` runs the backbones and heads under autocast on a GPU (fp16 with
a :class:`torch.amp.GradScaler`); the losses and OT solvers always run in float32
(:func:`atr_demo.losses.float32_loss`). On the CPU, ``amp`` is ignored (float32).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from atr_demo.losses import TRAINING_LOSSES, ot_infos
from atr_demo.model import ATRModel

from training.batching import caption_groups
from training.config import TrainConfig
from training.datasets import Clip
from training.distributed import DistContext, broadcast_, gather_no_grad, gather_with_grad, shard_bounds, shard_sizes
from training.gradcache import cached_backward
from training.optim import clip_gradients

logger = logging.getLogger(__name__)

#: ``(global clips, config, rng, cacl)`` → the other-language caption lists of the global batch.
LanguageBatch = Callable[[Sequence[Clip], TrainConfig, random.Random, bool], list[list[str]]]


@dataclass
class StepStats:
    """What one step reports to the log."""

    loss: float
    samples: int
    seconds: float
    grad_norm: float | None = None
    ot: dict[str, float] = field(default_factory=dict)


class _LossModule(nn.Module):
    """The model and the loss as one module, so that DDP syncs the gradients of both; its forward
    runs a closure (the step's loss computation), which lets DDP see one forward per step."""

    def __init__(self, model: ATRModel, loss_fn: nn.Module) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        return closure()


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the backbones and heads (``None``: float32)."""
    mode = config.amp_mode
    if mode == "none":
        return None
    if device.type != "cuda":
        logger.info("amp %s is for GPUs; training in float32 on %s", mode, device)
        return None
    return torch.bfloat16 if mode == "bf16" else torch.float16


class StepRunner:
    """Runs training steps on batches of this rank (see the module docstring)."""

    def __init__(self, model: ATRModel, loss_fn: nn.Module, config: TrainConfig, optimizer: torch.optim.Optimizer,
                 source: Any, ctx: DistContext, device: torch.device, language_batch: LanguageBatch) -> None:
        self.model, self.loss_fn, self.config, self.optimizer = model, loss_fn, config, optimizer
        self.source, self.ctx, self.device, self.language_batch = source, ctx, device, language_batch
        self.spec = TRAINING_LOSSES[config.loss]
        self.dtype = amp_dtype(config, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype is torch.float16 else None
        self.module = _LossModule(model, loss_fn)
        unused = set() if self.spec.uses_metric else {"model.metric.M"}  # M gets no gradient from such a loss
        self.params = [p for n, p in self.module.named_parameters() if p.requires_grad and n not in unused]
        self.ddp: DistributedDataParallel | None = None
        if ctx.world_size > 1 and self.params:
            ids = [device.index] if device.type == "cuda" else None
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.module, sorted(unused))
            self.ddp = DistributedDataParallel(self.module, device_ids=ids, broadcast_buffers=False)
        self.learn_metric = model.config.metric == "mahalanobis"

    # -- the pieces of a step ---------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device_type=self.device.type, dtype=self.dtype or torch.bfloat16,
                              enabled=self.dtype is not None)

    def _embed(self, clips: Sequence[Clip], captions: Sequence[str], waves: Sequence[torch.Tensor] | None,
               others: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        """[audio (n, d), text (n, d), *other languages (n, d), (text features (n, D), detached,
        for ``text_similarity`` losses)] of n shard items, in the autocast dtype."""
        with self._autocast():
            audio = self.model.project_audio(self.source.audio(clips, waves))  # the former order of the
            text_feats = self.source.text(captions)  # random draws (dropout), so runs repeat bit for bit
            parts = [audio, self.model.project_text(text_feats)]
            parts += [self.model.project_text(self.source.text(caps)) for caps in others]
        if self.spec.inputs == "text_similarity":
            parts.append(text_feats.detach())
        return parts

    def _loss(self, parts: Sequence[torch.Tensor], sizes: Sequence[int],
              group_ids: torch.Tensor | None) -> torch.Tensor:
        """The loss of the global batch from this rank's parts (gathered over the ranks)."""
        if self.spec.inputs == "text_similarity":
            *parts, text_feats = parts
            unit = F.normalize(gather_no_grad(text_feats, self.ctx, sizes).float(), dim=-1)
            a, t = (gather_with_grad(p, self.ctx, sizes).float() for p in parts)
            return self.loss_fn(a, t, self.model.metric, group_ids=group_ids, text_similarity=unit @ unit.T)
        full = [gather_with_grad(p, self.ctx, sizes).float() for p in parts]
        if self.spec.multilingual:
            return self.loss_fn(full[0], torch.stack(full[1:]), self.model.metric, group_ids=group_ids)
        return self.loss_fn(full[0], full[1], self.model.metric, group_ids=group_ids)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _all_reduce_grads(self) -> None:
        """Mean of the gradients over the ranks (what DDP does), for the gradient-cache path."""
        if self.ctx.world_size == 1:
            return
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad.div_(self.ctx.world_size)

    # -- the step ------------------------------------------------------------------------
    def step(self, clips: Sequence[Clip], captions: Sequence[str], waves: Sequence[torch.Tensor] | None,
             global_clips: Sequence[Clip], global_captions: Sequence[str], language_rng: random.Random,
             want_norm: bool = False) -> StepStats:
        """One optimiser step on this rank's shard ``clips``/``captions`` of the global batch.

        ``language_rng`` is drawn from for the whole global batch on every rank (the same draws
        as one process). Returns the global batch's loss (the same on every rank).
        """
        began = time.perf_counter()
        n_global = len(global_clips)
        sizes = shard_sizes(n_global, self.ctx.world_size)
        lo, hi = shard_bounds(n_global, self.ctx.rank, self.ctx.world_size)
        if hi - lo != len(clips):
            raise RuntimeError(f"rank {self.ctx.rank} got {len(clips)} items of a global batch of {n_global}; "
                               f"expected its contiguous shard of {hi - lo}")
        group_ids = None
        if self.config.batching == "ids":
            ids = caption_groups(list(global_captions), [c.group for c in global_clips])
            group_ids = torch.tensor(ids, device=self.device)
        others: list[list[str]] = []
        if self.spec.multilingual:
            drawn = self.language_batch(global_clips, self.config, language_rng, self.spec.inputs == "anchor_and_one")
            others = [caps[lo:hi] for caps in drawn]

        self.optimizer.zero_grad(set_to_none=True)
        chunk = self.config.grad_cache_chunk
        if chunk and chunk < len(clips):
            def embed(start: int, stop: int) -> list[torch.Tensor]:
                return self._embed(clips[start:stop], captions[start:stop],
                                   None if waves is None else waves[start:stop], [o[start:stop] for o in others])

            loss = cached_backward(embed, len(clips), chunk, lambda parts: self._loss(parts, sizes, group_ids),
                                   self.device, backward=self._backward)
            self._all_reduce_grads()
        else:
            def closure() -> torch.Tensor:
                return self._loss(self._embed(clips, captions, waves, others), sizes, group_ids)

            loss = self.ddp(closure) if self.ddp is not None else closure()
            self._backward(loss)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = None
        if self.config.grad_clip > 0 or want_norm:
            norm = clip_gradients(self.params, self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.learn_metric:
            self.model.metric.project_psd_()
            broadcast_([self.model.metric.M], self.ctx)  # bit-identical M on every rank
        infos = ot_infos(self.loss_fn)
        ot = {}
        if infos:
            ot = {"ot_error": max(i.error for i in infos), "ot_iterations": max(i.iterations for i in infos),
                  "ot_converged": float(all(i.converged for i in infos))}
        return StepStats(float(loss.detach()), n_global, time.perf_counter() - began, norm, ot)

    # -- state for checkpoints -------------------------------------------------------------
    def scaler_state(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_scaler_state(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
