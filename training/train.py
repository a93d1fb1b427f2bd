"""``python -m training train --config FILE [--set key=value ...] [--resume] [--push-to-hub REPO]``.

One epoch = train (optimiser steps, then the PSD projection of M when the metric is learned) →
validate (text→audio and audio→text R@1/5/10, mAP@10 on the validation split, cosine scoring) →
checkpoint. Output folder::

    out/last/    config.json, model.safetensors, train_config.json, optimizer.safetensors,
                 trainer_state.json, log.jsonl (see :mod:`training.checkpointing`)
    out/best/    config.json, model.safetensors, train_config.json, metrics.json
    out/log.jsonl  one JSON object per epoch (and per N steps with ``log_every_steps``)
    out/tb/      TensorBoard scalars (``tensorboard: true``)

Under ``torchrun --nproc_per_node=N -m training train ...`` the run joins the process group
(NCCL on CUDA, gloo on the CPU): ``batch_size`` is the global batch, each rank embeds its shard,
the embeddings are all-gathered with their gradients and the loss (the OT plan) is over the
global batch, so N processes train the model one process would on the same global batch
(:mod:`training.distributed`, :mod:`training.loop`). Rank 0 alone writes logs and checkpoints.

Checkpoints are swapped in atomically; ``--resume`` restores weights, optimiser, RNG states, the
step counter and the sampler position (mid-epoch with ``checkpoint_every_steps``); data order and
mixtures are a function of (seed, epoch), so a resumed run ends with the same weights as an
uninterrupted one (bit for bit on a CPU).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from atr_demo.devices import resolve_device
from atr_demo.errors import ATRError, ConfigError
from atr_demo.evaluation import retrieval_metrics
from atr_demo.losses import build_training_loss
from atr_demo.model import WEIGHTS_NAME, ATRModel, create_model

from training.augment import make_mixtures
from training.block_cache import TopBlockFeatures, unfreeze_top_blocks
from training.checkpointing import (  # noqa: F401 (flatten_state, unflatten_state, RESUMABLE_CHANGES: re-exported)
    RESUMABLE_CHANGES,
    flatten_state,
    restore_checkpoint,
    save_best,
    save_checkpoint,
    unflatten_state,
)
from training.config import TrainConfig, load_train_config
from training.datasets import Clip, language_captions
from training.distributed import (
    DistContext,
    barrier,
    check_batch_size,
    check_same_config,
    init_distributed,
    launched_by_torchrun,
    shutdown,
)
from training.features import audio_features, clip_keys, default_cache_dir, text_features
from training.loop import StepRunner
from training.optim import GroupSettings, build_param_groups, lr_at, make_optimizer, set_learning_rates
from training.pipeline import (
    ClipLoader,
    EpochBatchSampler,
    PairLoader,
    check_pipeline_options,
    compose_epoch,
    epoch_rng,
    language_keys,
    load_clip_window,
    seed_of,
    spec_augmented,
)
from training.prepare import caption_texts, clip_captions, prepare_data
from training.runlog import RunLog, clean_stale_temporaries

logger = logging.getLogger(__name__)

__all__ = ["epoch_rng", "language_keys", "RESUMABLE_CHANGES"]  # re-exported


# -- data and features -----------------------------------------------------------------------

class FeatureSource:
    """Backbone features of clips and captions: cached (frozen) or computed each step.

    ``audio(clips, waves)`` → (b, D_audio) and ``text(captions)`` → (b, D_text); with cached
    features they are looked up, otherwise the backbones run (with gradients when trainable) on
    the waves the input pipeline decoded (or, without them, on waves decoded here).
    """

    def __init__(self, model: ATRModel, config: TrainConfig, clips: Sequence[Clip], device: torch.device) -> None:
        self.model, self.config, self.device = model, config, device
        self.cached = config.use_cached_features
        self.audio_rows: dict[str, int] = {}
        self.text_rows: dict[str, int] = {}
        self._eval_loader: tuple[tuple[Any, ...], ClipLoader] | None = None
        # finetune_blocks: the top conv blocks run each step on cached block activations
        self.blocks = None
        if self.cached and config.finetune_blocks:
            self.blocks = TopBlockFeatures(model, config, clips, clip_keys(clips, config.max_duration_s),
                                           config.features_cache or default_cache_dir())
        if self.blocks is not None:
            self.audio_rows = {c.clip_id: -1 for c in self.blocks.usable(clips)}
        elif self.cached:
            feats, ok = audio_features(model, clips, config.features_cache, config.feature_batch_size,
                                       config.max_duration_s, progress=config.progress)
            self.audio_table = feats.to(device)
            self.audio_rows = {clips[i].clip_id: row for row, i in enumerate(ok)}
        if self.cached:
            texts = caption_texts(clips, config.languages, with_labels=config.label_captions > 0)
            self.text_table = text_features(model, texts, config.features_cache, progress=config.progress).to(device)
            self.text_rows = {t: i for i, t in enumerate(texts)}

    def usable(self, clips: Sequence[Clip]) -> list[Clip]:
        """The clips whose audio could be decoded (all, when not cached)."""
        return [c for c in clips if c.clip_id in self.audio_rows] if self.cached else list(clips)

    def audio(self, clips: Sequence[Clip], waves: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        if self.blocks is not None:  # augmented crops with autograd in training mode, every block otherwise
            return self.blocks.features(clips, train=self.model.training)
        if self.cached:
            return self.audio_table[[self.audio_rows[c.clip_id] for c in clips]]
        if waves is None:
            waves = [load_clip_window(c, self.model.sample_rate, self.config.max_duration_s) for c in clips]
        return self.model.audio_features(waves)

    def audio_batches(self, clips: Sequence[Clip], batch_size: int) -> Iterator[tuple[list[Clip], torch.Tensor]]:
        """(clips, features) of ``clips`` in order, ``batch_size`` at a time; raw audio is decoded
        by the run's DataLoader workers (the first ``max_duration_s`` seconds of each clip, which
        the audio backbone chunks as the library does when it embeds a clip)."""
        if self.cached:
            for start in range(0, len(clips), batch_size):
                chunk = list(clips[start : start + batch_size])
                yield chunk, self.audio(chunk)
            return
        key = (batch_size, tuple(c.clip_id for c in clips))
        if self._eval_loader is None or self._eval_loader[0] != key:
            self._eval_loader = (key, ClipLoader(clips, batch_size, self.config, self.model.sample_rate, self.device))
        for batch in self._eval_loader[1]:
            yield batch.clips, self.audio(batch.clips, batch.waves)

    def text(self, captions: Sequence[str]) -> torch.Tensor:
        if self.cached:
            return self.text_table[[self.text_rows[t] for t in captions]]
        return self.model.text_features(list(captions)).to(self.device)


# -- optimisation ----------------------------------------------------------------------------

def make_loss(config: TrainConfig) -> nn.Module:
    """The training loss of ``config.loss`` from the registry :data:`atr_demo.losses.TRAINING_LOSSES`."""
    return build_training_loss(config.loss, config.to_dict())


# -- validation ------------------------------------------------------------------------------

def flat_metrics(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{"text_to_audio": {"R@1": …}}`` → ``{"t2a_R@1": …}``."""
    short = {"text_to_audio": "t2a", "audio_to_text": "a2t"}
    return {f"{short[d]}_{k}": v for d, vals in metrics.items() for k, v in vals.items()}


def validate(model: ATRModel, source: FeatureSource, clips: Sequence[Clip], batch_size: int,
             languages: Sequence[str] = ()) -> dict[str, float]:
    """Cosine-scored retrieval metrics on ``clips`` (every caption a query; Clotho protocol);
    with ``languages``, the captions of every language are queries."""
    if len(clips) < 2:
        return {}
    was_training = model.training
    model.eval()
    audio, text, text_to_audio = [], [], []
    start = 0
    with torch.no_grad():
        for chunk, feats in source.audio_batches(clips, batch_size):
            audio.append(model.project_audio(feats.float()).float().cpu())
            per_clip = [clip_captions(c, languages) for c in chunk]
            caps = [t for cs in per_clip for t in cs]
            text.append(model.project_text(source.text(caps).float()).float().cpu())
            text_to_audio += [start + j for j, cs in enumerate(per_clip) for _ in cs]
            start += len(chunk)
    model.train(was_training)
    a, t = torch.cat(audio), torch.cat(text)
    return flat_metrics(retrieval_metrics(t @ a.T, torch.tensor(text_to_audio)))


# -- the loop --------------------------------------------------------------------------------

def epoch_batches(clips: Sequence[Clip], config: TrainConfig, epoch: int) -> list[tuple[list[Clip], list[str]]]:
    """This epoch's batches: (clips, their captions), a function of (seed, epoch)
    (:func:`training.pipeline.compose_epoch`)."""
    return [([c for c, _ in b], [t for _, t in b]) for b in compose_epoch(clips, config, epoch)]


def language_batch(clips: Sequence[Clip], config: TrainConfig, rng: random.Random, cacl: bool) -> list[list[str]]:
    """The other-language captions of a batch (the anchor language's come from the batch itself).

    KCL: one caption per item in each of ``languages[1:]`` → K − 1 lists. CACL: one list, each
    item's caption in a language drawn uniformly from ``languages[1:]`` per item.
    """
    others = config.languages[1:]
    if cacl:
        return [[rng.choice(language_captions(c, rng.choice(others))) for c in clips]]
    return [[rng.choice(language_captions(c, lang)) for c in clips] for lang in others]


def freeze_backbones(model_config: Any) -> None:
    """Cached features come from frozen backbones: set ``trainable`` false on both towers."""
    for tower in (model_config.audio, model_config.text):
        if tower.trainable:
            logger.info("cached features: the %s backbone is frozen (trainable=false)", tower.kind)
            tower.trainable = False


def warm_start(model: ATRModel, folder: str) -> None:
    """Load the weights of a saved model folder (``config.json`` + ``model.safetensors``, e.g. another
    run's ``out/best``) into ``model``; they must match its architecture (``init_from``)."""
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise ConfigError(f"init_from: {path} does not exist; point init_from at a saved model folder (out/best)")
    model.load_checkpoint_state_dict(load_file(str(path)), source=str(path))
    logger.info("initialised the model from %s", folder)


def set_train_mode(model: ATRModel, model_config: Any) -> None:
    """Training mode, except for frozen towers (they keep dropout and batch-norm statistics fixed)."""
    model.train()
    for tower, cfg in ((model.audio_backbone, model_config.audio), (model.text_backbone, model_config.text)):
        if not cfg.trainable:
            tower.eval()


def compile_backbones(model: ATRModel) -> None:
    """``torch.compile`` the networks inside the two backbones, in place (state-dict keys unchanged).

    The backbones' own ``forward`` takes waveform lists and strings (decoding, tokenising), which
    the compiler cannot trace; their child modules with parameters (the CNN, the transformer) are
    compiled instead."""
    for tower in (model.audio_backbone, model.text_backbone):
        for child in tower.children():
            if any(True for _ in child.parameters()):
                child.compile()


def train(config: TrainConfig, resume: bool = False, stop_after_epoch: int | None = None,
          stop_after_step: int | None = None) -> Path:
    """Train as ``config`` says; return the output folder. Under ``torchrun`` this joins the
    process group (:mod:`training.distributed`) and trains one model with DDP over the ranks.

    Args:
        resume: continue from ``out/last`` (it must exist and match ``config``).
        stop_after_epoch: stop after this epoch's checkpoint (simulates an interruption; tests).
        stop_after_step: stop after the checkpoint of this step (``checkpoint_every_steps``; tests).
    """
    ctx, device = init_distributed(resolve_device(config.device), config.dist_backend, config.dist_timeout_s)
    try:
        run = _Run(config, ctx, device, resume)
        try:
            for epoch in range(run.start_epoch, config.epochs + 1):
                if not run.run_epoch(epoch, stop_after_step):
                    break
                if stop_after_epoch is not None and epoch >= stop_after_epoch:
                    break
        finally:
            run.runlog.close()
        return run.out
    finally:
        shutdown(ctx)


class _Run:
    """One training run's state: model, data, optimiser, sampler, counters (see :func:`train`)."""

    def __init__(self, config: TrainConfig, ctx: DistContext, device: torch.device, resume: bool) -> None:
        self.config, self.ctx, self.device = config, ctx, device
        self.out = out = Path(config.out)
        check_batch_size(config.batch_size, ctx.world_size)
        check_same_config(config.to_dict(), ctx)
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            clean_stale_temporaries(out)
        self.model_config = config.run_model_config()
        if config.use_cached_features:
            freeze_backbones(self.model_config)
        torch.manual_seed(config.seed)
        self.model = model = create_model(self.model_config, seed=config.seed).to(device)
        if config.init_from:
            warm_start(model, config.init_from)
        if config.finetune_blocks:
            names = unfreeze_top_blocks(model, config.finetune_blocks)
            logger.info("fine-tuning %d parameter tensors of the top %d aiSFX conv block(s) on cached activations",
                        len(names), config.finetune_blocks)
        check_pipeline_options(config, model)
        if config.compile:
            compile_backbones(model)
        self.data = data = prepare_data(config)
        if data.noisy:
            logger.info("caption noise: %d of %d training pairs mismatched", len(data.noisy), len(data.train))
        if not ctx.is_main:
            barrier(ctx)  # rank 0 fills the feature cache, the others then read it
        self.source = FeatureSource(model, config, data.train + data.mixture_pool + data.validation, device)
        if ctx.is_main:
            barrier(ctx)
        self.train_clips = self.source.usable(data.train) + self.source.usable(data.mixture_pool)
        self.val_clips = self.source.usable(data.validation)

        self.loss_fn = make_loss(config).to(device)
        groups = {name: GroupSettings(g.lr, g.weight_decay) for name, g in config.param_groups.items()}
        self.optimizer = make_optimizer(config.optimizer, build_param_groups(
            model, self.loss_fn, config.lr, config.weight_decay, groups, config.layer_decay,
            config.decay_bias_and_norm))
        self.runner = StepRunner(model, self.loss_fn, config, self.optimizer, self.source, ctx, device, language_batch)

        self.start_epoch, self.start_batch, self.step, self.best = 1, 0, 0, -math.inf
        self.saved: dict[str, Any] = {}
        if resume:
            restored = restore_checkpoint(out, config, model, self.optimizer, self.loss_fn, ctx.world_size,
                                          write_log=ctx.is_main)
            self.start_epoch, self.start_batch, self.step, self.best = (restored.epoch, restored.batch,
                                                                        restored.step, restored.best)
            self.saved = restored.state
            self.runner.load_scaler_state(self.saved.get("scaler", {}))
        elif ctx.is_main and (out / "log.jsonl").exists():
            (out / "log.jsonl").unlink()
        self.runlog = RunLog(out, ctx.is_main, ctx.world_size, config.batch_size, config.tensorboard)

        self.mixing = bool(config.mixtures and not config.use_cached_features)
        self.sampler = EpochBatchSampler(self.epoch_clips, config, num_replicas=ctx.world_size, rank=ctx.rank)
        if self.start_batch:
            self.sampler.load_state_dict({"epoch": self.start_epoch, "batch": self.start_batch})
        self.loader = PairLoader(self.sampler, config, model.sample_rate, device, decode=not config.use_cached_features)
        steps_per_epoch = len(epoch_batches(self.train_clips, config, 1)) + (1 if self.mixing else 0)
        self.total_steps = max(1, steps_per_epoch * config.epochs)

    def epoch_clips(self, epoch: int) -> list[Clip]:
        """The clips of an epoch: the training clips, plus that epoch's mixtures on raw audio."""
        if self.mixing:
            mixtures = make_mixtures(self.data.train, self.config.mixtures, seed=self.config.seed * 100_003 + epoch)
            return self.train_clips + mixtures
        return self.train_clips

    def checkpoint(self, epoch_done: int, position: dict[str, int], extra: dict[str, Any]) -> None:
        """``out/last`` on rank 0 (the others wait): counters, sampler position, scaler, ``extra``."""
        if self.ctx.is_main:
            save_checkpoint(self.out, self.model, self.config, self.optimizer, self.loss_fn,
                            {"epoch": epoch_done, "step": self.step, "best": self.best, "sampler": position,
                             "world_size": self.ctx.world_size, "scaler": self.runner.scaler_state(), **extra})
        barrier(self.ctx)

    def run_epoch(self, epoch: int, stop_after_step: int | None = None) -> bool:
        """Train, validate and checkpoint one epoch; False when ``stop_after_step`` stopped it."""
        config, sampler = self.config, self.sampler
        began = time.time()
        set_train_mode(self.model, self.model_config)
        language_rng = epoch_rng(config.seed, epoch, "languages")
        losses: list[float] = []
        resumed = epoch == self.start_epoch and self.start_batch
        if resumed:
            language_rng.setstate(_rng_from_json(self.saved["language_rng"]))
            losses = list(self.saved.get("epoch_losses", []))
        n_batches = len(sampler.batches(epoch))
        bar = tqdm(self.loader.epoch(epoch), total=n_batches - (self.start_batch if resumed else 0),
                   desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
                   disable=not config.progress or not self.ctx.is_main)
        for batch in bar:
            lrs = set_learning_rates(self.optimizer, self.step, self.total_steps, config.warmup_steps, config.schedule)
            pairs = sampler.batches(epoch)[batch.index]  # the global batch
            log_step = bool(config.log_every_steps) and (self.step + 1) % config.log_every_steps == 0
            with spec_augmented(self.model.audio_backbone, config,
                                seed_of(config.seed, batch.epoch, batch.index, "specaugment")):
                stats = self.runner.step(batch.clips, batch.captions, batch.waves, [c for c, _ in pairs],
                                         [t for _, t in pairs], language_rng, want_norm=log_step)
            self.step += 1
            losses.append(stats.loss)
            bar.set_postfix(loss=f"{stats.loss:.4f}")
            if log_step:
                memory = {"peak_mem_mb": round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)} \
                    if self.device.type == "cuda" else {}
                self.runlog.write({"kind": "step", "epoch": epoch, "batch": batch.index, "step": self.step,
                                   "loss": stats.loss, "lr": lrs, "grad_norm": stats.grad_norm, **stats.ot,
                                   "samples_per_s": round(stats.samples / max(stats.seconds, 1e-9), 2),
                                   "step_seconds": round(stats.seconds, 6), **memory})
            every = config.checkpoint_every_steps
            if every and self.step % every == 0 and batch.index + 1 < n_batches:
                self.checkpoint(epoch - 1, sampler.state_dict(),
                                {"language_rng": _rng_to_json(language_rng), "epoch_losses": losses})
                if stop_after_step is not None and self.step >= stop_after_step:
                    return False
        bar.close()
        self.finish_epoch(epoch, losses, began)
        return True

    def finish_epoch(self, epoch: int, losses: list[float], began: float) -> None:
        """Validate (rank 0), log the epoch, write ``best/`` when it improved and ``last/``."""
        config = self.config
        val = validate(self.model, self.source, self.val_clips, max(config.batch_size, 64), config.languages) \
            if self.ctx.is_main else {}
        score = val.get(config.best_metric, -float(np.mean(losses)) if losses else -math.inf)
        if config.best_metric not in val and val:
            raise ConfigError(f"best_metric {config.best_metric!r} is not a validation key; use one of {sorted(val)}")
        lr = lr_at(config.lr, max(0, self.step - 1), self.total_steps, config.warmup_steps, config.schedule)
        record = self.runlog.write({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                                    "val": val, "lr": lr, "steps": self.step, "seconds": round(time.time() - began, 3)})
        improved = score > self.best
        if improved:
            self.best = score
            if self.ctx.is_main:
                save_best(self.out, self.model, config, {"epoch": epoch, config.best_metric: score, "val": val})
        self.checkpoint(epoch, {"epoch": epoch + 1, "batch": 0}, {})
        if self.ctx.is_main:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in val.items() if k.endswith(("R@1", "R@5", "mAP@10")))
            logger.info("epoch %d/%d: loss %.4f%s%s (%.1fs)", epoch, config.epochs,
                        record["train_loss"] or float("nan"), f", {shown}" if shown else "",
                        " *best*" if improved else "", record["seconds"])


def _rng_to_json(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from_json(data: list[Any]) -> tuple[Any, ...]:
    return (data[0], tuple(data[1]), data[2])


def main(argv: list[str] | None = None) -> int:
    """``train --config FILE [--set k=v ...] [--resume]``."""
    parser = argparse.ArgumentParser(prog="python -m training train", description="train an audio-text retrieval model")
    parser.add_argument("--config", default=None, help="training config (YAML or JSON)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted keys reach into model.*); repeatable")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last after an interruption")
    parser.add_argument("--push-to-hub", dest="push_to_hub", default=None, metavar="REPO",
                        help="upload OUT/best to this Hub repo (owner/name) at the end (rank 0 only)")
    args = parser.parse_args(argv)
    try:
        config = load_train_config(args.config, args.overrides)
        out = train(config, resume=args.resume)
        if args.push_to_hub and int(os.environ.get("RANK", "0")) == 0:
            from training.push import push  # the Hub client only when pushing

            logger.info("pushed %s to %s: %s", out / "best", args.push_to_hub, push(out / "best", args.push_to_hub))
    except KeyboardInterrupt:
        logger.error("interrupted: the last complete checkpoint is kept; continue with --resume")
        return 130
    except ATRError as exc:
        logger.error("%s", exc)
        return 1
    except RuntimeError as exc:  # a collective failed: another rank died, or a timeout
        if not launched_by_torchrun():
            raise
        logger.error("rank %s: a collective operation failed (another rank died, or none answered within "
                     "dist_timeout_s): %s; the last complete checkpoint is kept: continue with --resume",
                     os.environ.get("RANK"), exc)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {out / 'best'} (best), {out / 'last'} (last), log {out / 'log.jsonl'}")
    return 0

