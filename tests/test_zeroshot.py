"""Zero-shot labelling: built-in ESC-50 classes, templates, prompt ensembling, custom labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atr_demo.errors import ConfigError
from atr_demo.model import load_model
from atr_demo.zeroshot import (
    ESC50_CLASSES,
    ESC50_DESCRIPTIONS,
    ESC50_SOUND_DESCRIPTIONS,
    check_prompt_budget,
    classify,
    embed_labels,
    load_labels,
    parse_labels,
    prompts_for,
)


def test_esc50_classes_complete() -> None:
    assert len(ESC50_CLASSES) == 50 == len(set(ESC50_CLASSES))
    assert ESC50_CLASSES[0] == "dog" and ESC50_CLASSES[49] == "hand_saw" and ESC50_CLASSES[12] == "crackling_fire"
    assert set(ESC50_DESCRIPTIONS) == set(ESC50_CLASSES)


def test_prompts_and_templates() -> None:
    prompts = prompts_for("crackling_fire", ["the sound of {}", "{}"])
    assert prompts[:2] == ["the sound of crackling fire", "crackling fire"]
    assert "a fire crackles" in prompts
    assert prompts_for("banjo", ["a {} playing"]) == ["a banjo playing"]
    with pytest.raises(ConfigError, match="placeholder"):
        prompts_for("dog", ["no placeholder"])


def test_sound_descriptions_table_and_the_descriptions_argument() -> None:
    assert set(ESC50_SOUND_DESCRIPTIONS) == set(ESC50_CLASSES)
    for label, sentences in ESC50_SOUND_DESCRIPTIONS.items():
        assert 3 <= len(sentences) == len(set(sentences)) <= 5
        assert sentences[0] == ESC50_DESCRIPTIONS[label][0]  # the single description comes first
    templates = ["the sound of {}", "{}"]
    assert prompts_for("dog", templates, descriptions=False) == ["the sound of dog", "dog"]
    # the default: the 3-5 sound descriptions (they won under leave-one-package-out, results/hubness.md)
    assert prompts_for("dog", templates) == ["the sound of dog", "dog", *ESC50_SOUND_DESCRIPTIONS["dog"]]
    assert prompts_for("dog", templates, ESC50_DESCRIPTIONS) == ["the sound of dog", "dog", "a dog barks"]
    assert check_prompt_budget(["dog", "cat"], templates, 100) == 4 + 5 + 4
    assert check_prompt_budget(["dog", "cat"], templates, 100, ESC50_DESCRIPTIONS) == 4 + 1 + 1
    assert check_prompt_budget(["dog", "cat"], templates, 100, False) == 4


def test_custom_labels(tmp_path: Path) -> None:
    f = tmp_path / "labels.txt"
    f.write_text("door slam\n\nkettle\ndoor slam\n")
    assert load_labels(str(f)) == ["door slam", "kettle"]
    assert load_labels("esc50") == list(ESC50_CLASSES)
    with pytest.raises(ConfigError, match="empty"):
        parse_labels("\n  \n")
    with pytest.raises(ConfigError, match="neither"):
        load_labels(str(tmp_path / "missing.txt"))


def test_ensemble_embedding_is_mean_of_prompts() -> None:
    model = load_model("tiny")
    ls = embed_labels(model, ["dog", "kettle"], ["the sound of {}", "a {}"])
    assert ls.embeddings.shape == (2, 16)
    manual = model.embed_texts(prompts_for("kettle", ["the sound of {}", "a {}"])).mean(dim=0)
    assert torch.allclose(ls.embeddings[1], manual / manual.norm(), atol=1e-6)


@pytest.mark.parametrize("mode", ["cosine", "metric", "transport"])
def test_classify_gives_probabilities(mode: str) -> None:
    model = load_model("tiny")
    ls = embed_labels(model, list(ESC50_CLASSES[:10]))
    audio = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    probs = classify(model, audio, ls, mode=mode)
    assert probs.shape == (4, 10)
    assert torch.allclose(probs.sum(dim=1), torch.ones(4), atol=1e-5)
    assert (probs >= 0).all()
