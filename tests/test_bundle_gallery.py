"""The bundled-gallery builder: clip choice, encoding, metadata and licences."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import write_tone
from training.bundle_gallery import choose_clips, main


def _row(i: int, package: str, group: str, split: str = "test") -> dict:
    return {"clip_id": f"{package}-{i}", "audio": f"audio/{package}-{i}.flac", "captions": [f"sound {i}", f"noise {i}"],
            "package": package, "group": group, "split": split, "licence": "CC0", "author": None,
            "original_name": f"x/{i}.ogg", "esc50": None}


def test_choose_clips_caps_groups_and_round_robins() -> None:
    rows = [_row(i, "big", f"g{i // 4}") for i in range(12)] + [_row(20 + i, "small", f"s{i}") for i in range(2)]
    rows.append(_row(99, "big", "g9", split="train"))
    chosen = choose_clips(rows, "test", per_group=2, max_clips=4)
    assert [r["package"] for r in chosen] == ["big", "small", "big", "small"]
    all_test = choose_clips(rows, "test", per_group=2, max_clips=100)
    assert len(all_test) == 3 * 2 + 2 and all(r["split"] == "test" for r in all_test)


def test_bundle_gallery_end_to_end(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    rows = [_row(i, "pkg", f"g{i}") for i in range(3)]
    for r in rows:
        write_tone(corpus / r["audio"], 300 + 100 * int(r["clip_id"].split("-")[1]), 0.5, sr=22050)
    (corpus / "licenses").mkdir()
    (corpus / "licenses" / "pkg.copyright").write_text("Format: copyright\n")
    (corpus / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "gallery"
    assert main(["--corpus", str(corpus), "--out", str(out)]) == 0
    entries = [json.loads(line) for line in (out / "gallery.jsonl").read_text().splitlines()]
    assert [e["caption"] for e in entries] == ["sound 0", "sound 1", "sound 2"]
    assert all((out / e["audio"]).is_file() and e["licence"] == "CC0" for e in entries)
    assert (out / "licenses" / "pkg.copyright").is_file()
    assert "sound 2" in (out / "LICENSES.md").read_text()
