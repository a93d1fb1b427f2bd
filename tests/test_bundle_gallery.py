"""The bundled-gallery builder: clip choice, encoding, metadata and licences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from atr_demo.errors import DataError

from tests.helpers import write_tone
from training.bundle_gallery import choose_clips, main, redistributable


def _row(i: int, package: str, group: str, split: str = "test") -> dict:
    return {"clip_id": f"{package}-{i}", "audio": f"audio/{package}-{i}.flac", "captions": [f"sound {i}", f"noise {i}"],
            "package": package, "group": group, "split": split, "licence": "CC0-1.0", "author": None,
            "original_name": f"x/{i}.ogg", "esc50": None}


def test_choose_clips_caps_groups_and_round_robins() -> None:
    rows = [_row(i, "big", f"g{i // 4}") for i in range(12)] + [_row(20 + i, "small", f"s{i}") for i in range(2)]
    rows.append(_row(99, "big", "g9", split="train"))
    chosen = choose_clips(rows, "test", per_group=2, max_clips=4)
    assert [r["package"] for r in chosen] == ["big", "small", "big", "small"]
    all_test = choose_clips(rows, "test", per_group=2, max_clips=100)
    assert len(all_test) == 3 * 2 + 2 and all(r["split"] == "test" for r in all_test)


def test_choose_clips_takes_everything_by_default() -> None:
    rows = [_row(i, "big", f"g{i // 4}", split=("train", "validation", "test")[i % 3]) for i in range(12)]
    assert sorted(r["clip_id"] for r in choose_clips(rows, None, None, None)) == sorted(r["clip_id"] for r in rows)


def test_only_redistributable_clips_with_a_copyright_file_ship(tmp_path: Path) -> None:
    (tmp_path / "licenses").mkdir()
    (tmp_path / "licenses" / "pkg.copyright").write_text("Format: copyright\n")
    rows = [_row(0, "pkg", "g0"), {**_row(1, "pkg", "g1"), "licence": "proprietary"},
            {**_row(2, "pkg", "g2"), "licence": None}, _row(3, "nocopyright", "g3")]
    kept, dropped = redistributable(rows, tmp_path)
    assert [r["clip_id"] for r in kept] == ["pkg-0"]
    assert sum(dropped.values()) == 3 and dropped["no copyright file for nocopyright"] == 1


def _corpus(tmp_path: Path, splits: tuple[str, ...] = ("test", "test", "test")) -> Path:
    corpus = tmp_path / "corpus"
    rows = [_row(i, "pkg", f"g{i}", split=split) for i, split in enumerate(splits)]
    for r in rows:
        write_tone(corpus / r["audio"], 300 + 100 * int(r["clip_id"].split("-")[1]), 0.5, sr=22050)
    (corpus / "licenses").mkdir()
    (corpus / "licenses" / "pkg.copyright").write_text("Format: copyright\n")
    (corpus / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return corpus


def test_bundle_gallery_end_to_end(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, ("train", "validation", "test"))
    out = tmp_path / "gallery"
    (out / "audio").mkdir(parents=True)
    (out / "audio" / "stale.ogg").write_bytes(b"an earlier build")  # the app would index it: removed
    assert main(["--corpus", str(corpus), "--out", str(out)]) == 0
    entries = [json.loads(line) for line in (out / "gallery.jsonl").read_text().splitlines()]
    assert [e["caption"] for e in entries] == ["sound 0", "sound 1", "sound 2"]
    assert [e["in_training"] for e in entries] == [True, True, False]  # train and validation were seen
    assert all((out / e["audio"]).is_file() and e["licence"] == "CC0-1.0" for e in entries)
    assert sorted(p.name for p in (out / "audio").iterdir()) == ["pkg-0.opus", "pkg-1.opus", "pkg-2.opus"]
    info = sf.info(str(out / entries[0]["audio"]))
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("OGG", "OPUS", 1, 48000)
    assert info.duration == pytest.approx(0.5, abs=0.03)
    assert (out / "licenses" / "pkg.copyright").is_file()
    assert "sound 2" in (out / "LICENSES.md").read_text() and "Ogg Opus" in (out / "LICENSES.md").read_text()


def test_earlier_gallery_is_still_available(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, ("train", "test", "test"))
    out = tmp_path / "gallery"
    assert main(["--corpus", str(corpus), "--out", str(out), "--split", "test", "--per-group", "3",
                 "--max-clips", "200", "--codec", "vorbis"]) == 0
    entries = [json.loads(line) for line in (out / "gallery.jsonl").read_text().splitlines()]
    assert [e["audio"] for e in entries] == ["audio/pkg-1.ogg", "audio/pkg-2.ogg"]
    info = sf.info(str(out / entries[0]["audio"]))
    assert (info.subtype, info.samplerate) == ("VORBIS", 22050) and not any(e["in_training"] for e in entries)


def test_size_limit_is_an_error_not_a_cut(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="lower --kbps"):
        main(["--corpus", str(_corpus(tmp_path)), "--out", str(tmp_path / "gallery"), "--max-mb", "0.001"])


def test_rebuild_keeps_unchanged_clips_byte_for_byte(tmp_path: Path) -> None:
    """Ogg streams get a random serial number, so re-encoding changes every file; a rebuild keeps the
    files whose source audio and encoding are unchanged and re-encodes only what changed."""
    corpus = _corpus(tmp_path)
    out = tmp_path / "gallery"
    assert main(["--corpus", str(corpus), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in (out / "audio").iterdir()}
    write_tone(corpus / "audio" / "pkg-2.flac", 900, 0.5, sr=22050)  # one source changed
    assert main(["--corpus", str(corpus), "--out", str(out)]) == 0
    after = {p.name: p.read_bytes() for p in (out / "audio").iterdir()}
    assert after["pkg-0.opus"] == before["pkg-0.opus"] and after["pkg-1.opus"] == before["pkg-1.opus"]
    assert after["pkg-2.opus"] != before["pkg-2.opus"]
    entries = [json.loads(line) for line in (out / "gallery.jsonl").read_text().splitlines()]
    assert all(len(e["source_sha256"]) == 64 and e["encoding"] == "opus@48" for e in entries)
    assert main(["--corpus", str(corpus), "--out", str(out), "--kbps", "32"]) == 0  # another encoding
    assert (out / "audio" / "pkg-0.opus").read_bytes() != before["pkg-0.opus"]
