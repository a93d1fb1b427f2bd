"""Checkpoints: mid-epoch resume is bit-exact on the CPU; a kill at any moment leaves the log and
the checkpoint a consistent pair and no stray temporary folders after the next start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atr_demo.errors import ConfigError

from tests.helpers import write_caption_corpus
from training import checkpointing
from training.config import TrainConfig
from training.train import train

WORDS = ["dog barks", "rain falls", "bell rings", "engine runs", "bird sings", "wind blows", "car horn",
         "clock ticks", "water drips", "fire crackles", "cow moos", "train passes"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 seeded clips: 10 train (3 batches of 4, 4, 2 per epoch), 2 validation."""
    return write_caption_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lambda i: "train" if i < 10 else "validation",
                                extra=lambda i: {"start_s": 0.0, "duration_s": None})


def _config(corpus: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(data=[str(corpus)], model="tiny", loss="mltm", metric="mahalanobis", eps=0.1, batch_size=4,
                epochs=2, lr=3e-3, seed=7, device="cpu", out=str(out), features_cache=str(out.parent / "features"),
                progress=False, log_every_steps=1)
    base.update(kw)
    return TrainConfig.from_dict(base)


def _same_run(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "optimizer.safetensors"):
        x, y = load_file(str(a / "last" / name)), load_file(str(b / "last" / name))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name

    def records(folder: Path) -> list[dict]:
        rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s", "step_seconds")} for r in rows]

    assert records(a) == records(b)
    assert not list(b.glob(".*tmp*")) and not (b / "last.old").exists()


@pytest.mark.parametrize("kw", [{}, {"use_cached_features": False, "batching": "ids", "loss": "infonce"}],
                         ids=["cached", "raw"])
def test_mid_epoch_resume_is_bit_exact(corpus: Path, tmp_path: Path, kw: dict) -> None:
    full = train(_config(corpus, tmp_path / "full", **kw))
    cut = _config(corpus, tmp_path / "cut", checkpoint_every_steps=1, **kw)
    train(cut, stop_after_step=4)  # epoch 2, after its first batch
    state = json.loads((tmp_path / "cut" / "last" / "trainer_state.json").read_text())
    assert (state["epoch"], state["step"], state["sampler"]) == (1, 4, {"epoch": 2, "batch": 1})
    train(cut, resume=True)
    _same_run(full, tmp_path / "cut")


def test_kill_between_log_append_and_checkpoint_swap(corpus: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    full = train(_config(corpus, tmp_path / "full"))
    real = checkpointing.atomic_replace_dir
    calls = {"last": 0}

    def killed_swap(tmp: Path, target: Path) -> None:
        if Path(target).name == "last":
            calls["last"] += 1
            if calls["last"] == 2:  # epoch 2: its log record is written, its checkpoint is not swapped in
                raise KeyboardInterrupt
        real(tmp, target)

    monkeypatch.setattr(checkpointing, "atomic_replace_dir", killed_swap)
    cut = _config(corpus, tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        train(cut)
    monkeypatch.setattr(checkpointing, "atomic_replace_dir", real)
    out = tmp_path / "cut"
    assert list(out.glob(".last.tmp-*"))  # what the kill left
    epochs = [json.loads(line).get("epoch") for line in (out / "log.jsonl").read_text().splitlines()
              if "kind" not in line]
    assert epochs == [1, 2]  # the log ran ahead of the checkpoint (epoch 1)
    assert json.loads((out / "last" / "trainer_state.json").read_text())["epoch"] == 1
    assert [json.loads(line).get("epoch") for line in (out / "last" / "log.jsonl").read_text().splitlines()
            if "kind" not in line] == [1]  # the checkpoint's own log copy
    train(cut, resume=True)
    _same_run(full, out)


def test_resume_with_stale_temporaries_and_without_checkpoint(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / ".last.tmp-999").mkdir(parents=True)
    (out / ".best.tmp-999").mkdir()
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        train(_config(corpus, out, epochs=1), resume=True)
    assert not list(out.glob(".*tmp*"))
