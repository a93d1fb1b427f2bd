"""``python -m training analyse`` end to end on the tiny model and a generated corpus."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from atr_demo.model import create_model, tiny_config

from tests.helpers import write_tone
from training import analyse
from training.analysis.structure import chance_knn_overlap
from training.datasets import load_dataset, split_clips

WORDS = ["dog barks", "rain falls", "bell rings", "engine runs", "bird sings", "wind blows", "car horn",
         "clock ticks", "water drips", "fire crackles"]
N_TEST = 14


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 short tones in 2 packages: 14 test clips (8 pkgA, 6 pkgB), 6 train clips."""
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for n in range(20):
        words = WORDS[n % len(WORDS)]
        package = "pkgA" if n < 10 else "pkgB"
        split = "test" if n < 8 or 10 <= n < 16 else "train"
        write_tone(root / "audio" / f"{n}.wav", freq=150 + 53 * n, seconds=0.25 + 0.01 * n, noise=0.05, seed=n)
        rows.append({"clip_id": f"c{n}", "audio": f"audio/{n}.wav", "package": package,
                     "captions": [f"a {words} nearby", f"the {words} {n}"], "split": split, "group": f"g{n}"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = analyse.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_fixture_has_the_intended_split(corpus: Path) -> None:
    clips = split_clips(load_dataset(corpus), "test")
    assert len(clips) == N_TEST and {c.package for c in clips} == {"pkgA", "pkgB"}


def test_table_drops_large_ks(
    corpus: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="training.analyse"):
        code, out, err = _run(capsys, ["--model", "tiny", "--data", str(corpus)])
    assert code == 0, err
    assert "dropping k = 20, 50" in caplog.text  # the defaults 1 5 10 20 50 on 14 clips
    header = out.splitlines()[0]
    assert "| comparison | distance | k=1 | k=5 | k=10 | linear CKA |" == header
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert [r.split("|")[2].strip() for r in rows[1:4]] == ["cosine", "euclidean", "metric"]
    assert rows[1].startswith("| audio vs text | cosine |")
    chance = rows[-1]
    assert chance.startswith("| chance |") and f"{chance_knn_overlap(N_TEST, 5):.3f}" in chance
    assert f"{N_TEST} clips" in out


def test_json_out_and_plot(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file, plot = tmp_path / "res" / "structure.json", tmp_path / "plots" / "knn.png"
    code, out, err = _run(capsys, ["--model", "tiny", "--data", str(corpus), "--ks", "1", "3", "5",
                                   "--json", "--out", str(out_file), "--plot", str(plot)])
    assert code == 0, err
    result = json.loads(out)
    assert json.loads(out_file.read_text()) == result
    assert result["n_clips"] == N_TEST and result["ks"] == [1, 3, 5] and result["compare"] is None
    report = result["comparisons"]["audio vs text"]
    assert set(report["knn"]) == {"cosine", "euclidean", "metric"}
    values = [v for d in report["knn"].values() for v in d.values()] + [report["cka"], *report["chance"].values()]
    assert len(values) == 3 * 3 + 1 + 3 and all(0.0 <= v <= 1.0 for v in values)
    # the tiny model's ground metric is M = I on unit rows: metric neighbourhoods are euclidean ones
    assert report["knn"]["metric"] == report["knn"]["euclidean"]
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_text_side_is_the_normalised_caption_mean(corpus: Path) -> None:
    import torch
    import torch.nn.functional as F

    model = create_model(tiny_config())
    clips = split_clips(load_dataset(corpus), "test")[:3]
    text = analyse.caption_means(model, clips)
    assert text.shape == (3, model.config.embed_dim)
    for i, clip in enumerate(clips):
        expected = F.normalize(model.embed_texts(clip.captions).mean(dim=0), dim=0)
        assert torch.allclose(text[i], expected, atol=1e-5)


def test_compare_same_model(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, ["--model", "tiny", "--compare", "tiny", "--data", str(corpus),
                                   "--ks", "1", "5", "--distances", "cosine,metric", "--json"])
    assert code == 0, err
    comparisons = json.loads(out)["comparisons"]
    assert list(comparisons) == ["audio vs text", "audio vs text (B)", "audio A vs B", "text A vs B"]
    assert set(comparisons["audio vs text"]["knn"]) == {"cosine", "metric"}
    assert comparisons["audio vs text (B)"] == comparisons["audio vs text"]  # the same model twice
    for name in ("audio A vs B", "text A vs B"):
        assert set(comparisons[name]["knn"]) == {"cosine"}  # the metric lives in one model's space
        assert comparisons[name]["knn"]["cosine"] == {"1": 1.0, "5": 1.0}
        assert comparisons[name]["cka"] == pytest.approx(1.0)
    code, out, _ = _run(capsys, ["--model", "tiny", "--compare", "tiny", "--data", str(corpus), "--ks", "1"])
    assert code == 0 and "| audio A vs B | cosine | 1.000 |" in out and "A = tiny, B = tiny" in out


def test_packages_filter(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, ["--model", "tiny", "--data", str(corpus), "--packages", "pkgB", "--ks", "2",
                                   "--json"])
    assert code == 0, err
    assert json.loads(out)["n_clips"] == 6


def test_errors(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, ["--model", "tiny", "--data", str(tmp_path / "missing")])
    assert code == 1 and out == "" and "error:" in err and "does not exist" in err
    code, _, err = _run(capsys, ["--model", "tiny", "--data", str(corpus), "--ks", "14", "20"])
    assert code == 1 and "too few" in err
    code, _, err = _run(capsys, ["--model", "tiny", "--data", str(corpus), "--distances", "cosine,manhattan"])
    assert code == 1 and "manhattan" in err
    code, _, err = _run(capsys, ["--model", "tiny", "--data", str(corpus), "--split", "validation"])
    assert code == 1 and "no clips" in err


def test_short_plot_names() -> None:
    from training.analyse import short_name

    assert short_name("tiny") == "tiny" and short_name("owner/repo") == "owner/repo"
    assert short_name("artifacts/experiments/analysis/infonce/seed0/train/best") == "train/best"
