"""Model factory, checkpoint format and strict loading, on the tiny model and tiny HF towers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from atr_demo.config import BackboneConfig, ModelConfig
from atr_demo.errors import CheckpointError, ConfigError, TextInputError
from atr_demo.model import create_model, load_model, tiny_config

from tests.helpers import make_tiny_bert, make_tiny_wav2vec2


def _waves(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [0.1 * torch.randn(4000 + 3000 * i, generator=g) for i in range(n)]


def test_tiny_model_encodes_unit_vectors() -> None:
    model = load_model("tiny")
    audio = model.encode_audio(_waves())
    text = model.encode_text(["a dog barks", "rain falls", "a car horn"])
    assert audio.shape == (3, 16) and text.shape == (3, 16)
    assert torch.allclose(audio.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(text.norm(dim=1), torch.ones(3), atol=1e-5)


def test_create_model_is_deterministic_per_seed() -> None:
    a = create_model(tiny_config(), seed=3).checkpoint_state_dict()
    b = create_model(tiny_config(), seed=3).checkpoint_state_dict()
    c = create_model(tiny_config(), seed=4).checkpoint_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_save_and_load_roundtrip(tmp_path: Path) -> None:
    model = create_model(tiny_config(), seed=5)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    loaded = load_model(str(tmp_path))
    waves = _waves()
    assert torch.allclose(model.embed_texts(["wind"]), loaded.embed_texts(["wind"]))
    with torch.no_grad():
        assert torch.allclose(model.eval().encode_audio(waves), loaded.encode_audio(waves), atol=1e-6)
    assert json.loads((tmp_path / "config.json").read_text())["name"] == "tiny"


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    create_model(tiny_config()).save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state.pop("text_head.weight")
    state["bogus.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="text_head.weight") as info:
        load_model(str(tmp_path))
    assert "bogus.weight" in str(info.value)


def test_shape_mismatch_is_named(tmp_path: Path) -> None:
    create_model(tiny_config()).save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["audio_head.bias"] = torch.zeros(7)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="audio_head.bias"):
        load_model(str(tmp_path))


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"embed_dim": 8, "colour": "red"}), "colour"),
        (json.dumps({"metric": "manhattan"}), "metric"),
    ],
)
def test_malformed_config_is_explained(tmp_path: Path, content: str, message: str) -> None:
    create_model(tiny_config()).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=message):
        load_model(str(tmp_path))


def test_corrupt_weights_and_missing_folder(tmp_path: Path) -> None:
    create_model(tiny_config()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_model(str(tmp_path))
    with pytest.raises(CheckpointError, match="neither a folder"):
        load_model(str(tmp_path / "nope"))


def test_uncached_repo_id_offline_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="local hub cache|cannot download"):
        load_model("someone/not-a-model")


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="eps"):
        ModelConfig(eps=0)
    with pytest.raises(ConfigError, match="audio.kind"):
        ModelConfig.from_dict({"audio": {"kind": "vggish"}})
    with pytest.raises(ConfigError, match="audio.weird"):
        ModelConfig.from_dict({"audio": {"kind": "aisfx", "weird": 1}})


def test_empty_and_huge_text_are_rejected() -> None:
    model = load_model("tiny")
    with pytest.raises(TextInputError, match="empty"):
        model.embed_texts(["   "])
    with pytest.raises(TextInputError, match="limit"):
        model.embed_texts(["word " * 1000])


def test_mahalanobis_metric_is_saved(tmp_path: Path) -> None:
    config = tiny_config()
    config.metric = "mahalanobis"
    model = create_model(config)
    with torch.no_grad():
        model.metric.M.copy_(torch.diag(torch.linspace(0.5, 2.0, config.embed_dim)))
    model.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert torch.equal(loaded.metric.M, model.metric.M)


def test_hf_towers_from_local_tiny_configs(tmp_path: Path) -> None:
    bert = make_tiny_bert(tmp_path / "bert")
    w2v = make_tiny_wav2vec2(tmp_path / "w2v")
    config = ModelConfig(
        audio=BackboneConfig(kind="hf_audio", name=str(w2v)),
        text=BackboneConfig(kind="hf_text", name=str(bert)),
        embed_dim=8,
    )
    model = create_model(config)
    assert model.sample_rate == 16000
    emb = model.encode_audio(_waves(2))
    txt = model.encode_text(["a dog barks", "rain falls on the car"])
    assert emb.shape == (2, 8) and txt.shape == (2, 8)
    # frozen hub towers are not stored: the checkpoint pins the id instead
    keys = model.checkpoint_state_dict().keys()
    assert not any(k.startswith(("audio_backbone.", "text_backbone.")) for k in keys)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load_model(str(tmp_path / "ckpt"))
    assert torch.allclose(loaded.embed_texts(["a dog barks"]), model.embed_texts(["a dog barks"]), atol=1e-6)


def test_trainable_hf_tower_is_stored(tmp_path: Path) -> None:
    bert = make_tiny_bert(tmp_path / "bert")
    config = tiny_config()
    config.text = BackboneConfig(kind="hf_text", name=str(bert), trainable=True)
    model = create_model(config)
    assert any(k.startswith("text_backbone.encoder.") for k in model.checkpoint_state_dict())
    with torch.no_grad():
        next(model.text_backbone.parameters()).add_(1.0)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load_model(str(tmp_path / "ckpt"))
    assert torch.allclose(loaded.embed_texts(["rain"]), model.embed_texts(["rain"]), atol=1e-6)


def test_locked_text_head_is_identity(tmp_path: Path) -> None:
    config = tiny_config()
    config.text_head = "identity"
    with pytest.raises(ConfigError, match="identity head"):
        create_model(config)
    config.embed_dim = config.text.dim
    model = create_model(config)
    feats = model.text_features(["a dog barks"])
    assert torch.allclose(model.embed_texts(["a dog barks"]), torch.nn.functional.normalize(feats, dim=-1), atol=1e-6)
    assert not any(k.startswith("text_head.") for k in model.checkpoint_state_dict())
    model.save_pretrained(tmp_path)
    assert load_model(str(tmp_path)).config.text_head == "identity"
