"""The transformers towers: long clips embedded window by window (AST, CLAP's HTSAT), and
self-contained checkpoints of trained towers (they load with the base models deleted)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atr_demo.backbones.hf_audio import HFAudioBackbone, waveform_windows, window_samples
from atr_demo.backbones.hub import folder_digest
from atr_demo.config import BackboneConfig, ModelConfig
from atr_demo.errors import CheckpointError, ConfigError
from atr_demo.model import create_model, load_model

from tests.helpers import make_tiny_ast, make_tiny_bert, make_tiny_clap, make_tiny_roberta, offline_hub_cache

CAPTIONS = ["a dog barks", "rain falls on the car", "the engine runs"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    return {"ast": make_tiny_ast(root / "ast"), "clap": make_tiny_clap(root / "clap"),
            "bert": make_tiny_bert(root / "bert"), "roberta": make_tiny_roberta(root / "roberta")}


def _noise(samples: int, seed: int) -> torch.Tensor:
    return 0.1 * torch.randn(samples, generator=torch.Generator().manual_seed(seed))


def test_windows_follow_the_aisfx_block_policy() -> None:
    wave = torch.arange(25, dtype=torch.float32)
    windows = waveform_windows(wave, 10)  # hop 5: starts 0, 5, 10, 15 (ceil((25 - 10) / 5) + 1 = 4)
    assert [w[0].item() for w in windows] == [0, 5, 10, 15] and [len(w) for w in windows] == [10, 10, 10, 10]
    assert [len(w) for w in waveform_windows(torch.zeros(27), 10)] == [10, 10, 10, 10, 7]  # the tail is kept, short
    assert len(waveform_windows(wave, 25)) == 1 and len(waveform_windows(wave, None)) == 1


@pytest.mark.parametrize("kind", ["ast", "clap"])
def test_long_clips_are_embedded_whole(models: dict[str, Path], kind: str) -> None:
    tower = HFAudioBackbone(str(models[kind])).eval()
    window = tower.window
    assert window == window_samples(tower.feature_extractor)
    assert window == {"ast": 63 * 160 + 400, "clap": 48000}[kind]
    assert tower.sample_rate == {"ast": 16000, "clap": 48000}[kind]
    clip = _noise(3 * window, 1)
    changed = clip.clone()
    changed[2 * window :] = _noise(window, 2)  # only the last third differs
    with torch.no_grad():
        a, b = tower([clip, changed])
        # a short clip is one window, as before: the extractor sees it unchanged
        short = clip[: window // 2]
        assert torch.allclose(tower([short]), tower._encode([short]), atol=1e-6)
        # the clip's embedding is the mean of its 5 windows' (hop = window / 2)
        windows = waveform_windows(clip, window)
        assert len(windows) == 5
        assert torch.allclose(a, tower._encode(windows).mean(dim=0), atol=1e-5)
        # windows in sub-batches give the same embedding as all at once
        tower.max_windows_per_batch = 2
        assert torch.allclose(tower([clip])[0], a, atol=1e-5)
    assert (a - b).abs().max() > 1e-4, "the last third of the clip must change its embedding"


def _trained_model(models: dict[str, Path], audio: str, text: str) -> ModelConfig:
    return ModelConfig(
        audio=BackboneConfig(kind="hf_audio", name=str(models[audio]), trainable=True),
        text=BackboneConfig(kind="hf_text", name=str(models[text]), trainable=True),
        embed_dim=8, head="mlp",
    )


@pytest.mark.parametrize(("audio", "text"), [("ast", "bert"), ("clap", "roberta")])
def test_trained_towers_load_without_their_base_models(
    models: dict[str, Path], tmp_path: Path, audio: str, text: str
) -> None:
    bases = {name: shutil.copytree(models[name], tmp_path / name) for name in (audio, text)}
    config = _trained_model(bases, audio, text)
    model = create_model(config, seed=3)
    with torch.no_grad():  # as if trained: weights differ from the base models'
        for p in (*model.audio_backbone.parameters(), *model.text_backbone.parameters()):
            p.add_(0.01 * torch.randn_like(p))
    wave = [_noise(model.sample_rate * 2, 4), _noise(model.sample_rate // 3, 5)]
    with torch.no_grad():
        want_audio, want_text = model.encode_audio(wave), model.encode_text(CAPTIONS)
    digests = {name: folder_digest(path) for name, path in bases.items()}
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    for path in bases.values():
        shutil.rmtree(path)  # no access to the base models from here on

    saved = json.loads((ckpt / "config.json").read_text())
    assert saved["audio"]["files"] == "audio_backbone" and saved["text"]["files"] == "text_backbone"
    assert saved["audio"]["name"] == str(bases[audio]) and saved["text"]["name"] == str(bases[text])
    assert saved["audio"]["source_digest"] == digests[audio] and saved["text"]["source_digest"] == digests[text]
    assert (ckpt / "audio_backbone" / "preprocessor_config.json").is_file()
    assert (ckpt / "text_backbone" / "tokenizer_config.json").is_file()
    for folder in ("audio_backbone", "text_backbone"):  # config and tokenizer/extractor only: weights are in one file
        assert (ckpt / folder / "config.json").is_file() and not list((ckpt / folder).glob("*.safetensors"))
    keys = load_file(str(ckpt / "model.safetensors")).keys()
    assert any(k.startswith("audio_backbone.encoder.") for k in keys)
    assert any(k.startswith("text_backbone.encoder.") for k in keys)

    loaded = load_model(str(ckpt))
    with torch.no_grad():
        assert torch.allclose(loaded.encode_audio(wave), want_audio, atol=1e-5)
        assert torch.allclose(loaded.encode_text(CAPTIONS), want_text, atol=1e-5)
    # saved again, the pins and files stay those of the original source
    loaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == saved
    assert torch.allclose(load_model(str(tmp_path / "again")).encode_text(CAPTIONS), want_text, atol=1e-5)


def test_missing_tower_folder_is_named(models: dict[str, Path], tmp_path: Path) -> None:
    config = ModelConfig(audio=BackboneConfig(kind="tiny_audio", dim=8, trainable=True),
                         text=BackboneConfig(kind="hf_text", name=str(models["bert"]), trainable=True), embed_dim=8)
    ckpt = create_model(config).save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(ckpt / "text_backbone")
    with pytest.raises(CheckpointError, match="text_backbone, which is missing"):
        load_model(str(ckpt))
    with pytest.raises(ConfigError, match="files is only for a trainable"):
        BackboneConfig(kind="hf_text", name="x", files="text_backbone")
    with pytest.raises(ConfigError, match="sub-folder of the checkpoint"):
        BackboneConfig(kind="hf_text", name="x", trainable=True, files="../elsewhere")


def test_hub_tower_is_pinned_to_its_commit(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    offline_hub_cache(monkeypatch, tmp_path / "hub", "acme/tiny-bert", models["bert"], commit=commit)
    config = ModelConfig(audio=BackboneConfig(kind="tiny_audio", dim=8, trainable=True),
                         text=BackboneConfig(kind="hf_text", name="acme/tiny-bert", trainable=True), embed_dim=8)
    model = create_model(config)
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    text = json.loads((ckpt / "config.json").read_text())["text"]
    assert text["name"] == "acme/tiny-bert" and text["revision"] == commit and "source_digest" not in text
    shutil.rmtree(tmp_path / "hub")  # the hub cache is gone too
    assert torch.allclose(load_model(str(ckpt)).embed_texts(CAPTIONS), model.embed_texts(CAPTIONS), atol=1e-6)


def test_frozen_towers_are_referenced_as_before(models: dict[str, Path], tmp_path: Path) -> None:
    config = ModelConfig(audio=BackboneConfig(kind="hf_audio", name=str(models["ast"])),
                         text=BackboneConfig(kind="hf_text", name=str(models["bert"])), embed_dim=8)
    ckpt = create_model(config).save_pretrained(tmp_path / "ckpt")
    saved = json.loads((ckpt / "config.json").read_text())
    assert saved == config.to_dict() and "files" not in saved["text"] and "source_digest" not in saved["audio"]
    assert not (ckpt / "audio_backbone").exists() and not (ckpt / "text_backbone").exists()
    stored = load_file(str(ckpt / "model.safetensors"))
    assert not any(k.startswith(("audio_backbone.", "text_backbone.")) for k in stored)
