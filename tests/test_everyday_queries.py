"""The everyday-query benchmark: metric computation (known relevant sets → known R@k), the held-out
split, and the committed query file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atr_demo.evaluation import relevance_metrics
from atr_demo.gallery import index_gallery
from atr_demo.model import load_model
from atr_demo.search import search_text
from benchmarks.everyday_queries import DEFAULT_QUERIES, evaluate, load_queries, main, summary_table

from tests.helpers import write_tone

QUERIES = ["a low hum", "a high beep", "a dog barking", "thunder"]


def test_relevance_metrics_on_known_ranks() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4], [0.5, 0.4, 0.3, 0.2]])
    relevant = torch.tensor([[False, True, False, True],  # ranks 2 and 4
                             [False, False, False, False],  # none
                             [True, False, False, False]])  # rank 1
    per = relevance_metrics(scores, relevant, ks=(1, 2, 5))
    assert per["R@1"].tolist() == [0.0, 0.0, 1.0]
    assert per["R@2"].tolist() == [1.0, 0.0, 1.0]
    assert per["R@5"].tolist() == [1.0, 0.0, 1.0]  # k past the gallery: still no hit without a relevant item
    assert per["first"].tolist() == [2, 5, 1] and per["has_relevant"].tolist() == [True, False, True]
    # AP@10 = (1/2)(1/2 + 2/4) = 0.5 for the first query; 0 without a relevant item; 1 for the third
    torch.testing.assert_close(per["AP@10"], torch.tensor([0.5, 0.0, 1.0]))


def _gallery(root: Path, in_training: dict[str, bool] | None = None) -> Path:
    rows = []
    for i, freq in enumerate((220.0, 440.0, 660.0, 880.0, 1320.0, 1760.0)):
        name = f"tone{i}"
        write_tone(root / "audio" / f"{name}.wav", freq=freq, seconds=0.5, sr=16000, noise=0.02 * i, seed=i)
        rows.append({"audio": f"audio/{name}.wav", "caption": f"a tone of {int(freq)} hertz", "clip_id": name,
                     "in_training": (in_training or {}).get(name, False)})
    (root / "gallery.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def test_evaluate_gives_known_recall_on_a_tiny_model(tmp_path: Path) -> None:
    model = load_model("tiny")
    root = _gallery(tmp_path / "gallery")
    gallery = index_gallery(model, [root], cache_dir=tmp_path / "cache", progress=False)
    hum = QUERIES[0]
    ranked = [Path(r["file"]).stem for r in search_text(model, gallery, [hum], k=6, mode="cosine")[0]["results"]]
    # the same query twice: once its first result is relevant, once its third; two queries nothing answers
    queries = [{"query": hum, "relevant": [ranked[0]]}, {"query": hum, "relevant": [ranked[2]]},
               {"query": QUERIES[2], "relevant": []}, {"query": QUERIES[3], "relevant": ["not-in-the-gallery"]}]
    # the first result was seen in training: held out, it is gone and the third result moves up to rank 2
    _gallery(root, in_training={ranked[0]: True})
    gallery = index_gallery(model, [root], cache_dir=tmp_path / "cache", progress=False)
    result = evaluate(model, gallery, queries, modes=["cosine", "transport"])
    assert result["clips"] == {"all": 6, "held_out": 5} and result["answerable"] == {"all": 2, "held_out": 1}
    cosine = result["modes"]["cosine"]
    # all clips: ranks 1 and 3; the unanswerable queries count as 0
    assert cosine["all"]["R@1"] == pytest.approx(0.25) and cosine["all"]["R@5"] == pytest.approx(0.5)
    assert cosine["all"]["R@10"] == pytest.approx(0.5) and cosine["all"]["R@5 answerable"] == pytest.approx(1.0)
    assert cosine["all"]["mAP@10"] == pytest.approx((1.0 + 1.0 / 3.0) / 4)
    assert cosine["held_out"]["R@1"] == pytest.approx(0.0) and cosine["held_out"]["R@5"] == pytest.approx(0.25)
    assert cosine["held_out"]["mAP@10"] == pytest.approx(0.5 / 4)
    per = result["per_query"]
    assert [q["relevant"] for q in per] == [{"all": 1, "held_out": 0}, {"all": 1, "held_out": 1},
                                            {"all": 0, "held_out": 0}, {"all": 0, "held_out": 0}]
    assert per[0]["top1"]["cosine"] == {"all": ranked[0], "held_out": ranked[1]}
    assert per[0]["R@5"]["cosine"] == {"all": 1, "held_out": 0}
    # transport: each query alone against the gallery's caption anchors, as the app searches
    app_top1 = search_text(model, gallery, [QUERIES[1]], k=1, mode="transport")[0]["results"][0]
    lone = evaluate(model, gallery, [{"query": QUERIES[1], "relevant": []}], modes=["transport"])
    assert lone["per_query"][0]["top1"]["transport"]["all"] == Path(app_top1["file"]).stem
    assert set(result["modes"]["transport"]) == {"all", "held_out"}
    assert "| cosine | held out | 5 | 1 / 4 | 0.000 | 0.250 |" in summary_table(result)


def test_command_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _gallery(tmp_path / "gallery")
    queries = tmp_path / "queries.json"
    queries.write_text(json.dumps({"queries": [{"query": "a tone", "relevant": ["tone0", "tone1"]}]}))
    assert main(["--model", "tiny", "--gallery", str(root), "--queries", str(queries),
                 "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["queries"] == 1 and out["answerable"] == {"all": 1, "held_out": 1} and out["unjudged_clips"] == 0
    queries.write_text(json.dumps({"judged_packages": ["other"], "queries": [{"query": "a tone", "relevant": []}]}))
    assert main(["--model", "tiny", "--gallery", str(root), "--queries", str(queries),
                 "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unjudged_clips"] == 6  # the tones have no source package
    assert set(out["modes"]) >= {"cosine", "transport"} and 0.0 <= out["modes"]["cosine"]["all"]["R@5"] <= 1.0


def test_committed_queries_are_everyday_and_judged() -> None:
    data = json.loads(DEFAULT_QUERIES.read_text(encoding="utf-8"))
    assert data["judging_rule"] and data["description"]
    queries = load_queries(DEFAULT_QUERIES)
    texts = [q["query"] for q in queries]
    assert len(queries) >= 40 and len(set(texts)) == len(texts)
    for must in ("a dog barking", "rain on a window", "glass shattering", "birds singing in the morning",
                 "a crowd cheering", "keyboard typing", "a baby crying", "water pouring into a glass"):
        assert must in texts
    assert sum(bool(q["relevant"]) for q in queries) >= 40  # unanswerable queries are kept, not dropped
    assert data["judged_clips"] >= 1426 and "0ad-data" in data["judged_packages"]
    assert any(not q["relevant"] for q in queries)
    assert all(len(set(q["relevant"])) == len(q["relevant"]) for q in queries)
