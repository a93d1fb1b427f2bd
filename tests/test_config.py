"""The configuration models (pydantic): round trips, and ConfigError messages that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atr_demo.audio import FrontendConfig
from atr_demo.config import BackboneConfig, ModelConfig
from atr_demo.errors import ConfigError
from atr_demo.model import tiny_config

from training.config import LOSSES, TrainConfig, apply_overrides, load_train_config

ROOT = Path(__file__).resolve().parent.parent


def test_bundled_config_round_trips_byte_for_byte(tmp_path: Path) -> None:
    source = ROOT / "bundled_model" / "config.json"
    config = ModelConfig.load(source)
    assert (config.eps, config.audio.kind, config.text.name) == (0.1, "aisfx", "sentence-transformers/all-MiniLM-L6-v2")
    config.save(tmp_path / "config.json")
    assert (tmp_path / "config.json").read_bytes() == source.read_bytes()


def test_bundled_train_config_loads_with_its_values() -> None:
    raw = json.loads((ROOT / "bundled_model" / "train_config.json").read_text(encoding="utf-8"))
    config = TrainConfig.from_dict(raw)
    dumped = config.to_dict()
    assert {k: dumped[k] for k in raw} == raw  # the model mapping is kept as written
    added = set(dumped) - set(raw)  # keys newer than the bundled run (none today): they take their defaults
    assert set(raw) <= set(dumped) and "finetune_blocks" in dumped
    defaults = TrainConfig.from_dict({"data": "x"}).to_dict()
    assert {k: dumped[k] for k in added} == {k: defaults[k] for k in added}
    model = config.run_model_config()
    assert (model.eps, model.loss, model.mass, len(model.prompt_templates)) == (0.1, "mltm", 1.0, 6)


def test_model_config_messages_name_the_key_and_the_valid_values() -> None:
    with pytest.raises(ConfigError, match=r"model config key 'audio\.weird' is unknown; valid keys: kind, name,"):
        ModelConfig.from_dict({"audio": {"kind": "aisfx", "weird": 1}})
    with pytest.raises(ConfigError, match=r"'scoring': input should be 'cosine', 'metric' or 'transport', got 'dot'"):
        ModelConfig.from_dict({"scoring": "dot"})
    with pytest.raises(ConfigError, match=r"text\.kind must be one of hf_text, tiny_text, got 'aisfx'"):
        ModelConfig(text=BackboneConfig(kind="aisfx"))
    with pytest.raises(ConfigError, match=r"text\.name is required for hf_text"):
        ModelConfig.from_dict({"text": {"kind": "hf_text"}})
    with pytest.raises(ConfigError, match=r"'embed_dim': input should be a valid integer, got '8'"):
        ModelConfig.from_dict({"embed_dim": "8"})
    with pytest.raises(ConfigError, match=r"'mass': input should be less than or equal to 1, got 1\.5"):
        ModelConfig.from_dict({"mass": 1.5})
    with pytest.raises(ConfigError, match="newer than this atr-demo"):
        ModelConfig.from_dict({"version": 2})
    with pytest.raises(ConfigError, match=r"'prompt_templates': give at least one template"):
        ModelConfig.from_dict({"prompt_templates": ["no placeholder"]})
    with pytest.raises(ConfigError, match="must be a mapping, got list"):
        ModelConfig.from_dict([])


def test_model_config_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**tiny_config().to_dict(), "heads": "mlp"}))
    with pytest.raises(ConfigError, match=rf"model config {path} key 'heads' is unknown"):
        ModelConfig.load(path)


def test_assignments_are_validated() -> None:
    config = tiny_config()
    config.metric = "mahalanobis"
    assert config.metric == "mahalanobis"
    with pytest.raises(ConfigError, match=r"'metric': input should be 'euclidean' or 'mahalanobis', got 'l1'"):
        config.metric = "l1"
    with pytest.raises(ConfigError, match="text.kind must be one of"):
        config.text = BackboneConfig(kind="tiny_audio")
    assert config.metric == "mahalanobis" and config.text.kind == "tiny_text"  # a rejected value is not kept
    frontend = FrontendConfig()
    with pytest.raises(ConfigError, match="'n_mels': instance is frozen"):
        frontend.n_mels = 64  # type: ignore[misc]


def test_frontend_config() -> None:
    config = FrontendConfig(n_mels=64)
    assert FrontendConfig.from_dict(config.to_dict()) == config and hash(config) == hash(FrontendConfig(n_mels=64))
    with pytest.raises(ConfigError, match=r"'n_fft': input should be greater than 0, got 0"):
        FrontendConfig(n_fft=0)
    with pytest.raises(ConfigError, match=r"front-end config key 'hop_size' is unknown; valid keys: sample_rate, "):
        FrontendConfig.from_dict({"hop_size": 512})


def test_training_config_messages(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("data: x\nmodel: tiny\nlossx: mltm\n")
    with pytest.raises(ConfigError, match=rf"training config {path} key 'lossx' is unknown; valid keys: data, "):
        load_train_config(path)
    choices = ", ".join(map(repr, LOSSES[:-1])) + f" or {LOSSES[-1]!r}"
    with pytest.raises(ConfigError, match=f"'loss': input should be {choices}, got 'contrastive'"):
        load_train_config(None, ["data=x", "loss=contrastive"])
    with pytest.raises(ConfigError, match=r"'model\.audio\.dimm' is unknown; valid keys: kind"):
        load_train_config(None, ["data=x", "model=tiny", "model.audio.dimm=8"])
    with pytest.raises(ConfigError, match=r"'model': unknown built-in 'huge'; use one of aisfx-minilm, tiny"):
        load_train_config(None, ["data=x", "model=huge"])
    with pytest.raises(ConfigError, match=r"'data': give at least one dataset path"):
        load_train_config(None, [])
    with pytest.raises(ConfigError, match=r"'amp': use none, bf16 or fp16 \(true/false: bf16/none\), got 1"):
        load_train_config(None, ["data=x", "amp=1"])
    with pytest.raises(ConfigError, match=r"'data_format': unknown dataset format 'wav'"):
        load_train_config(None, ["data=x", "data_format=wav"])
    with pytest.raises(ConfigError, match="languages has duplicates"):
        load_train_config(None, ["data=x", "languages=[en, en]"])


def test_overrides_are_applied_and_validated() -> None:
    data = apply_overrides({"data": "x", "model": "tiny"}, ["model.eps=0.2", "lr=0.01", "epochs=3"])
    assert data["model"]["embed_dim"] == tiny_config().embed_dim and data["model"]["eps"] == 0.2
    config = TrainConfig.from_dict(data)
    assert (config.data, config.lr, config.epochs) == (["x"], 0.01, 3)  # one path becomes a list
    assert config.run_model_config().eps == config.eps == 0.05  # the run's eps is copied into the model
    config.lr = 1  # an int is a valid float
    assert config.lr == 1.0 and isinstance(config.lr, float)
    with pytest.raises(ConfigError, match=r"'lr': input should be greater than 0, got 0"):
        config.lr = 0
    with pytest.raises(ConfigError, match=r"'epochs': input should be a valid integer, got 'ten'"):
        load_train_config(None, ["data=x", "epochs=ten"])
