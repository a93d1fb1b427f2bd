"""Multilingual data, losses in training, per-language metrics and MRV, the multilingual split
builder and the cross-validation split — on small generated data and the tiny model."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from atr_demo.errors import CheckpointError, ConfigError
from atr_demo.evaluation import mean_rank_variance, paired_ranks
from atr_demo.model import load_model

from tests.helpers import make_tiny_bert, offline_hub_cache, write_tone
from training import evaluate as evaluate_mod
from training import multilingual
from training.config import TrainConfig
from training.corpus import debian
from training.datasets import cv_split, language_captions, load_dataset, load_generic_manifest
from training.prepare import prepare_data
from training.train import epoch_batches, train

LANGS = {
    "en": ["a frog", "a cow", "a dog", "a duck", "a drake", "a cat", "a horse", "a bee", "a train", "a bell",
           "an owl", "a pig", "a hen", "a goat", "a sheep", "a crow"],
    "fr": ["une grenouille", "une vache", "un chien", "un canard", "un canard", "un chat", "un cheval", "une abeille",
           "un train", "une cloche", "un hibou", "un cochon", "une poule", "une chèvre", "un mouton", "un corbeau"],
    "ja": ["カエル", "牛", "犬", "アヒル", "カモ", "猫", "馬", "蜂",
           "電車", "鐘", "フクロウ", "豚", "雌鶏", "ヤギ", "羊", "カラス"],
}


@pytest.fixture(scope="module")
def ml_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 seeded tone clips with captions in en (``captions``), fr and ja (``caption_<lang>``)."""
    root = tmp_path_factory.mktemp("ml")
    rows = []
    for i in range(16):
        write_tone(root / "audio" / f"{i}.wav", freq=200 + 70 * i, seconds=0.3 + 0.02 * i, noise=0.05, seed=i)
        split = "train" if i < 10 else "validation" if i < 13 else "test"
        rows.append({"clip_id": f"c{i}", "audio": f"audio/{i}.wav", "captions": [LANGS["en"][i]],
                     "caption_fr": LANGS["fr"][i], "caption_ja": LANGS["ja"][i], "split": split, "group": f"g{i}"})
    rows[15].pop("caption_ja")  # one clip lacks a language
    (root / "multilingual.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return root / "multilingual.jsonl"


def _config(data: Path, out: Path, **kw: Any) -> TrainConfig:
    base = dict(data=[str(data)], model="tiny", loss="kcl", languages=["en", "fr", "ja"], eps=0.1, batch_size=4,
                epochs=2, lr=3e-3, seed=3, device="cpu", out=str(out), features_cache=str(out.parent / "features"),
                progress=False)
    base.update(kw)
    return TrainConfig.from_dict(base)


# -- data layer --------------------------------------------------------------------------------

def test_language_columns_in_jsonl_and_csv(ml_data: Path, tmp_path: Path) -> None:
    clips = load_dataset(ml_data)
    assert clips[0].captions == ["a frog"] and clips[0].captions_by_lang == {"fr": ["une grenouille"], "ja": ["カエル"]}
    assert language_captions(clips[0], "en") == ["a frog"] and language_captions(clips[0], "ja") == ["カエル"]
    assert language_captions(clips[15], "ja") == []
    write_tone(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("audio,caption_1,caption_2,caption_fr,caption_pt_BR,caption_sr@latin\n"
                                    "a.wav,a tone,a beep,une tonalité,um tom,ton\n", encoding="utf-8")
    [clip] = load_generic_manifest(tmp_path / "m.csv")
    # numbered columns are default-language captions; language-tagged ones are not
    assert clip.captions == ["a tone", "a beep"]
    assert clip.captions_by_lang == {"fr": ["une tonalité"], "pt_BR": ["um tom"], "sr@latin": ["ton"]}


def test_cv_split_is_balanced_deterministic_and_tests_every_clip_once(ml_data: Path) -> None:
    clips = load_dataset(ml_data)
    tested: list[str] = []
    for fold in range(4):
        split = cv_split(clips, 4, fold)
        assert [c.clip_id for c in split] == [c.clip_id for c in clips]  # order kept, originals untouched
        counts = {s: sum(c.split == s for c in split) for s in ("train", "validation", "test")}
        assert counts == {"train": 8, "validation": 4, "test": 4}
        assert split == cv_split(list(reversed(clips)), 4, fold)[::-1]  # independent of the input order
        tested += [c.clip_id for c in split if c.split == "test"]
    assert sorted(tested) == sorted(c.clip_id for c in clips)
    with pytest.raises(ConfigError, match="at least 3 folds"):
        cv_split(clips, 2, 0)
    with pytest.raises(ConfigError, match="cv_fold"):
        cv_split(clips, 4, 4)


# -- metrics -------------------------------------------------------------------------------------

def test_paired_ranks_and_mean_rank_variance() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.0, 0.5, 0.4]])
    assert paired_ranks(scores).tolist() == [1, 2, 2]
    ranks = torch.tensor([[1, 2, 5], [1, 4, 1], [1, 3, 3]])
    # item 0: constant → 0; item 1: {2, 4, 3} → 2/3; item 2: {5, 1, 3} → 8/3
    assert mean_rank_variance(ranks) == pytest.approx((0 + 2 / 3 + 8 / 3) / 3)
    with pytest.raises(ValueError, match="K >= 2"):
        mean_rank_variance(ranks[:1])


def test_evaluate_languages_per_language_and_mrv() -> None:
    model = load_model("tiny")
    gen = torch.Generator().manual_seed(0)
    audio = torch.nn.functional.normalize(torch.randn(6, model.config.embed_dim, generator=gen), dim=-1)
    perfect = audio.clone()
    swapped = audio[[1, 0, 2, 3, 4, 5]]  # clips 0 and 1 described by each other's caption
    result = evaluate_mod.evaluate_languages(model, audio, {"en": perfect, "xx": swapped}, ["cosine"])["cosine"]
    assert result["languages"]["en"]["text_to_audio"]["R@1"] == 1.0
    assert result["languages"]["xx"]["text_to_audio"]["R@1"] == pytest.approx(4 / 6)
    ranks_xx = paired_ranks(swapped @ audio.T).float()
    expected = torch.stack([torch.ones(6), ranks_xx]).var(dim=0, unbiased=False).mean()
    assert result["mrv"]["text_to_audio"] == pytest.approx(float(expected)) and result["mrv"]["text_to_audio"] > 0
    assert result["mean"]["text_to_audio"]["R@1"] == pytest.approx((1 + 4 / 6) / 2)


# -- training --------------------------------------------------------------------------------------

def test_languages_filter_and_batches_avoid_shared_captions(ml_data: Path, tmp_path: Path) -> None:
    config = _config(ml_data, tmp_path / "run")
    data = prepare_data(config)
    assert "c15" not in {c.clip_id for c in data.train + data.validation + data.test}  # lacks ja
    # duck / drake share "un canard": never in one batch
    for epoch in range(1, 6):
        for clips, _ in epoch_batches(data.train, config, epoch):
            assert not {"c3", "c4"} <= {c.clip_id for c in clips}


@pytest.mark.parametrize("loss", ["kcl", "kcl_mltm", "cacl", "cacl_mltm", "mltm"])
def test_multilingual_training_runs_and_resumes_exactly(ml_data: Path, tmp_path: Path, loss: str) -> None:
    full = train(_config(ml_data, tmp_path / "full", loss=loss))
    log = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(r["train_loss"] is not None and r["train_loss"] == r["train_loss"] for r in log)
    assert 0.0 <= log[-1]["val"]["t2a_R@1"] <= 1.0
    part = tmp_path / "part"
    train(_config(ml_data, part, loss=loss), stop_after_epoch=1)
    train(_config(ml_data, part, loss=loss), resume=True)
    a, b = load_file(str(full / "last" / "model.safetensors")), load_file(str(part / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_multilingual_config_errors(ml_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="languages"):
        _config(ml_data, tmp_path / "r", languages=[])
    with pytest.raises(ConfigError, match="mixtures"):
        _config(ml_data, tmp_path / "r", mixtures=4)
    with pytest.raises(ConfigError, match="no clip has captions"):
        train(_config(ml_data, tmp_path / "r", languages=["en", "de"]))


def test_tiny_multilingual_hf_text_backbone_trains_by_hub_id(
    ml_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any transformers sentence encoder works as the text tower by hub id: here a tiny random BERT
    whose vocabulary holds French and Japanese words, built locally and placed in a hub cache
    (offline; nothing is downloaded), then named ``acme/tiny-ml-bert`` in the model config."""
    words = [w for lang in ("fr", "ja") for cap in LANGS[lang] for w in cap.split()]
    folder = make_tiny_bert(tmp_path / "tiny-ml-bert", extra_words=words)
    offline_hub_cache(monkeypatch, tmp_path / "hub", "acme/tiny-ml-bert", folder)
    model = {"audio": {"kind": "tiny_audio", "dim": 16}, "text": {"kind": "hf_text", "name": "acme/tiny-ml-bert"},
             "embed_dim": 16}
    other = {**model, "text": {"kind": "hf_text", "name": "acme/not-in-the-cache"}}
    with pytest.raises(CheckpointError, match="acme/not-in-the-cache"):
        train(_config(ml_data, tmp_path / "missing", loss="cacl", model=other, epochs=1))
    out = train(_config(ml_data, tmp_path / "hf", loss="cacl", model=model, epochs=1))
    loaded = load_model(str(out / "best"))
    assert loaded.config.text.name == "acme/tiny-ml-bert"
    emb = loaded.embed_texts(["カエル", "une grenouille"])
    assert emb.shape == (2, 16) and not torch.allclose(emb[0], emb[1])
    ids = loaded.text_backbone.tokenizer("カエル")["input_ids"]
    assert loaded.text_backbone.tokenizer.unk_token_id not in ids  # the word is in the vocabulary


def test_evaluate_cli_reports_languages(ml_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = train(_config(ml_data, tmp_path / "run", epochs=1))
    argv = ["--model", str(out / "best"), "--data", str(ml_data), "--split", "all", "--languages", "en,fr,ja",
            "--modes", "cosine,transport"]
    assert evaluate_mod.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| cosine | ja |" in printed and "| transport | MRV (lower is better) |" in printed
    assert evaluate_mod.main(argv[:-2] + ["--languages", "en,de", "--json"]) == 1
    assert "no clip has captions" in capsys.readouterr().err


# -- the multilingual split builder -------------------------------------------------------------------

KANGAROO = """A red kangaroo.
de.utf8=Ein rotes Riesenkänguru.
fr.utf8=Un kangourou rouge.
hi.utf8=एक लाल कंगारू|
ja.utf8=アカカンガルー
pt_BR.utf8=Um canguru vermelho.
sr@latin.utf8=Crveni kengur.
xx-bogus tag=ignored
es.utf8=
"""


def test_parse_stamp_text() -> None:
    texts = multilingual.parse_stamp_text(KANGAROO)
    assert texts["en"] == "A red kangaroo." and texts["fr"] == "Un kangourou rouge."
    assert texts["hi"] == "एक लाल कंगारू" and texts["sr@latin"] == "Crveni kengur." and texts["pt_BR"].startswith("Um")
    assert "es" not in texts and not any("bogus" in k for k in texts)


def test_build_multilingual_split_from_a_fake_corpus(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    stamps = "usr/share/tuxpaint/stamps/animals"
    rows = [
        {"clip_id": "tp-kangaroo", "audio": "audio/k.flac", "package": "tuxpaint-stamps-default", "split": "test",
         "group": "tp:kangaroo", "captions": ["a kangaroo thumps"], "original_name": f"{stamps}/kangaroo.ogg",
         "licence": "GPL-2+", "author": None, "esc50": None},
        {"clip_id": "tp-nodesc", "audio": "audio/n.flac", "package": "tuxpaint-stamps-default", "split": "train",
         "group": "tp:n", "captions": ["x"], "original_name": f"{stamps}/nodesc.ogg", "licence": "GPL-2+"},
        {"clip_id": "other", "audio": "audio/o.flac", "package": "0ad-data", "split": "train", "group": "o",
         "captions": ["a cow moos"], "original_name": "o.ogg", "licence": "CC"},
    ]
    corpus.mkdir()
    (corpus / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tree = corpus / "cache" / "extracted" / "tuxpaint-stamps-default-text"
    (tree / stamps).mkdir(parents=True)
    (tree / stamps / "kangaroo.txt").write_text(KANGAROO, encoding="utf-8")
    debian.mark_done(tree)  # already extracted: nothing is downloaded
    path, coverage = multilingual.build(corpus)
    [row] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert row["clip_id"] == "tp-kangaroo" and row["split"] == "test" and row["group"] == "tp:kangaroo"
    assert row["captions"] == ["A red kangaroo."] and row["caption_fr"] == "Un kangourou rouge."
    assert coverage["fr"]["test"] == 1
    with open(corpus / "multilingual_coverage.csv", newline="", encoding="utf-8") as fh:
        table = {r["language"]: r for r in csv.DictReader(fh)}
    assert table["ja"]["clips"] == "1" and table["ja"]["test"] == "1"
    [clip] = load_dataset(path)
    assert language_captions(clip, "ja") == ["アカカンガルー"] and clip.split == "test"
    (corpus / "manifest.jsonl").write_text(json.dumps(rows[2]) + "\n")
    with pytest.raises(ConfigError, match="no tuxpaint-stamps-default clips"):
        multilingual.build(corpus)


def test_multilingual_suite_cross_validates_and_renders(ml_data: Path, tmp_path: Path) -> None:
    from training import experiments as exp

    base = dict(data=[str(ml_data)], model="tiny", languages=["en", "fr", "ja"], eps=0.1, batch_size=4, epochs=1,
                lr=3e-3, device="cpu", features_cache=str(tmp_path / "features"), progress=False)
    payload = exp.run_suite("multilingual", base, [0, 1], tmp_path / "res", tmp_path / "runs",
                            command="python -m training experiments --suite multilingual", only=["cacl-ot"])
    assert len(payload["runs"]) == exp.ML_FOLDS * 2
    tested: list[str] = []
    for fold in range(exp.ML_FOLDS):
        result_file = tmp_path / "runs" / "multilingual" / f"fold{fold}-cacl-ot" / "seed0" / "result.json"
        record = json.loads(result_file.read_text())
        assert record["config"]["cv_fold"] == fold and record["config"]["loss"] == "cacl_mltm"
        ml = record["result"]["multilingual"]["cosine"]
        assert set(ml["languages"]) == {"en", "fr", "ja"} and ml["mrv"]["text_to_audio"] >= 0
        tested.append(record["result"]["n_clips"])
    assert sum(tested) == 15  # every clip with all three languages is tested exactly once
    summary = payload["summary"]["CACL-OT (m-LTM terms)"]["metrics"]
    per_seed = [sum(r["metrics"]["ml/cosine/mrv.t2a"] for r in payload["runs"] if r["seed"] == k) / exp.ML_FOLDS
                for k in (0, 1)]
    assert summary["ml/cosine/mrv.t2a"] == pytest.approx(list(exp.mean_std(per_seed)))
    md = (tmp_path / "res" / "multilingual.md").read_text()
    assert "| method | en | fr | ja |" in md and "MRV T→A" in md and "| CACL-OT (m-LTM terms) |" in md


def test_build_multilingual_cli_reports_a_missing_corpus(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert multilingual.main(["--corpus", str(tmp_path / "nowhere")]) == 1
    assert "build the corpus first" in caplog.text


@pytest.mark.parametrize("folds, fold", [(2, 0), (5, 5), (5, -1)])
def test_cv_config_errors(ml_data: Path, tmp_path: Path, folds: int, fold: int) -> None:
    with pytest.raises(ConfigError, match="cv_folds must be 0"):
        _config(ml_data, tmp_path / "r", cv_folds=folds, cv_fold=fold)
