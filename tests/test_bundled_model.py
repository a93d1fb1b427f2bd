"""The bundled checkpoint and gallery (real backbones: ``integration``), and the bundle-model command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atr_demo.gallery import index_gallery
from atr_demo.model import bundled_model_dir, create_model, load_model, tiny_config
from atr_demo.search import label_clips, search_text
from atr_demo.ui.layout import labelled_captions
from atr_demo.zeroshot import ESC50_CLASSES, embed_labels

from tests.helpers import write_tone
from training.bundle_model import bundle

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundled():
    if not (bundled_model_dir() / "config.json").is_file():
        pytest.fail("the bundled checkpoint is missing from bundled_model/")
    return load_model()


@pytest.mark.integration
def test_bundled_model_loads_strictly_and_labels_a_tone(bundled, tmp_path: Path) -> None:
    assert bundled.config.loss.startswith("mltm") and bundled.config.audio.kind == "aisfx"
    tone = write_tone(tmp_path / "tone.wav", 1000.0, 1.5, sr=48000, channels=2)
    audio = bundled.embed_files([tone])
    assert audio.shape == (1, bundled.config.embed_dim) and torch.isfinite(audio).all()
    result = label_clips(bundled, [tone], audio, embed_labels(bundled, list(ESC50_CLASSES)), top=5)
    scores = [x["score"] for x in result[0]["labels"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    card = (bundled_model_dir() / "README.md").read_text()
    assert card.startswith("---") and "library_name: atr-demo" in card and "CC BY 4.0" in card


@pytest.mark.integration
def test_bundled_gallery_is_searchable(bundled, tmp_path: Path) -> None:
    gallery_dir = REPO / "bundled_gallery"
    rows = [json.loads(line) for line in (gallery_dir / "gallery.jsonl").read_text().splitlines()]
    assert rows and all((gallery_dir / r["audio"]).is_file() and r["licence"] and r["source"] for r in rows)
    assert sum((gallery_dir / r["audio"]).stat().st_size for r in rows) <= 40e6
    assert all(isinstance(r["in_training"], bool) for r in rows) and not all(r["in_training"] for r in rows)
    gallery = index_gallery(bundled, gallery_dir, cache_dir=tmp_path, progress=False)
    assert len(gallery) == len(rows) and not gallery.skipped
    # the page's examples are everyday sounds: one caption per ESC-50 class the gallery holds
    labelled = labelled_captions(gallery)
    assert len(labelled) == len({r["esc50"] for r in rows if r["esc50"]}) >= 40
    assert set(labelled) <= {r["caption"] for r in rows if r["esc50"]}
    # a caption of the gallery should find its own clip near the top more often than chance
    hits = 0
    sample = rows[:: max(1, len(rows) // 20)]
    results = search_text(bundled, gallery, [r["caption"] for r in sample], k=10)
    for row, res in zip(sample, results, strict=True):
        hits += any(Path(x["file"]).name == Path(row["audio"]).name for x in res["results"])
    assert hits / len(sample) > 10 / len(rows)


def test_bundle_command_on_tiny_model(tmp_path: Path) -> None:
    run = tmp_path / "run"
    create_model(tiny_config(), seed=1).save_pretrained(run)
    corpus = tmp_path / "corpus"
    rows = []
    for i in range(4):
        write_tone(corpus / f"a{i}.wav", 300 + 200 * i, 0.5)
        rows.append({"clip_id": f"c{i}", "audio": f"a{i}.wav", "captions": [f"tone {i}"], "split": "test",
                     "group": f"g{i}", "esc50": "siren" if i == 0 else None})
    (corpus / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    notes = tmp_path / "notes.md"
    notes.write_text("## Generalisation\n\nleave-one-package-out table here\n")
    out = tmp_path / "bundled"
    card = bundle(run, out, [str(corpus / "manifest.jsonl")], notes=notes, name="tiny-bundle")
    text = card.read_text()
    assert "# tiny-bundle" in text and "leave-one-package-out table here" in text and "T→A R@1" in text
    assert json.loads((out / "eval.json").read_text())["split"] == "test"
    assert load_model(str(out)).config.name == "tiny-bundle"
