"""Gallery indexing with the on-disk cache, and the CLI commands end to end on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from atr_demo import cli
from atr_demo.gallery import index_gallery
from atr_demo.model import create_model, tiny_config

from tests.helpers import write_tone


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    root = tmp_path / "library"
    write_tone(root / "a.wav", 440, 1.0)
    write_tone(root / "sub" / "b.flac", 880, 0.5, sr=22050, channels=2)
    write_tone(root / "sub" / "c.ogg", 220, 2.0, sr=44100, noise=0.1)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (root / "notes.txt").write_text("not audio")
    (root / "gallery.jsonl").write_text(
        json.dumps({"audio": "a.wav", "caption": "a pure tone", "licence": "CC0"}) + "\n"
    )
    return root


def test_index_skips_broken_and_uses_cache(library: Path, tmp_path: Path) -> None:
    model = create_model(tiny_config())
    cache = tmp_path / "cache"
    g1 = index_gallery(model, library, cache_dir=cache, progress=False)
    assert [p.name for p in g1.files] == ["a.wav", "b.flac", "c.ogg"]
    assert len(g1) == 3 and len(g1.skipped) == 1 and g1.skipped[0][0].name == "broken.wav"
    assert g1.metadata[0]["caption"] == "a pure tone" and g1.metadata[0]["licence"] == "CC0"
    assert g1.captions() == ["a pure tone"]
    # second run: served from the cache (encode_audio must not be called)
    calls = []
    original = model.encode_audio
    model.encode_audio = lambda waves: calls.append(len(waves)) or original(waves)  # type: ignore[method-assign]
    g2 = index_gallery(model, library, cache_dir=cache, progress=False)
    assert calls == [] and torch.equal(g1.embeddings, g2.embeddings)
    # change one file: only that one is re-embedded
    write_tone(library / "a.wav", 300, 1.0)
    g3 = index_gallery(model, library, cache_dir=cache, progress=False)
    assert calls == [1]
    assert not torch.equal(g3.embeddings[0], g1.embeddings[0]) and torch.equal(g3.embeddings[1:], g1.embeddings[1:])


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_search_json(library: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for mode in ("cosine", "metric", "transport"):
        code, out, err = _run(capsys, [
            "search", "a tone", "rain", "--gallery", str(library), "--model", "tiny", "--k", "2", "--mode", mode,
            "--json", "--cache-dir", str(tmp_path / "c"),
        ])
        data = json.loads(out)
        assert code == 1 and "skipped broken.wav:" in err  # results for the good files, a reason for the bad one
        assert [d["query"] for d in data] == ["a tone", "rain"]
        assert all(len(d["results"]) == 2 for d in data)
        names = {r["file"] for d in data for r in d["results"]}
        assert names <= {"a.wav", "sub/b.flac", "sub/c.ogg"}  # relative to the gallery folder, no server path
        scores = [r["score"] for r in data[0]["results"]]
        assert scores == sorted(scores, reverse=True)


def test_cli_label_json_and_table(library: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, [
        "label", str(library / "a.wav"), str(library / "sub"), "--model", "tiny", "--top", "3", "--json",
        "--cache-dir", str(tmp_path / "c"),
    ])
    data = json.loads(out)
    assert code == 0 and len(data) == 3
    assert all(len(d["labels"]) == 3 and set(d["labels"][0]) == {"label", "score"} for d in data)
    code, out, err = _run(capsys, [
        "label", str(library), "--model", "tiny", "--top", "2", "--json", "--cache-dir", str(tmp_path / "c"),
    ])
    data = json.loads(out)  # one row per file: three labelled, the broken one with its reason
    assert code == 1 and [Path(d["file"]).name for d in data] == ["a.wav", "b.flac", "c.ogg", "broken.wav"]
    assert "labels" not in data[3] and "not readable audio" in data[3]["error"] and "broken.wav" in err
    labels = tmp_path / "labels.txt"
    labels.write_text("tone\nnoise\n")
    code, out, _ = _run(capsys, [
        "label", str(library / "a.wav"), "--model", "tiny", "--labels", str(labels), "--cache-dir", str(tmp_path / "c"),
    ])
    assert code == 0 and "tone" in out and "noise" in out


def test_cli_embed_formats(library: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_st = tmp_path / "emb.safetensors"
    code, out, _ = _run(capsys, [
        "embed", str(library), "--model", "tiny", "--out", str(out_st), "--json", "--cache-dir", str(tmp_path / "c"),
    ])
    assert code == 1  # one file could not be decoded, the others are written
    assert load_file(str(out_st))["embeddings"].shape == (3, 16)
    out_np = tmp_path / "emb.npy"
    code, _, _ = _run(capsys, [
        "embed", str(library / "a.wav"), "--model", "tiny", "--out", str(out_np), "--cache-dir", str(tmp_path / "c"),
    ])
    assert code == 0 and np.load(out_np).shape == (1, 16)
    assert out_np.with_suffix(".files.txt").read_text().strip().endswith("a.wav")


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, ["label", str(tmp_path), "--model", str(tmp_path / "nowhere")])
    assert code == 1 and err.startswith("error:") and "neither a folder" in err
    bad = tmp_path / "x.mp3"
    bad.write_bytes(b"\x00" * 10)
    code, out, err = _run(capsys, ["label", str(bad), "--model", "tiny", "--json", "--cache-dir", str(tmp_path / "c")])
    rows = json.loads(out)
    assert code == 1 and len(rows) == 1 and rows[0]["file"] == str(bad) and "not readable audio" in rows[0]["error"]
    assert err.count("x.mp3") == 2 and len(err.splitlines()) == 1  # one line: "skipped FILE: reason", not twice


def test_cli_label_transport_needs_anchors_for_a_lone_file(
    library: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One file and 50 labels: the plan would give every label 1/50, so the CLI refuses and says
    what to do; with other clips as anchors the scores differ between labels."""
    lone = ["label", str(library / "a.wav"), "--model", "tiny", "--mode", "transport", "--json",
            "--cache-dir", str(tmp_path / "c")]
    code, out, err = _run(capsys, lone)
    assert code == 1 and out == ""
    assert "--anchors" in err and "--mode cosine" in err and "same score" in err
    anchors = tmp_path / "anchors"
    for n, freq in enumerate((150, 300, 500, 700, 1000, 1500, 2500, 4000)):
        write_tone(anchors / f"t{n}.wav", freq, 1.0, noise=0.05 * n)
    code, out, _ = _run(capsys, [*lone, "--anchors", str(anchors), "--top", "50"])
    scores = [lab["score"] for lab in json.loads(out)[0]["labels"]]
    assert code == 0 and len(scores) == 50
    assert max(scores) - min(scores) > 1e-3 * max(scores)  # not uniform: the anchors carry information
