"""The public-dataset recipes in configs/: they validate, name the paper's setting, and — with
their hub models swapped for tiny random ones of the same architectures (CLAP's HTSAT, RoBERTa,
BERT; aiSFX with random weights) — train end to end through ``training.train.train`` into a
checkpoint that reloads with the base models deleted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from atr_demo.backbones import aisfx
from atr_demo.config import ModelConfig
from atr_demo.model import create_model, load_model

from tests.helpers import make_tiny_bert, make_tiny_clap, make_tiny_roberta, write_caption_corpus
from training.config import TrainConfig, load_train_config
from training.train import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
HTSAT = ["audiocaps_mltm_htsat_roberta.yaml", "clotho_mltm_htsat_roberta.yaml"]
AISFX = ["audiocaps_aisfx_minilm.yaml", "clotho_aisfx_minilm.yaml", "wavcaps_to_audiocaps_aisfx_minilm.yaml"]
WORDS = ["dog barks", "rain falls", "bell rings", "engine runs", "bird sings", "wind blows", "car horn",
         "clock ticks", "water drips", "fire crackles", "cow moos", "siren wails"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 short seeded clips, 2 captions each: 8 train, 4 validation."""
    return write_caption_corpus(tmp_path_factory.mktemp("recipe-data"), WORDS,
                                lambda i: "train" if i < 8 else "validation", freq=(150, 80), seconds=(0.5, 0.05))


@pytest.mark.parametrize("name", HTSAT + AISFX)
def test_recipes_are_end_to_end_m_ltm(name: str) -> None:
    config = load_train_config(CONFIGS / name)
    model = config.run_model_config()
    assert model.audio.trainable and model.text.trainable and not config.use_cached_features
    assert config.loss == "mltm" and config.metric == "mahalanobis" and 0.03 <= config.eps <= 0.05
    assert config.optimizer == "adam" and 5e-5 <= config.lr <= 1e-4 and config.grad_clip == 2.0
    assert 128 <= config.batch_size <= 256 and config.captions_per_epoch == "all"
    if name in HTSAT:
        assert (model.audio.kind, model.audio.name) == ("hf_audio", "laion/clap-htsat-unfused")
        assert (model.text.kind, model.text.name) == ("hf_text", "roberta-base")
        assert config.eps == 0.03 and config.batch_size == 256 and config.lr == 5e-5 and not config.spec_augment
    else:
        assert model.audio.kind == "aisfx" and model.text.name == "sentence-transformers/all-MiniLM-L6-v2"
        assert config.spec_augment
    dataset = name.split("_")[0]
    assert all(d.split(":")[0] in ("audiocaps", "clotho", "wavcaps") for d in config.data)
    assert config.data[-1].startswith(("audiocaps:", "clotho:")) and dataset in config.data[0]


@pytest.fixture(scope="module")
def base_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recipe-bases")
    return {"clap": make_tiny_clap(root / "clap"), "roberta": make_tiny_roberta(root / "roberta"),
            "bert": make_tiny_bert(root / "bert")}


def _tiny_run(recipe: str, data: Path, out: Path, audio: Path | None, text: Path) -> TrainConfig:
    """The recipe with its hub ids replaced by tiny local folders, on the tiny data, one short epoch
    (and a 64-d joint space: a 1024-d Mahalanobis metric's PSD projection alone takes seconds a step)."""
    raw: dict[str, Any] = load_train_config(CONFIGS / recipe).to_dict()
    model = dict(raw["model"], embed_dim=64)
    if audio is not None:
        model["audio"] = {**model["audio"], "name": str(audio)}
    model["text"] = {**model["text"], "name": str(text)}
    raw.update(model=model, data=[str(data)], out=str(out), epochs=1, batch_size=4, num_workers=0,
               device="cpu", progress=False)
    return TrainConfig.from_dict(raw)


def _reference(checkpoint: Path, config: ModelConfig) -> torch.nn.Module:
    """The checkpoint's weights in a model built from the base folders (not from its sub-folders)."""
    model = create_model(config)
    model.load_checkpoint_state_dict(load_file(str(checkpoint / "model.safetensors")))
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize(("recipe", "audio", "text"), [(HTSAT[0], "clap", "roberta"), (HTSAT[1], "clap", "roberta"),
                                                        (AISFX[0], None, "bert")])
def test_recipe_trains_and_reloads_without_base_models(
    recipe: str, audio: str | None, text: str, data: Path, base_models: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bases = {kind: shutil.copytree(base_models[kind], tmp_path / "base" / kind) for kind in (audio, text) if kind}
    # aiSFX: random weights instead of the converted pretrained ones (no real backbone in a fast test)
    monkeypatch.setattr(aisfx, "load_pretrained_weights", lambda module, path=None: Path("random"))
    config = _tiny_run(recipe, data, tmp_path / "run", bases.get(audio) if audio else None, bases[text])
    out = train(config)

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["train_loss"] == pytest.approx(log[0]["train_loss"])  # finite
    best = out / "best"
    saved = json.loads((best / "config.json").read_text())
    assert saved["text"]["files"] == "text_backbone" and saved["text"]["source_digest"].startswith("sha256:")
    assert saved["head"] == "mlp" and saved["metric"] == "mahalanobis" and saved["eps"] == config.eps
    assert (audio is None) == ("files" not in saved["audio"])  # aiSFX is stored like every stored-weights tower
    weights = load_file(str(best / "model.safetensors"))
    # the backbones were trained: their weights moved away from the base models'
    base_text = load_file(str(bases[text] / "model.safetensors"))
    key = next(k for k in base_text if "word_embeddings" in k)
    assert not torch.equal(weights[f"text_backbone.encoder.{key}"], base_text[key])

    reference = _reference(best, config.run_model_config())
    waves = [torch.randn(reference.sample_rate * 2, generator=torch.Generator().manual_seed(9)) * 0.1]
    with torch.no_grad():
        want_audio, want_text = reference.encode_audio(waves), reference.encode_text(["a dog barks"])
    shutil.rmtree(tmp_path / "base")
    loaded = load_model(str(best))
    with torch.no_grad():
        assert torch.allclose(loaded.encode_audio(waves), want_audio, atol=1e-5)
        assert torch.allclose(loaded.encode_text(["a dog barks"]), want_text, atol=1e-5)
