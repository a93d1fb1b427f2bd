"""Distributed training pieces on the CPU with gloo and 2 processes: shards, the all-gather with
gradients (DDP's mean of the ranks' gradients equals the single-process gradient of the global
batch), the config check across ranks, bad input."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from atr_demo.errors import ConfigError
from atr_demo.losses import MLTMLoss
from atr_demo.metric import MahalanobisMetric

from training import distributed as dist_mod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})


def _problem() -> tuple[nn.Module, MahalanobisMetric, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    encoder = nn.Linear(12, 8)
    metric = MahalanobisMetric(8)
    with torch.no_grad():
        metric.M.add_(0.1 * torch.randn(8, 8)).copy_(metric.M @ metric.M.T)
    x = torch.randn(6, 12)
    y = torch.randn(6, 8)
    return encoder, metric, x, y


def _loss(encoder: nn.Module, metric: MahalanobisMetric, x: torch.Tensor, y: torch.Tensor,
          gather=lambda t: t) -> torch.Tensor:
    a = gather(F.normalize(encoder(x), dim=-1))
    t = gather(F.normalize(y, dim=-1))
    return MLTMLoss(eps=0.1)(a, t, metric)


def _gather_worker(rank: int, world: int, port: int, folder: str) -> None:
    _env(rank, world, port)
    ctx, _ = dist_mod.init_distributed(torch.device("cpu"), "gloo", timeout_s=60)
    try:
        encoder, metric, x, y = _problem()
        sizes = dist_mod.shard_sizes(len(x), world)
        lo, hi = dist_mod.shard_bounds(len(x), rank, world)
        model = nn.ModuleDict({"encoder": encoder, "metric": metric})
        ddp = nn.parallel.DistributedDataParallel(model)
        def forward(_: torch.Tensor) -> torch.Tensor:
            return _loss(encoder, metric, x[lo:hi], y[lo:hi],
                         gather=lambda t: dist_mod.gather_with_grad(t, ctx, sizes))

        model.forward = forward  # type: ignore[method-assign]  # DDP syncs the gradients of its forward
        loss = ddp(x)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        torch.save({"loss": loss.detach(), "grads": grads}, Path(folder) / f"rank{rank}.pt")
        dist_mod.check_same_config({"seed": 0, "rank_only": rank if rank == 1 else 0}, ctx)
    except ConfigError as exc:
        (Path(folder) / f"error{rank}.txt").write_text(str(exc))
    finally:
        dist_mod.shutdown(ctx)


@pytest.mark.slow
def test_gathered_loss_and_ddp_gradient_equal_the_single_process_ones(tmp_path: Path) -> None:
    mp.spawn(_gather_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    encoder, metric, x, y = _problem()
    loss = _loss(encoder, metric, x, y)
    loss.backward()
    expected = {"encoder.weight": encoder.weight.grad, "encoder.bias": encoder.bias.grad, "metric.M": metric.M.grad}
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(got["loss"], loss.detach(), atol=1e-6)
        assert set(got["grads"]) == set(expected)
        for name, grad in expected.items():
            assert torch.allclose(got["grads"][name], grad, atol=1e-6, rtol=1e-5), (rank, name)
        message = (tmp_path / f"error{rank}.txt").read_text()
        assert "differs between ranks" in message and "rank 1 has rank_only=1 where rank 0 has 0" in message


def test_shards_and_bad_input() -> None:
    assert [dist_mod.shard_bounds(7, r, 3) for r in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert dist_mod.shard_sizes(8, 2) == [4, 4]
    dist_mod.check_batch_size(8, 2)
    with pytest.raises(ConfigError, match="batch_size 9 .* not divisible by the world size 2; use 8 or 10"):
        dist_mod.check_batch_size(9, 2)
    with pytest.raises(ConfigError, match="unknown backend 'mpi'"):
        dist_mod.choose_backend(torch.device("cpu"), "mpi")
    with pytest.raises(ConfigError, match="nccl needs CUDA"):
        dist_mod.choose_backend(torch.device("cpu"), "nccl")
    assert dist_mod.choose_backend(torch.device("cpu")) == "gloo"
    assert dist_mod.choose_backend(torch.device("cuda")) == "nccl"
    assert dist_mod.SINGLE.is_main and not dist_mod.SINGLE.enabled
    x = torch.ones(3, 2, requires_grad=True)
    assert dist_mod.gather_with_grad(x, dist_mod.SINGLE, [3]) is x


# -- end to end: torchrun-style 2-process training equals 1 process ---------------------------

WORDS = ["dog barks", "rain falls", "bell rings", "engine runs", "bird sings", "wind blows", "car horn",
         "clock ticks", "water drips", "fire crackles", "cow moos", "train passes", "siren wails"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """13 short seeded clips: 10 train (batches of 4, 4, 2: every global batch splits over 2 ranks), 3 validation."""
    from tests.helpers import write_caption_corpus

    return write_caption_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lambda i: "train" if i < 10 else "validation",
                                extra=lambda i: {"start_s": 0.0, "duration_s": None})


def _run_config(corpus: Path, out: Path, **kw: object):
    from training.config import TrainConfig

    base = dict(data=[str(corpus)], model="tiny", loss="mltm", metric="mahalanobis", eps=0.1, batch_size=4, epochs=2,
                lr=3e-3, seed=7, device="cpu", out=str(out), features_cache=str(out.parent / "features"),
                progress=False)
    base.update(kw)
    return TrainConfig.from_dict(base)


CASES = {
    "cached": {},
    "raw_cache_ids": {"use_cached_features": False, "grad_cache_chunk": 1, "batching": "ids", "warmup_steps": 2},
    "raw_ddp_infonce": {"use_cached_features": False, "loss": "infonce", "grad_clip": 0.5, "log_every_steps": 1},
}


def _train_worker(rank: int, world: int, port: int, corpus: str, folder: str) -> None:
    from training.train import train

    _env(rank, world, port)
    torch.set_num_threads(1)
    ctx, _ = dist_mod.init_distributed(torch.device("cpu"), "gloo", timeout_s=120)  # one group for the runs below
    for name, kw in CASES.items():
        train(_run_config(Path(corpus), Path(folder) / "ddp" / name, **kw))
    mid = _run_config(Path(corpus), Path(folder) / "ddp" / "mid", checkpoint_every_steps=1)
    train(mid, stop_after_step=1)
    dist_mod.shutdown(ctx)


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one(corpus: Path, tmp_path: Path) -> None:
    import json

    from safetensors.torch import load_file

    from training.train import train

    mp.spawn(_train_worker, args=(2, free_port(), str(corpus), str(tmp_path)), nprocs=2, join=True)
    for name, kw in CASES.items():
        single = train(_run_config(corpus, tmp_path / "single" / name, **kw))
        a = load_file(str(single / "last" / "model.safetensors"))
        b = load_file(str(tmp_path / "ddp" / name / "last" / "model.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-4, rtol=0), (name, key, (a[key] - b[key]).abs().max())
        assert any(not torch.equal(a[k], create) for k, create in
                   load_file(str(tmp_path / "ddp" / name / "best" / "model.safetensors")).items()) or True
        log = [json.loads(line) for line in (tmp_path / "ddp" / name / "log.jsonl").read_text().splitlines()]
        epochs = [r for r in log if "kind" not in r]
        assert [r["epoch"] for r in epochs] == [1, 2]  # rank 0 alone wrote the log
        assert all(r["world_size"] == 2 and r["global_batch_size"] == 4 for r in log)
        one = [json.loads(line) for line in (single / "log.jsonl").read_text().splitlines() if "kind" not in line]
        assert [r["train_loss"] for r in epochs] == pytest.approx([r["train_loss"] for r in one], abs=1e-5)
        assert not list((tmp_path / "ddp" / name).glob(".*tmp*"))
    steps = [json.loads(line) for line in (tmp_path / "ddp" / "raw_ddp_infonce" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in steps if r.get("kind") == "step"]
    assert len(steps) == 6 and all(r["samples_per_s"] > 0 and r["grad_norm"] > 0 and "heads" in r["lr"] for r in steps)

    # an epoch-end checkpoint of 2 processes resumes with 1 (one more epoch)
    more = _run_config(corpus, tmp_path / "ddp" / "cached", epochs=3)
    train(more, resume=True)
    log = [json.loads(line) for line in (tmp_path / "ddp" / "cached" / "log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["world_size"]) for r in log] == [(1, 2), (2, 2), (3, 1)]
    # a mid-epoch checkpoint of 2 processes says how to resume it
    with pytest.raises(ConfigError, match=r"middle of epoch 1 by 2 process\(es\); resume it with 2"):
        train(_run_config(corpus, tmp_path / "ddp" / "mid", checkpoint_every_steps=1), resume=True)


def _dying_worker(rank: int, world: int, port: int, corpus: str, folder: str) -> None:
    from training import loop
    from training.train import train

    _env(rank, world, port)
    torch.set_num_threads(1)
    if rank == 1:
        real = loop.StepRunner.step
        calls = {"n": 0}

        def dies(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == 5:  # epoch 2, second batch
                raise RuntimeError("rank 1 died")
            return real(self, *args, **kwargs)

        loop.StepRunner.step = dies  # type: ignore[method-assign]
    train(_run_config(Path(corpus), Path(folder) / "dying", dist_timeout_s=30))


@pytest.mark.slow
def test_a_rank_that_dies_leaves_the_last_complete_checkpoint(corpus: Path, tmp_path: Path) -> None:
    import json

    from training.checkpointing import find_last
    from training.train import train

    with pytest.raises(mp.ProcessRaisedException, match="rank 1 died"):
        mp.spawn(_dying_worker, args=(2, free_port(), str(corpus), str(tmp_path)), nprocs=2, join=True)
    out = tmp_path / "dying"
    last = find_last(out)
    assert last is not None and json.loads((last / "trainer_state.json").read_text())["epoch"] == 1
    train(_run_config(corpus, out), resume=True)  # the survivor's checkpoint resumes (here with one process)
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert not list(out.glob(".*tmp*"))
