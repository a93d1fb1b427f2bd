"""Tests of top-block fine-tuning on cached block activations (training/block_cache.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from atr_demo.backbones import aisfx
from atr_demo.backbones.aisfx import AisfxCNN
from atr_demo.errors import ConfigError
from atr_demo.model import create_model

from tests.helpers import write_caption_corpus
from training import experiments as exp
from training.block_cache import (
    augment_maps,
    block_store,
    build_block_cache,
    lower_maps,
    top_features,
    unfreeze_top_blocks,
)
from training.config import TrainConfig
from training.datasets import load_clip_audio
from training.experiments import settings as st
from training.features import audio_features, clip_keys
from training.prepare import prepare_data
from training.train import train, warm_start

WORDS = ["dog barks", "rain falls", "bell rings", "engine runs", "bird sings", "wind blows", "car horn",
         "clock ticks", "water drips", "fire crackles"]
MODEL = {"audio": {"kind": "aisfx"}, "text": {"kind": "tiny_text", "dim": 32}, "embed_dim": 16, "name": "blocks-test"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random aiSFX weights with non-trivial batch-norm statistics (no download needed)."""
    torch.manual_seed(0)
    cnn = AisfxCNN()
    gen = torch.Generator().manual_seed(1)
    for block in cnn.embedding_net.blocks():
        for bn in (block.bn1, block.bn2):
            bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=gen))
            bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=gen))
            bn.weight.data.copy_(1 + 0.1 * torch.randn(bn.num_features, generator=gen))
    path = tmp_path_factory.mktemp("aisfx") / "aisfx.safetensors"
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, str(path))
    return path


@pytest.fixture(autouse=True)
def _random_aisfx_weights(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The aisfx tower loads the random weights above (never the converted pretrained ones)."""
    load = aisfx.load_pretrained_weights
    monkeypatch.setattr(aisfx, "load_pretrained_weights", lambda module, path=None: load(module, path or weights))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 seeded tones of 1.0–3.25 s (1–2 blocks of 100 frames): 8 train, 2 validation; packages pkgA, pkgB."""
    return write_caption_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lambda i: "train" if i < 8 else "validation",
                                seconds=(1.0, 0.25), extra=lambda i: {"start_s": 0.0, "duration_s": None,
                                                                          "package": f"pkg{'AB'[i % 2]}"})


def _config(corpus: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(data=[str(corpus)], model=MODEL, loss="mltm", eps=0.1, batch_size=4, epochs=2, lr=3e-3, seed=3,
                device="cpu", out=str(out), features_cache=str(out.parent / "features"), progress=False,
                finetune_blocks=1, block_masks=1)
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_run_blocks_compose_to_forward() -> None:
    torch.manual_seed(0)
    cnn = AisfxCNN().eval()
    x = torch.randn(3, 100, 96)
    with torch.no_grad():
        full = cnn(x)
        for split in (1, 2, 3):
            h = cnn.run_blocks(cnn.run_blocks(x.unsqueeze(1), 0, split), split, 4)
            torch.testing.assert_close(cnn.pool(h), full, rtol=1e-5, atol=1e-5)
    assert cnn.run_blocks(x.unsqueeze(1), 0, 3).shape == (3, 256, 12, 12)


def test_cached_maps_equal_a_fresh_forward(corpus: Path, tmp_path: Path) -> None:
    config = _config(corpus, tmp_path / "run")
    model = create_model(config.run_model_config(), seed=0)
    cache = str(config.features_cache)
    clips = prepare_data(config).train  # 1.0-2.75 s: 1 or 2 blocks of 100 frames (2.32 s, hop 1.16 s)
    keys = clip_keys(clips, config.max_duration_s)
    store, ok = build_block_cache(model, clips, keys, 1, cache, config.max_duration_s, progress=False)
    assert ok == list(range(8)) and len(store) == 8
    reopened = block_store(model, 1, cache)  # read back from the part files
    feats = []
    for clip, key in zip(clips, keys, strict=True):
        wave = load_clip_audio(clip, model.sample_rate, config.max_duration_s)
        fresh = lower_maps(model, wave, 1)
        cached = reopened.get(key)
        assert cached.dtype == torch.float16 and cached.shape == fresh.shape and cached.shape[1:] == (256, 12, 12)
        torch.testing.assert_close(cached.float(), fresh, rtol=2e-3, atol=2e-3)
        with torch.no_grad():
            feats.append(top_features(model, [cached.float()], 1)[0])
    assert {m.shape[0] for m in (reopened.get(k) for k in reopened.index)} == {1, 2}  # clips of 1 and 2 blocks
    with torch.no_grad():
        full = model.audio_features([load_clip_audio(c, model.sample_rate, config.max_duration_s) for c in clips])
    torch.testing.assert_close(torch.stack(feats), full, rtol=1e-2, atol=1e-2)


def test_augment_maps_crop_masks_and_dropout(corpus: Path, tmp_path: Path) -> None:
    maps = torch.rand(5, 8, 12, 12) + 0.1
    config = _config(corpus, tmp_path / "run", block_crop=2, block_masks=1, block_mask_width=3,
                     block_channel_dropout=0.5)
    a = augment_maps(maps, config, torch.Generator().manual_seed(0))
    b = augment_maps(maps, config, torch.Generator().manual_seed(0))
    assert a.shape == (2, 8, 12, 12) and torch.equal(a, b)
    dropped = (a.flatten(2).amax(dim=2) == 0).all(dim=0)  # channels zeroed in every block
    assert 0 < int(dropped.sum()) < 8
    kept = a[:, ~dropped]
    assert (kept == 0).any() and (kept.amax() > maps.amax())  # masks, and 1 / (1 - p) scaling
    whole = augment_maps(maps, _config(corpus, tmp_path / "run", block_crop=0), torch.Generator().manual_seed(0))
    assert whole.shape == maps.shape


def test_finetuning_trains_the_top_block_only(corpus: Path, tmp_path: Path, weights: Path) -> None:
    config = _config(corpus, tmp_path / "run")
    out = train(config)
    initial = load_file(str(weights))
    trained = load_file(str(out / "last" / "model.safetensors"))
    prefix = "audio_backbone.cnn."
    for key, value in initial.items():
        after = trained[prefix + key]
        if key.startswith("embedding_net.conv_block4.") and not key.endswith(("running_mean", "running_var",
                                                                                "num_batches_tracked")):
            assert not torch.equal(after, value), key  # fine-tuned
        else:
            assert torch.equal(after, value), key  # frozen blocks and all batch-norm statistics
    # a fresh model with these weights is evaluated from the block cache, without a new feature file
    model = create_model(config.run_model_config(), seed=0)
    model.load_checkpoint_state_dict(trained)
    clips = prepare_data(config).validation
    cache = Path(config.features_cache)
    before = sorted(p.name for p in cache.iterdir())
    feats, ok = audio_features(model, clips, cache, max_duration_s=config.max_duration_s, progress=False)
    assert ok == [0, 1] and sorted(p.name for p in cache.iterdir()) == before
    with torch.no_grad():
        full = model.audio_features([load_clip_audio(c, model.sample_rate, config.max_duration_s) for c in clips])
    torch.testing.assert_close(feats, full, rtol=1e-2, atol=1e-2)


def test_warm_start_and_options(corpus: Path, tmp_path: Path) -> None:
    first = train(_config(corpus, tmp_path / "frozen", finetune_blocks=0, epochs=1))
    saved = load_file(str(first / "best" / "model.safetensors"))
    config = _config(corpus, tmp_path / "ft", epochs=1, init_from=str(first / "best"))
    model = create_model(config.run_model_config(), seed=5)
    warm_start(model, config.init_from or "")
    assert torch.equal(model.audio_head.weight.detach(), saved["audio_head.weight"])
    names = unfreeze_top_blocks(model, 1)
    assert names and all(".conv_block4." in n for n in names)
    assert {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("audio_backbone.")} == set(names)
    end = load_file(str(train(config) / "last" / "model.safetensors"))
    key = "audio_backbone.cnn.embedding_net.conv_block1.conv1.weight"
    assert torch.equal(saved[key], end[key])
    with pytest.raises(ConfigError, match="use_cached_features"):
        _config(corpus, tmp_path / "x", use_cached_features=False)
    with pytest.raises(ConfigError, match="init_from"):
        train(_config(corpus, tmp_path / "y", init_from=str(tmp_path / "missing")))


def test_finetune_suite_warm_starts_from_the_frozen_run(corpus: Path, tmp_path: Path) -> None:
    rows = st.suite_finetune(["pkgB"])
    assert [r.init_from for r in rows] == [None, rows[0].name, rows[0].name]
    assert rows[1].overrides["finetune_blocks"] == 1 and "finetune_blocks" not in rows[2].overrides
    base = dict(data=[str(corpus)], model=MODEL, batch_size=4, epochs=1, device="cpu", mixtures=0,
                features_cache=str(tmp_path / "features"), progress=False)
    exp.run_suite("finetune", base, [0], tmp_path / "results", tmp_path / "runs", packages=["pkgB"])
    frozen, tuned, control = (json.loads((tmp_path / "runs" / "finetune" / r.name / "seed0" / "result.json")
                                         .read_text()) for r in rows)
    start = tmp_path / "runs" / "finetune" / rows[0].name / "seed0" / "train" / "best"
    assert tuned["config"]["init_from"] == str(start) and tuned["config"]["finetune_blocks"] == 1
    assert tuned["config"]["exclude_packages"] == ["pkgB"] and tuned["eval_packages"] == ["pkgB"]
    assert frozen["config"]["finetune_blocks"] == 0 and frozen["metrics"] != tuned["metrics"]
    assert control["config"]["init_from"] == str(start) and control["config"]["finetune_blocks"] == 0
    assert (tmp_path / "results" / "finetune.md").read_text().count("top conv block fine-tuned") >= 2
