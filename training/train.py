"""``python -m training train --config FILE [--set key=value ...] [--resume]``.

One epoch = train (optimiser step on the network, then the PSD projection of M when the metric
is learned) → validate (text→audio and audio→text R@1/5/10, mAP@10 on the validation split,
cosine scoring) → checkpoint. Output folder::

    out/last/    config.json, model.safetensors, train_config.json,
                 optimizer.safetensors (tensors of the optimiser and loss state, torch RNG),
                 trainer_state.json (epoch, step, scalars of the optimiser state, Python/NumPy
                 RNG states, best score)
    out/best/    config.json, model.safetensors, train_config.json, metrics.json
    out/log.jsonl  one JSON object per epoch

Checkpoints are written into a temporary folder and swapped in by renames, with SIGINT deferred
meanwhile, so an interruption never leaves a half-written ``last/`` or ``best/``. Nothing is
pickled. ``--resume`` restores weights, optimiser, RNG states and the step counter; data order
and mixtures are a function of (seed, epoch), so a resumed run ends with the same weights as an
uninterrupted one (bit for bit on a CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from atr_demo.errors import ATRError, ConfigError
from atr_demo.evaluation import retrieval_metrics
from atr_demo.fileio import atomic_replace_dir
from atr_demo.losses import build_loss
from atr_demo.model import ATRModel, create_model

from training.augment import make_mixtures
from training.batching import caption_groups
from training.config import TrainConfig, load_train_config
from training.datasets import Clip, language_captions
from training.features import audio_features, text_features
from training.pipeline import (
    Batch,
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

logger = logging.getLogger(__name__)

#: Keys of the training config that may differ between a run and its resumption.
RESUMABLE_CHANGES = ("epochs", "progress", "device", "features_cache", "feature_batch_size",
                     "num_workers", "persistent_workers", "prefetch_factor", "pin_memory")
__all__ = ["epoch_rng", "language_keys"]  # re-exported from training.pipeline


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
        if self.cached:
            feats, ok = audio_features(model, clips, config.features_cache, config.feature_batch_size,
                                       config.max_duration_s, progress=config.progress)
            self.audio_table = feats.to(device)
            self.audio_rows = {clips[i].clip_id: row for row, i in enumerate(ok)}
            texts = caption_texts(clips, config.languages)
            self.text_table = text_features(model, texts, config.features_cache, progress=config.progress).to(device)
            self.text_rows = {t: i for i, t in enumerate(texts)}

    def usable(self, clips: Sequence[Clip]) -> list[Clip]:
        """The clips whose audio could be decoded (all, when not cached)."""
        return [c for c in clips if c.clip_id in self.audio_rows] if self.cached else list(clips)

    def audio(self, clips: Sequence[Clip], waves: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
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

def build_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def lr_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up, then constant or cosine to 0."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    span = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_loss(config: TrainConfig) -> nn.Module:
    """The training loss module from :func:`atr_demo.losses.build_loss`."""
    if config.loss == "mltm":
        return build_loss("mltm", eps=config.eps)
    if config.loss == "mltm_partial":
        return build_loss("mltm_partial", eps=config.eps, mass=config.mass)
    if config.loss == "triplet":
        return build_loss("triplet", margin=config.margin)
    if config.loss == "softlabel":
        return build_loss("softlabel", target_temperature=config.target_temperature)
    if config.loss in ("kcl", "cacl"):
        return build_loss(config.loss, base="infonce")
    if config.loss in ("kcl_mltm", "cacl_mltm"):
        return build_loss(config.loss.removesuffix("_mltm"), base="mltm", eps=config.eps)
    return build_loss("infonce")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but no GPU is available; use device=cpu or auto")
    return torch.device(name)


# -- checkpoint state ------------------------------------------------------------------------

def flatten_state(state: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested dict/list into ``tensors`` (key = dotted path); return the
    JSON-able remainder with ``{"__tensor__": key}`` placeholders."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state.detach().cpu().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        return {"__dict__": [[k, flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        return {"__list__": [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(state)],
                "tuple": isinstance(state, tuple)}
    if isinstance(state, float) and not math.isfinite(state):
        return {"__float__": repr(state)}
    return state


def unflatten_state(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state` (dict keys keep their type: int keys stay ints)."""
    if isinstance(data, dict):
        if "__tensor__" in data:
            return tensors[data["__tensor__"]]
        if "__dict__" in data:
            return {k: unflatten_state(v, tensors) for k, v in data["__dict__"]}
        if "__list__" in data:
            items = [unflatten_state(v, tensors) for v in data["__list__"]]
            return tuple(items) if data.get("tuple") else items
        if "__float__" in data:
            return float(data["__float__"])
    return data


def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON part, tensor part) of the Python, NumPy and torch RNG states."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    json_part = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return json_part, tensors


def set_rng_state(json_part: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = json_part["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = json_part["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold SIGINT until the block is done (only in the main thread)."""
    received: list[Any] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *a: received.append(a))
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def save_checkpoint(
    out: Path,
    model: ATRModel,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    trainer: dict[str, Any],
) -> None:
    """Write ``out/last`` atomically: weights, configs, optimiser + loss state, RNG, counters."""
    with deferred_sigint():
        tmp = out / f".last.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save_pretrained(tmp)
        config.save(tmp / "train_config.json")
        tensors: dict[str, torch.Tensor] = {}
        optim_json = flatten_state(optimizer.state_dict(), "optim", tensors)
        loss_json = flatten_state(loss_fn.state_dict(), "loss", tensors)
        rng_json, rng_tensors = rng_state()
        tensors.update(rng_tensors)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        state = {**trainer, "optimizer": optim_json, "loss": loss_json, "rng": rng_json}
        (tmp / "trainer_state.json").write_text(json.dumps(state) + "\n", encoding="utf-8")
        atomic_replace_dir(tmp, out / "last")


def save_best(out: Path, model: ATRModel, config: TrainConfig, metrics: dict[str, Any]) -> None:
    with deferred_sigint():
        tmp = out / f".best.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save_pretrained(tmp)
        config.save(tmp / "train_config.json")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        atomic_replace_dir(tmp, out / "best")


def find_last(out: Path) -> Path | None:
    """The last complete checkpoint folder (``last`` or, after an interrupted swap, ``last.old``)."""
    for name in ("last", "last.old"):
        path = out / name
        if (path / "trainer_state.json").is_file() and (path / "optimizer.safetensors").is_file():
            return path
    return None


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


def compute_loss(loss_fn: nn.Module, model: ATRModel, source: FeatureSource, config: TrainConfig,
                 batch_clips: Sequence[Clip], captions: Sequence[str], group_ids: torch.Tensor | None,
                 rng: random.Random, use_amp: bool, device: torch.device,
                 waves: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """One batch's loss under the call convention of ``loss_fn`` (see :mod:`atr_demo.losses`);
    ``waves``: the batch's decoded audio (raw-audio training)."""
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
        a = model.project_audio(source.audio(batch_clips, waves))
        text_feats = source.text(captions)
        t = model.project_text(text_feats)
        extra = []
        if getattr(loss_fn, "multilingual", False):
            extra = [model.project_text(source.text(caps))
                     for caps in language_batch(batch_clips, config, rng, cacl=config.loss.startswith("cacl"))]
    if extra:
        texts = torch.stack([t.float()] + [e.float() for e in extra])
        return loss_fn(a.float(), texts, model.metric, group_ids=group_ids)
    if getattr(loss_fn, "needs_text_similarity", False):
        unit = F.normalize(text_feats.detach().float(), dim=-1)
        return loss_fn(a.float(), t.float(), model.metric, group_ids=group_ids, text_similarity=unit @ unit.T)
    return loss_fn(a.float(), t.float(), model.metric, group_ids=group_ids)


def freeze_backbones(model_config: Any) -> None:
    """Cached features come from frozen backbones: set ``trainable`` false on both towers."""
    for tower in (model_config.audio, model_config.text):
        if tower.trainable:
            logger.info("cached features: the %s backbone is frozen (trainable=false)", tower.kind)
            tower.trainable = False


def set_train_mode(model: ATRModel, model_config: Any) -> None:
    """Training mode, except for frozen towers (they keep dropout and batch-norm statistics fixed)."""
    model.train()
    for tower, cfg in ((model.audio_backbone, model_config.audio), (model.text_backbone, model_config.text)):
        if not cfg.trainable:
            tower.eval()


def train_step(loss_fn: nn.Module, model: ATRModel, source: FeatureSource, config: TrainConfig,
               optimizer: torch.optim.Optimizer, batch: Batch, language_rng: random.Random, use_amp: bool,
               device: torch.device) -> float:
    """One optimiser step on ``batch`` (then the PSD projection of a learned metric); the loss."""
    group_ids = None
    if config.batching == "ids":
        group_ids = torch.tensor(caption_groups(batch.captions, [c.group for c in batch.clips]), device=device)
    with spec_augmented(model.audio_backbone, config, seed_of(config.seed, batch.epoch, batch.index, "specaugment")):
        loss = compute_loss(loss_fn, model, source, config, batch.clips, batch.captions, group_ids, language_rng,
                            use_amp, device, batch.waves)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if model.config.metric == "mahalanobis":
        model.metric.project_psd_()
    return float(loss.detach())


def restore_checkpoint(out: Path, config: TrainConfig, model: ATRModel, optimizer: torch.optim.Optimizer,
                       loss_fn: nn.Module) -> tuple[int, int, float]:
    """Load ``out/last`` (weights, optimiser, loss state, RNG states) for ``--resume``, trim
    ``log.jsonl`` to its epochs; return (first epoch to run, step, best score).

    A config key the checkpoint's ``train_config.json`` lacks (written before the key existed)
    counts as that key's default.
    """
    last = find_last(out)
    if last is None:
        raise ConfigError(f"--resume: no complete checkpoint in {out / 'last'}")
    saved = json.loads((last / "train_config.json").read_text(encoding="utf-8"))
    defaults = {k: f.default for k, f in TrainConfig.model_fields.items() if not f.is_required()}
    changed = sorted(k for k, v in config.to_dict().items()
                     if saved.get(k, defaults.get(k)) != v and k not in RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(f"--resume: the config differs from the checkpoint's in: {', '.join(changed)}")
    model.load_checkpoint_state_dict(load_file(str(last / "model.safetensors")), source=str(last))
    state = json.loads((last / "trainer_state.json").read_text(encoding="utf-8"))
    tensors = load_file(str(last / "optimizer.safetensors"))
    optimizer.load_state_dict(unflatten_state(state["optimizer"], tensors))
    loss_fn.load_state_dict(unflatten_state(state["loss"], tensors))
    set_rng_state(state["rng"], tensors)
    log_path = out / "log.jsonl"
    if log_path.is_file():
        kept = [line for line in log_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["epoch"] <= state["epoch"]]
        log_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    logger.info("resumed from %s at epoch %d (step %d)", last, state["epoch"] + 1, state["step"])
    return state["epoch"] + 1, state["step"], state["best"]


def train(config: TrainConfig, resume: bool = False, stop_after_epoch: int | None = None) -> Path:
    """Train as ``config`` says; return the output folder.

    Args:
        resume: continue from ``out/last`` (it must exist and match ``config``).
        stop_after_epoch: stop after this epoch's checkpoint (simulates an interruption; tests).
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    model_config = config.run_model_config()
    if config.use_cached_features:
        freeze_backbones(model_config)
    torch.manual_seed(config.seed)
    model = create_model(model_config, seed=config.seed).to(device)
    check_pipeline_options(config, model)
    data = prepare_data(config)
    if data.noisy:
        logger.info("caption noise: %d of %d training pairs mismatched", len(data.noisy), len(data.train))
    source = FeatureSource(model, config, data.train + data.mixture_pool + data.validation, device)
    train_clips = source.usable(data.train) + source.usable(data.mixture_pool)
    val_clips = source.usable(data.validation)

    loss_fn = make_loss(config).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + [p for p in loss_fn.parameters() if p.requires_grad]
    optimizer = build_optimizer(config, params)

    start_epoch, step, best = 1, 0, -math.inf
    log_path = out / "log.jsonl"
    if resume:
        start_epoch, step, best = restore_checkpoint(out, config, model, optimizer, loss_fn)
    elif log_path.exists():
        log_path.unlink()

    mixing = config.mixtures and not config.use_cached_features

    def epoch_clips(epoch: int) -> list[Clip]:
        """The clips of an epoch: the training clips, plus that epoch's mixtures on raw audio."""
        if mixing:
            return train_clips + make_mixtures(data.train, config.mixtures, seed=config.seed * 100_003 + epoch)
        return train_clips

    sampler = EpochBatchSampler(epoch_clips, config)
    loader = PairLoader(sampler, config, model.sample_rate, device, decode=not config.use_cached_features)
    steps_per_epoch = len(epoch_batches(train_clips, config, 1)) + (1 if mixing else 0)
    total_steps = max(1, steps_per_epoch * config.epochs)
    use_amp = config.amp and device.type == "cuda"
    if config.amp and not use_amp:
        logger.info("amp is for GPUs only; training in float32 on %s", device)

    for epoch in range(start_epoch, config.epochs + 1):
        began = time.time()
        set_train_mode(model, model_config)
        losses = []
        bar = tqdm(loader.epoch(epoch), total=len(sampler.batches(epoch)), desc=f"epoch {epoch}/{config.epochs}",
                   unit="batch", disable=not config.progress, leave=False)
        language_rng = epoch_rng(config.seed, epoch, "languages")
        for batch in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, step, total_steps)
            loss = train_step(loss_fn, model, source, config, optimizer, batch, language_rng, use_amp, device)
            step += 1
            losses.append(loss)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.close()
        val = validate(model, source, val_clips, max(config.batch_size, 64), config.languages)
        score = val.get(config.best_metric, -float(np.mean(losses)) if losses else -math.inf)
        if config.best_metric not in val and val:
            raise ConfigError(f"best_metric {config.best_metric!r} is not a validation key; use one of {sorted(val)}")
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None, "val": val,
                  "lr": lr_at(config, max(0, step - 1), total_steps), "steps": step,
                  "seconds": round(time.time() - began, 3)}
        improved = score > best
        if improved:
            best = score
            save_best(out, model, config, {"epoch": epoch, config.best_metric: score, "val": val})
        save_checkpoint(out, model, config, optimizer, loss_fn, {"epoch": epoch, "step": step, "best": best})
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        shown = ", ".join(f"{k} {v:.3f}" for k, v in val.items() if k.endswith(("R@1", "R@5", "mAP@10")))
        logger.info("epoch %d/%d: loss %.4f%s%s (%.1fs)", epoch, config.epochs, record["train_loss"] or float("nan"),
                    f", {shown}" if shown else "", " *best*" if improved else "", record["seconds"])
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    return out


def main(argv: list[str] | None = None) -> int:
    """``train --config FILE [--set k=v ...] [--resume]``."""
    parser = argparse.ArgumentParser(prog="python -m training train", description="train an audio-text retrieval model")
    parser.add_argument("--config", default=None, help="training config (YAML or JSON)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted keys reach into model.*); repeatable")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last after an interruption")
    args = parser.parse_args(argv)
    try:
        config = load_train_config(args.config, args.overrides)
        out = train(config, resume=args.resume)
    except KeyboardInterrupt:
        logger.error("interrupted: the last complete checkpoint is kept; continue with --resume")
        return 130
    except ATRError as exc:
        logger.error("%s", exc)
        return 1
    print(f"done: {out / 'best'} (best), {out / 'last'} (last), log {out / 'log.jsonl'}")
    return 0

