r"""Multi-process training under ``torchrun``: process group, shards, gathers with gradients.

``torchrun --nproc_per_node=N -m training train --config FILE`` starts N processes with the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``PORT``);
:func:`init_distributed` reads them. Without them (plain ``python -m training train``) the
context is the single process ``rank 0 of 1`` and nothing here communicates.

The global batch of ``B`` items is split into contiguous shards (:func:`shard_bounds`, sizes
differ by at most one); each rank embeds its shard, and :func:`gather_with_grad` concatenates
the shards of all ranks **in rank order**, so every rank holds the same (B, d) embeddings as a
single process would, and computes the same loss ``L`` on them (the cost and the OT plan are
over the global batch).

Gradients. On rank r, autograd reaches the parameters only through rank r's own shard (the
other shards arrive as constants), so rank r's gradient is the part of ``∂L/∂θ`` that flows
through shard r. :class:`DistributedDataParallel` *averages* gradients over ranks, so the
backward of the gather multiplies the shard's gradient by ``W`` (the world size):

.. math::
    \frac1W \sum_r W\,\frac{\partial L}{\partial e_r}\frac{\partial e_r}{\partial \theta}
    = \frac{\partial L}{\partial \theta},

the single-process gradient of the same global batch. Parameters that enter ``L`` directly
(the metric ``M``, a loss temperature) get the full ``∂L/∂θ`` on every rank, whose average is
itself. This needs every rank to compute the same ``L`` (same config, same global batch), which
:func:`check_same_config` checks at start-up.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from atr_demo.errors import ConfigError

logger = logging.getLogger(__name__)

#: Backends a config may name; ``auto`` is NCCL on CUDA, gloo on the CPU.
BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False  # this context created the process group (and destroys it in shutdown)

    @property
    def enabled(self) -> bool:
        """True when a process group is up (``world_size`` > 1 or launched by torchrun)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes logs, checkpoints and pushes."""
        return self.rank == 0


SINGLE = DistContext()


def launched_by_torchrun() -> bool:
    """Whether the torchrun environment (``WORLD_SIZE`` and ``RANK``) is set."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def choose_backend(device: torch.device, requested: str = "auto") -> str:
    """The process-group backend: ``auto`` → NCCL on CUDA, gloo on the CPU.

    Raises:
        ConfigError: an unknown backend, or NCCL asked for on a CPU device.
    """
    if requested not in BACKENDS:
        raise ConfigError(f"dist_backend: unknown backend {requested!r}; use one of {', '.join(BACKENDS)}")
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if requested == "nccl" and device.type != "cuda":
        raise ConfigError("dist_backend: nccl needs CUDA devices; use dist_backend: gloo (or auto) on the CPU")
    return requested


def init_distributed(
    device: torch.device, backend: str = "auto", timeout_s: float = 600.0
) -> tuple[DistContext, torch.device]:
    """Join the torchrun process group if launched by torchrun; return (context, this rank's device).

    On CUDA each rank takes ``cuda:LOCAL_RANK``. ``timeout_s`` bounds every collective, so a
    rank that dies makes the others fail after at most that long instead of hanging.
    """
    if not launched_by_torchrun():
        return SINGLE, device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    name = choose_backend(device, backend)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) on this node; "
                              f"lower --nproc_per_node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(name, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    else:
        name = dist.get_backend()
    logger.info("distributed: rank %d of %d (local %d), backend %s, device %s", rank, world, local_rank, name, device)
    return DistContext(rank, world, local_rank, name, owns), device


def shutdown(ctx: DistContext) -> None:
    """Leave the process group if this context created it (no-op for a single process)."""
    if ctx.enabled and ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for a single process)."""
    if ctx.enabled:
        dist.barrier()


def check_batch_size(batch_size: int, world_size: int) -> None:
    """The global batch must split evenly over the ranks.

    Raises:
        ConfigError: naming both numbers and the nearest valid batch sizes.
    """
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        raise ConfigError(f"batch_size {batch_size} (the global batch) is not divisible by the world size "
                          f"{world_size}; use {lower or world_size} or {lower + world_size}")
    if batch_size // world_size < 1:
        raise ConfigError(f"batch_size {batch_size} is smaller than the world size {world_size}")


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous shard of n items; shard sizes differ by at most one
    (the first ``n % W`` ranks take one more), as :func:`numpy.array_split`."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_sizes(n: int, world_size: int) -> list[int]:
    """Sizes of the W shards of n items (:func:`shard_bounds`)."""
    return [b - a for a, b in (shard_bounds(n, r, world_size) for r in range(world_size))]


def _gather(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """All ranks' shards (row counts ``sizes``, padded to the largest for the collective),
    concatenated in rank order."""
    longest = max(sizes)
    padded = x
    if x.shape[0] < longest:
        padded = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    buffers = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(buffers, padded.contiguous())
    return torch.cat([b[:s] for b, s in zip(buffers, sizes, strict=True)])


class _GatherWithGrad(torch.autograd.Function):
    """Forward: all-gather (B, …) from the shards; backward: this shard's rows of the gradient × W
    (see the module docstring for why W)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: tuple[int, ...], rank: int) -> torch.Tensor:  # type: ignore[override]
        ctx.start = sum(sizes[:rank])
        ctx.stop = ctx.start + sizes[rank]
        ctx.world = len(sizes)
        return _gather(x, sizes)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        return grad[ctx.start : ctx.stop] * ctx.world, None, None


def gather_with_grad(x: torch.Tensor, ctx: DistContext, sizes: Sequence[int]) -> torch.Tensor:
    """(n_r, …) shard of this rank → (Σ n_r, …) global tensor, differentiable w.r.t. ``x``.

    ``sizes`` are the shard sizes of all ranks (every rank knows them: the global batch is
    drawn identically everywhere). Identity for a single process.
    """
    if not ctx.enabled or ctx.world_size == 1:
        return x
    if x.shape[0] != sizes[ctx.rank]:
        raise ValueError(f"rank {ctx.rank} holds {x.shape[0]} rows, expected {sizes[ctx.rank]}")
    return _GatherWithGrad.apply(x, tuple(int(s) for s in sizes), ctx.rank)


def gather_no_grad(x: torch.Tensor, ctx: DistContext, sizes: Sequence[int]) -> torch.Tensor:
    """As :func:`gather_with_grad` for tensors that need no gradient (detached result)."""
    if not ctx.enabled or ctx.world_size == 1:
        return x.detach()
    with torch.no_grad():
        return _gather(x.detach(), [int(s) for s in sizes])


def broadcast_(tensors: Sequence[torch.Tensor], ctx: DistContext, src: int = 0) -> None:
    """Overwrite ``tensors`` in place with rank ``src``'s values (no-op for a single process)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src)


def check_same_config(config: dict[str, Any], ctx: DistContext) -> None:
    """Every rank must run the same config; raise naming the keys where rank r differs from rank 0.

    Raises:
        ConfigError: ``config differs between ranks: rank 1 has seed=3 where rank 0 has seed=0``.
    """
    if not ctx.enabled:
        return
    mine = json.loads(json.dumps(config, sort_keys=True, default=str))
    everyone: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(everyone, mine)
    reference = everyone[0]
    problems = []
    for rank, other in enumerate(everyone[1:], start=1):
        for key in sorted(set(reference) | set(other)):
            if reference.get(key) != other.get(key):
                problems.append(f"rank {rank} has {key}={other.get(key)!r} where rank 0 has {reference.get(key)!r}")
    if problems:
        raise ConfigError("the training config differs between ranks (every rank must read the same config and "
                          "--set overrides): " + "; ".join(problems[:5]))
