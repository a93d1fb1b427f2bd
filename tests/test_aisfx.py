"""Tests of the aiSFX CNN backbone (atr_demo.backbones.aisfx) and its weight conversion."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from atr_demo.backbones.aisfx import (
    AisfxAudioBackbone,
    AisfxCNN,
    default_weights_path,
    load_pretrained_weights,
)
from atr_demo.errors import CheckpointError

GOLDEN = Path(__file__).parent / "data" / "aisfx_golden.safetensors"
GOLDEN_CASES = ("random_blocks", "tone_noise_blocks", "silence_blocks")
SR = 44100


def expected_keys() -> set[str]:
    keys = set()
    for block in range(1, 5):
        prefix = f"embedding_net.conv_block{block}"
        keys |= {f"{prefix}.conv1.weight", f"{prefix}.conv2.weight"}
        for bn in ("bn1", "bn2"):
            keys |= {f"{prefix}.{bn}.{name}" for name in
                     ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    return keys


def randomise_bn(model: AisfxCNN, seed: int = 0) -> None:
    """Non-trivial BN statistics so that folding them is actually exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=gen))
                module.bias.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(c, generator=gen))


def make_backbone(pooling: str = "mean") -> AisfxAudioBackbone:
    backbone = AisfxAudioBackbone(pooling=pooling).eval()
    randomise_bn(backbone.cnn)
    return backbone


def noise(seconds: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(seconds * SR), generator=gen)


# ------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------


def test_state_dict_keys_match_the_original_layout() -> None:
    state = AisfxCNN().state_dict()
    assert set(state) == expected_keys()
    with safe_open(str(GOLDEN), framework="pt") as fh:
        original = set(json.loads(fh.metadata()["state_dict_keys"]))
    assert set(state) == original
    assert state["embedding_net.conv_block1.conv1.weight"].shape == (64, 1, 3, 3)
    assert state["embedding_net.conv_block4.conv2.weight"].shape == (512, 512, 3, 3)
    # the backbone's front-end has no persistent state: only the CNN's keys, under "cnn."
    assert set(AisfxAudioBackbone().state_dict()) == {f"cnn.{k}" for k in expected_keys()}


def test_fused_and_plain_paths_agree_and_cache_follows_weights() -> None:
    model = AisfxCNN().eval()
    randomise_bn(model)
    x = torch.rand(3, 100, 96)
    with torch.inference_mode():
        fused = model(x)
        model.fused_inference = False
        plain = model(x)
        model.fused_inference = True
    assert fused.shape == (3, 512)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    # changing the weights must invalidate the folded-BN cache
    randomise_bn(model, seed=1)
    with torch.inference_mode():
        changed = model(x)
        model.fused_inference = False
        plain_changed = model(x)
    assert not torch.allclose(changed, fused)
    torch.testing.assert_close(changed, plain_changed, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Parity with the reference network (needs the converted weights)
# ------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_parity_with_reference_network(case: str) -> None:
    weights = default_weights_path()
    if not weights.is_file():
        pytest.skip(f"converted aiSFX weights absent at {weights}; `make install` creates them")
    golden = load_file(str(GOLDEN))
    x, reference = golden[f"input.{case}"], golden[f"output.{case}"]
    model = AisfxCNN().eval()
    load_pretrained_weights(model, weights)
    with torch.no_grad():
        model.fused_inference = False
        plain = model(x)
        model.fused_inference = True
        fused = model(x)
    # the plain graph is the reference's op sequence: equal within 1e-5
    assert (plain - reference).abs().max().item() <= 1e-5
    # folded BN reorders float rounding: within 1e-5 relative to the output scale
    scale = max(1.0, reference.abs().max().item())
    assert (fused - reference).abs().max().item() <= 1e-5 * scale


# ------------------------------------------------------------------------------------------
# Backbone behaviour
# ------------------------------------------------------------------------------------------


def test_backbone_is_deterministic() -> None:
    backbone = make_backbone()
    wave = noise(3.0, seed=1)
    with torch.inference_mode():
        first, second = backbone([wave]), backbone([wave])
    assert first.shape == (1, 512)
    assert torch.equal(first, second)


@pytest.mark.parametrize("seconds", [0.3, 60.0])
def test_short_and_long_clips(seconds: float) -> None:
    backbone = make_backbone()
    with torch.inference_mode():
        out = backbone([noise(seconds, seed=2)])
    assert out.shape == (1, 512) and torch.isfinite(out).all()


@pytest.mark.parametrize("pooling", ["mean", "max", "meanmax"])
def test_batch_equals_one_by_one(pooling: str) -> None:
    backbone = make_backbone(pooling)
    waves = [noise(s, seed=i) for i, s in enumerate([0.5, 1.2, 4.0])]
    with torch.inference_mode():
        batched = backbone(waves)
        single = torch.cat([backbone([w]) for w in waves])
        # pooling is the stated reduction of the per-block embeddings
        blocks = backbone.clip_blocks(waves[2])  # 4 s = 173 frames = 3 blocks
        per_block = backbone.cnn(blocks)
    assert batched.shape == (3, backbone.output_dim)
    assert backbone.output_dim == (1024 if pooling == "meanmax" else 512)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    expected = {"mean": per_block.mean(0), "max": per_block.amax(0),
                "meanmax": torch.cat([per_block.mean(0), per_block.amax(0)])}[pooling]
    assert blocks.shape[0] == 3
    torch.testing.assert_close(batched[2], expected, rtol=1e-5, atol=1e-5)


def test_chunked_inference_equals_single_batch() -> None:
    backbone = make_backbone()
    waves = [noise(3.0, seed=3), noise(1.0, seed=4)]
    with torch.inference_mode():
        whole = backbone(waves)
        backbone.max_blocks_per_batch = 2
        chunked = backbone(waves)
    torch.testing.assert_close(whole, chunked, rtol=1e-5, atol=1e-5)


def test_train_mode_backpropagates_and_updates_bn() -> None:
    backbone = AisfxAudioBackbone().train()
    before = backbone.cnn.embedding_net.conv_block1.bn1.running_mean.clone()
    out = backbone([noise(1.0, seed=5), noise(2.5, seed=6)])
    out.sum().backward()
    grad = backbone.cnn.embedding_net.conv_block1.conv1.weight.grad
    assert out.shape == (2, 512) and grad is not None and grad.abs().sum() > 0
    assert not torch.equal(before, backbone.cnn.embedding_net.conv_block1.bn1.running_mean)


def test_rejects_bad_input() -> None:
    backbone = make_backbone()
    with pytest.raises(ValueError, match="mono"):
        backbone([torch.zeros(2, 1000)])
    with pytest.raises(ValueError, match="pooling"):
        AisfxAudioBackbone(pooling="median")
    assert backbone.sample_rate == 44100 and backbone.output_dim == 512


# ------------------------------------------------------------------------------------------
# Weights files
# ------------------------------------------------------------------------------------------


def test_default_weights_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ATR_DEMO_AISFX_WEIGHTS", raising=False)
    monkeypatch.setenv("ATR_DEMO_HOME", str(tmp_path))
    assert default_weights_path() == tmp_path / "aisfx" / "aisfx_cnn.safetensors"
    monkeypatch.setenv("ATR_DEMO_AISFX_WEIGHTS", str(tmp_path / "w.safetensors"))
    assert default_weights_path() == tmp_path / "w.safetensors"
    monkeypatch.delenv("ATR_DEMO_AISFX_WEIGHTS")
    monkeypatch.delenv("ATR_DEMO_HOME")
    assert default_weights_path() == Path.home() / ".cache" / "atr_demo" / "aisfx" / "aisfx_cnn.safetensors"


def test_missing_weights_say_how_to_create_them(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="convert-aisfx"):
        load_pretrained_weights(AisfxCNN(), tmp_path / "absent.safetensors")


def test_strict_load_names_the_bad_key(tmp_path: Path) -> None:
    source = AisfxCNN()
    randomise_bn(source)
    state = source.state_dict()
    good = tmp_path / "good.safetensors"
    save_file(state, str(good))
    target = AisfxAudioBackbone()
    load_pretrained_weights(target, good)
    assert torch.equal(target.cnn.embedding_net.conv_block2.bn1.running_var,
                       state["embedding_net.conv_block2.bn1.running_var"])
    bad = tmp_path / "bad.safetensors"
    save_file({**state, "fc.0.0.weight": torch.zeros(2, 2)}, str(bad))
    with pytest.raises(CheckpointError, match=r"fc\.0\.0\.weight"):
        load_pretrained_weights(AisfxCNN(), bad)
    missing = {k: v for k, v in state.items() if k != "embedding_net.conv_block3.conv2.weight"}
    save_file(missing, str(bad))
    with pytest.raises(CheckpointError, match=r"conv_block3\.conv2\.weight"):
        load_pretrained_weights(AisfxCNN(), bad)


def test_convert_rejects_a_wrong_wheel(tmp_path: Path) -> None:
    from training.convert_aisfx import main

    fake = tmp_path / "aisfx-0.1.2-py2.py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("aisfx/models/checkpoint.pth", b"not a checkpoint")
    out = tmp_path / "out" / "aisfx_cnn.safetensors"
    assert main(["--wheel", str(fake), "--out", str(out)]) == 1
    assert not out.exists()
