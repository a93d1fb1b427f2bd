"""Checkpoints of a training run: ``out/last`` (everything ``--resume`` needs) and ``out/best``.

``out/last`` holds the weights and configs, ``optimizer.safetensors`` (tensors of the optimiser
and loss state, torch RNG), ``trainer_state.json`` (epoch, step, best score, the sampler position
``{"epoch", "batch"}`` so a checkpoint written every N steps resumes mid-epoch, the world size,
the GradScaler state, Python/NumPy RNG states, scalars of the optimiser state) and ``log.jsonl``,
the training log as it was when the checkpoint was written.

Folders are written into a temporary folder and swapped in by renames
(:func:`atr_demo.fileio.atomic_replace_dir`) with SIGINT deferred, so a kill never leaves a
half-written ``last/`` or ``best/``; the temporary folders a kill leaves behind are removed at
the next start (:func:`training.runlog.clean_stale_temporaries`). Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from atr_demo.errors import ConfigError
from atr_demo.fileio import atomic_replace_dir
from atr_demo.model import ATRModel

from training.config import TrainConfig
from training.runlog import LOG_NAME, restore_from, snapshot_into

logger = logging.getLogger(__name__)

#: Keys of the training config that may differ between a run and its resumption.
RESUMABLE_CHANGES = ("epochs", "progress", "device", "features_cache", "feature_batch_size",
                     "num_workers", "persistent_workers", "prefetch_factor", "pin_memory",
                     "log_every_steps", "tensorboard", "checkpoint_every_steps", "dist_backend", "dist_timeout_s")


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
    """Write ``out/last`` atomically: weights, configs, optimiser + loss state, RNG, counters, and
    a copy of ``out/log.jsonl`` as it is now (the log that belongs to this checkpoint)."""
    with staged_checkpoint(out, "last", model, config) as tmp:
        tensors: dict[str, torch.Tensor] = {}
        optim_json = flatten_state(optimizer.state_dict(), "optim", tensors)
        loss_json = flatten_state(loss_fn.state_dict(), "loss", tensors)
        rng_json, rng_tensors = rng_state()
        tensors.update(rng_tensors)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        state = {**trainer, "optimizer": optim_json, "loss": loss_json, "rng": rng_json}
        (tmp / "trainer_state.json").write_text(json.dumps(state) + "\n", encoding="utf-8")
        snapshot_into(out, tmp)


def save_best(out: Path, model: ATRModel, config: TrainConfig, metrics: dict[str, Any]) -> None:
    with staged_checkpoint(out, "best", model, config) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def staged_checkpoint(out: Path, name: str, model: ATRModel, config: TrainConfig) -> Iterator[Path]:
    """A fresh ``out/.<name>.tmp-<pid>`` folder holding the model and its training config, for the
    block to add files to; swapped in as ``out/<name>`` (atomically, Ctrl-C deferred) when the block
    ends without error. A block that raises leaves the previous ``out/<name>`` as it was."""
    with deferred_sigint():
        tmp = out / f".{name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save_pretrained(tmp)
        config.save(tmp / "train_config.json")
        yield tmp
        atomic_replace_dir(tmp, out / name)


def find_last(out: Path) -> Path | None:
    """The last complete checkpoint folder (``last`` or, after an interrupted swap, ``last.old``)."""
    for name in ("last", "last.old"):
        path = out / name
        if (path / "trainer_state.json").is_file() and (path / "optimizer.safetensors").is_file():
            return path
    return None


@dataclass
class Restored:
    """What ``--resume`` restores besides the weights and the optimiser: counters, the position in
    the epoch, the trainer's extra state (grad scaler, the epoch's losses so far)."""

    epoch: int  # the epoch to run (the checkpoint's, when it was written mid-epoch)
    step: int
    best: float
    batch: int = 0  # the next batch of ``epoch``
    state: dict[str, Any] = field(default_factory=dict)


def restore_checkpoint(out: Path, config: TrainConfig, model: ATRModel, optimizer: torch.optim.Optimizer,
                       loss_fn: nn.Module, world_size: int = 1, write_log: bool = True) -> Restored:
    """Load ``out/last`` (weights, optimiser, loss state, RNG states) for ``--resume`` and make
    ``log.jsonl`` the log that belongs to it (``write_log``: on the main process only).

    A config key the checkpoint's ``train_config.json`` lacks (written before the key existed)
    counts as that key's default. A checkpoint written at the end of an epoch resumes with any
    number of processes (the batches of later epochs depend on the seed and the global batch
    only); one written mid-epoch needs the world size it was written with, because the global
    batches of a multi-process epoch are trimmed to a multiple of the world size.
    """
    last = find_last(out)
    if last is None:
        raise ConfigError(f"--resume: no complete checkpoint in {out / 'last'}")
    saved = json.loads((last / "train_config.json").read_text(encoding="utf-8"))
    changed = [k for k in config.changed_keys(saved) if k not in RESUMABLE_CHANGES]
    if changed:
        raise ConfigError(f"--resume: the config differs from the checkpoint's in: {', '.join(changed)}")
    state = json.loads((last / "trainer_state.json").read_text(encoding="utf-8"))
    sampler = state.get("sampler", {"epoch": state["epoch"] + 1, "batch": 0})
    saved_world = int(state.get("world_size", 1))
    if sampler["batch"] and saved_world != world_size:
        raise ConfigError(f"--resume: {last} was written in the middle of epoch {sampler['epoch']} by {saved_world} "
                          f"process(es); resume it with {saved_world} (torchrun --nproc_per_node={saved_world}), "
                          f"or from a checkpoint written at the end of an epoch")
    if saved_world != world_size:
        logger.info("resuming a %d-process checkpoint with %d processes", saved_world, world_size)
    model.load_checkpoint_state_dict(load_file(str(last / "model.safetensors")), source=str(last))
    tensors = load_file(str(last / "optimizer.safetensors"))
    optimizer.load_state_dict(unflatten_state(state["optimizer"], tensors))
    loss_fn.load_state_dict(unflatten_state(state["loss"], tensors))
    set_rng_state(state["rng"], tensors)
    log_path = out / LOG_NAME
    if write_log and restore_from(out, last) < 0 and log_path.is_file():  # no log copy in it: trim by epoch
        kept = [line for line in log_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("epoch", 0) <= state["epoch"]]
        log_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    logger.info("resumed from %s at epoch %d, batch %d (step %d)", last, sampler["epoch"], sampler["batch"],
                state["step"])
    return Restored(sampler["epoch"], state["step"], state["best"], sampler["batch"], state)
