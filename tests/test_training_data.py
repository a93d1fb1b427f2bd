"""Dataset loaders on generated fixtures, mixtures, caption noise, group batching, and the feature
cache of a multilingual run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from atr_demo.errors import ConfigError
from atr_demo.model import create_model

from tests.helpers import write_tone
from training import features
from training.augment import compose_caption, inject_caption_noise, make_mixtures
from training.batching import caption_key, group_batches
from training.config import load_train_config
from training.datasets import Clip, load_clip_audio, load_dataset, mix_waveforms
from training.prepare import clip_captions, prepare_data
from training.train import FeatureSource


def _clips(n: int, captions_per: int = 1) -> list[Clip]:
    return [Clip(f"c{i}", f"/x/{i}.wav", [f"caption {i} {j}" for j in range(captions_per)], "train", f"g{i}")
            for i in range(n)]


def test_corpus_manifest(tmp_path: Path) -> None:
    write_tone(tmp_path / "audio" / "a.wav", seconds=2.0)
    write_tone(tmp_path / "audio" / "b.wav", freq=880)
    rows = [
        {"clip_id": "a0", "audio": "audio/a.wav", "captions": ["rain falls"], "split": "train", "group": "g1",
         "esc50": "rain", "start_s": 0.5, "duration_s": 1.0, "package": "p", "licence": "CC0", "author": None,
         "original_name": "rain.wav"},
        {"clip_id": "b0", "audio": "audio/b.wav", "captions": ["a bell rings", "a tone"], "split": "test",
         "group": "g2", "esc50": None, "start_s": 0.0, "duration_s": None, "package": "p", "licence": "CC0",
         "author": "x", "original_name": "b.wav"},
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    clips = load_dataset(tmp_path)
    assert [c.clip_id for c in clips] == ["a0", "b0"]
    assert clips[0].esc50 == "rain" and clips[0].split == "train" and clips[1].captions == ["a bell rings", "a tone"]
    wave = load_clip_audio(clips[0], 16000)
    # corpus segments are files of their own: start_s is provenance, the whole file is read
    assert wave.shape == (32000,)


def test_clotho(tmp_path: Path) -> None:
    for folder, name in (("development", "d.wav"), ("evaluation", "e.wav")):
        write_tone(tmp_path / folder / name)
        header = "file_name," + ",".join(f"caption_{i}" for i in range(1, 6))
        caps = ",".join(f"{folder} caption {i}" for i in range(1, 6))
        (tmp_path / f"clotho_captions_{folder}.csv").write_text(f"{header}\n{name},{caps}\n")
    clips = load_dataset(tmp_path)
    assert {c.split for c in clips} == {"train", "test"}
    assert all(len(c.captions) == 5 and Path(c.audio).is_file() for c in clips)


def test_audiocaps_skips_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_tone(tmp_path / "audio" / "yt1.flac")
    write_tone(tmp_path / "audio" / "77.wav")
    (tmp_path / "train.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n1,yt1,30,a dog barks\n2,yt1,30,a dog is barking\n"
        "77,yt2,0,rain falls\n3,missing,10,nothing here\n"
    )
    with caplog.at_level("WARNING"):
        clips = load_dataset(tmp_path)
    assert len(clips) == 2
    assert clips[0].captions == ["a dog barks", "a dog is barking"]
    assert "skipped 1 caption row" in caplog.text


def test_esc50(tmp_path: Path) -> None:
    write_tone(tmp_path / "audio" / "1-100-A-0.wav")
    write_tone(tmp_path / "audio" / "2-100-A-10.wav")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n1-100-A-0.wav,1,0,dog,True,100,A\n"
        "2-100-A-10.wav,2,10,rain,True,100,A\n"
    )
    clips = load_dataset(tmp_path)
    assert [(c.esc50, c.fold, c.split) for c in clips] == [("dog", 1, "test"), ("rain", 2, "test")]


def test_generic_manifest_csv_and_jsonl(tmp_path: Path) -> None:
    write_tone(tmp_path / "x.wav")
    (tmp_path / "m.csv").write_text("audio,caption,caption2\nx.wav,a tone,a beep\n")
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": "x.wav", "caption": "a tone", "split": "val"}) + "\n")
    csv_clips = load_dataset(tmp_path / "m.csv")
    json_clips = load_dataset(tmp_path / "m.jsonl")
    assert csv_clips[0].captions == ["a tone", "a beep"] and csv_clips[0].split == "train"
    assert json_clips[0].split == "validation"
    (tmp_path / "bad.csv").write_text("path,caption\nx.wav,a tone\n")
    with pytest.raises(ConfigError, match="audio"):
        load_dataset(tmp_path / "bad.csv")


def test_compose_caption() -> None:
    assert compose_caption("A dog barks.", "The rain falls.") == "A dog barks while the rain falls"
    assert compose_caption("a cow moos", "Footsteps on gravel", "and") == "a cow moos and footsteps on gravel"
    assert compose_caption("a cow moos", "TV static") == "a cow moos while TV static"


def test_mixtures_seeded_and_mixed(tmp_path: Path) -> None:
    clips = [Clip(f"c{i}", str(write_tone(tmp_path / f"{i}.wav", freq=200 + 100 * i, seconds=0.5 + i * 0.25)),
                  [f"sound {i}"], "train", f"g{i}") for i in range(4)]
    a, b = make_mixtures(clips, 5, seed=3), make_mixtures(clips, 5, seed=3)
    assert [m.captions for m in a] == [m.captions for m in b] and len(a) == 5
    assert all(m.mix_of[0].group != m.mix_of[1].group for m in a)
    wave = load_clip_audio(a[0], 16000)
    expected = max(len(load_clip_audio(s, 16000)) for s in a[0].mix_of)
    assert len(wave) == expected and float(wave.abs().max()) <= 1.0 + 1e-6
    mixed = mix_waveforms(torch.ones(4) * 0.5, torch.ones(2), 0.0)
    assert torch.allclose(mixed, torch.tensor([1.0, 1.0, 0.5, 0.5]))


@pytest.mark.parametrize("n,fraction", [(50, 0.2), (50, 0.6), (7, 0.4), (10, 1.0)])
def test_caption_noise_exact(n: int, fraction: float) -> None:
    clips = _clips(n, captions_per=2)
    noisy, idx = inject_caption_noise(clips, fraction, seed=1)
    assert len(idx) == round(fraction * n) and len(set(idx)) == len(idx)
    changed = [i for i in range(n) if noisy[i].captions != clips[i].captions]
    assert changed == idx  # exactly the reported pairs are mismatched: a derangement
    assert sorted(map(tuple, (noisy[i].captions for i in idx))) == sorted(map(tuple, (clips[i].captions for i in idx)))
    assert clips[0].captions == ["caption 0 0", "caption 0 1"]  # the input is untouched
    again, idx2 = inject_caption_noise(clips, fraction, seed=1)
    assert idx2 == idx and [c.captions for c in again] == [c.captions for c in noisy]
    other, idx3 = inject_caption_noise(clips, fraction, seed=2)
    assert (idx3, [c.captions for c in other]) != (idx, [c.captions for c in noisy])


def test_caption_noise_edge_cases() -> None:
    assert inject_caption_noise(_clips(5), 0.0, 0)[1] == []
    with pytest.raises(ConfigError, match="single clip"):
        inject_caption_noise(_clips(5), 0.2, 0)
    with pytest.raises(ConfigError):
        inject_caption_noise(_clips(5), 1.5, 0)


def test_group_batches_unique_keys() -> None:
    keys = [{f"g{i % 3}", f"cap{i}"} for i in range(30)]
    batches = group_batches(keys, 8, random.Random(0))
    for batch in batches:
        groups = [k for i in batch for k in keys[i]]
        assert len(groups) == len(set(groups)) and 2 <= len(batch) <= 3
    assert sorted(i for b in batches for i in b) == list(range(30))


def test_caption_key_ignores_case_and_punctuation_in_any_script() -> None:
    assert caption_key("A dog barks.") == caption_key("a dog  barks") == "cap:a dog barks"
    assert caption_key("The dog's bark!") == "cap:the dog's bark"
    assert caption_key("Un Canard.") == caption_key("un canard") != caption_key("une canne")
    assert caption_key("カエル") != caption_key("犬")  # not every non-Latin caption the same key
    assert caption_key("Ein rotes Riesenkänguru.") == "cap:ein rotes riesenkänguru"


def test_feature_cache_of_a_multilingual_run_serves_every_caption_training_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``features`` caches the captions of every configured language (not only ``clip.captions``),
    so that training on the cache never runs the text backbone."""
    en = ["a frog", "a cow", "a dog", "a duck", "a cat", "a horse"]
    fr = ["une grenouille", "une vache", "un chien", "un canard", "un chat", "un cheval"]
    rows = []
    for i in range(6):
        write_tone(tmp_path / "audio" / f"{i}.wav", freq=200 + 90 * i, seconds=0.3, seed=i)
        rows.append({"clip_id": f"c{i}", "audio": f"audio/{i}.wav", "captions": [en[i]], "caption_fr": fr[i],
                     "split": "train" if i < 4 else "validation", "group": f"g{i}"})
    (tmp_path / "ml.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config_path = tmp_path / "run.json"
    config_path.write_text(json.dumps({
        "data": [str(tmp_path / "ml.jsonl")], "model": "tiny", "loss": "kcl", "languages": ["en", "fr"],
        "batch_size": 2, "seed": 3, "device": "cpu", "out": str(tmp_path / "out"),
        "features_cache": str(tmp_path / "features"), "progress": False,
    }), encoding="utf-8")
    assert features.main(["--config", str(config_path)]) == 0

    config = load_train_config(str(config_path))
    data = prepare_data(config)
    read = [t for c in data.train + data.validation for t in clip_captions(c, config.languages)]
    assert "un chien" in read and "a dog" in read
    model = create_model(config.run_model_config(), seed=config.seed)
    model.eval()
    with torch.no_grad():
        expected = model.text_features(read).float()

    def no_backbone(texts: list[str]) -> torch.Tensor:
        raise AssertionError(f"the text backbone ran on {texts}: the cache lacks captions that training reads")

    monkeypatch.setattr(model, "text_features", no_backbone)
    source = FeatureSource(model, config, data.train + data.validation, torch.device("cpu"))
    torch.testing.assert_close(source.text(read), expected)
