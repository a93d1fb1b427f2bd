"""``python -m training bundle-gallery``: the app's bundled gallery from the corpus test split.

Copies the chosen clips as mono Ogg Vorbis (small enough to ship in the repo), writes
``gallery.jsonl`` (audio, caption, captions, source package, original file, author, licence,
ESC-50 class) and a licences file, and copies the Debian copyright file of every package used.
Only clips of the held-out test split are taken, so the bundled model never trained on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import soundfile as sf
from tqdm.auto import tqdm

from atr_demo.audio import decode_audio
from atr_demo.fileio import markdown_table

logger = logging.getLogger(__name__)


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """Rows of a corpus ``manifest.jsonl``."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def choose_clips(rows: list[dict[str, Any]], split: str, per_group: int, max_clips: int) -> list[dict[str, Any]]:
    """Clips of ``split``, at most ``per_group`` per recording group, round-robin over packages.

    Deterministic: the manifest order decides ties. Round-robin keeps one large package from
    filling the gallery when ``max_clips`` cuts it.
    """
    by_package: dict[str, list[dict[str, Any]]] = defaultdict(list)
    per_group_count: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.get("split") != split or per_group_count[row["group"]] >= per_group:
            continue
        per_group_count[row["group"]] += 1
        by_package[row["package"]].append(row)
    chosen: list[dict[str, Any]] = []
    queues = [list(v) for _, v in sorted(by_package.items())]
    while queues and len(chosen) < max_clips:
        for queue in list(queues):
            if queue and len(chosen) < max_clips:
                chosen.append(queue.pop(0))
            if not queue:
                queues.remove(queue)
    return chosen


def write_gallery(corpus: Path, rows: list[dict[str, Any]], out: Path, max_bytes: int) -> list[dict[str, Any]]:
    """Encode ``rows``' audio into ``out/audio`` and write ``gallery.jsonl``; stop at ``max_bytes``."""
    (out / "audio").mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    total = 0
    for row in tqdm(rows, desc="gallery", unit="clip"):
        target = out / "audio" / f"{row['clip_id']}.ogg"
        if not target.is_file():
            samples, rate = decode_audio(corpus / row["audio"])
            sf.write(str(target), samples.mean(axis=1), rate, format="OGG", subtype="VORBIS")
        size = target.stat().st_size
        if total + size > max_bytes:
            target.unlink()
            logger.warning("gallery size limit reached after %d clips", len(entries))
            break
        total += size
        entries.append({
            "audio": f"audio/{target.name}",
            "caption": row["captions"][0],
            "captions": row["captions"],
            "source": row["package"],
            "original_name": row.get("original_name"),
            "author": row.get("author"),
            "licence": row.get("licence"),
            "esc50": row.get("esc50"),
            "clip_id": row["clip_id"],
        })
    with open(out / "gallery.jsonl", "w", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return entries


def write_licences(corpus: Path, entries: list[dict[str, Any]], out: Path) -> None:
    """``LICENSES.md`` with one row per clip, plus each package's Debian copyright file."""
    packages = sorted({e["source"] for e in entries})
    (out / "licenses").mkdir(exist_ok=True)
    for package in packages:
        source = corpus / "licenses" / f"{package}.copyright"
        if source.is_file():
            shutil.copyfile(source, out / "licenses" / source.name)
    lines = [
        "# Licences of the bundled gallery",
        "",
        "Every clip comes from a Debian package (see `licenses/<package>.copyright` for the full",
        "licence texts), decoded, down-mixed to mono and re-encoded as Ogg Vorbis; long recordings",
        "were cut into segments. Built by `python -m training bundle-gallery`.",
        "",
        markdown_table(
            ["file", "caption", "package", "original file", "author", "licence"],
            [[e["audio"], e["caption"], e["source"], (e["original_name"] or "").split(":")[-1],
              e["author"] or "unknown", e["licence"]] for e in entries],
        ),
    ]
    (out / "LICENSES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training bundle-gallery", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="corpus folder (with manifest.jsonl)")
    parser.add_argument("--out", default="bundled_gallery", help="output folder")
    parser.add_argument("--split", default="test", help="corpus split to take clips from")
    parser.add_argument("--per-group", type=int, default=3, help="clips per recording group at most")
    parser.add_argument("--max-clips", type=int, default=200)
    parser.add_argument("--max-mb", type=float, default=20.0, help="size limit of the audio")
    args = parser.parse_args(argv)
    corpus, out = Path(args.corpus), Path(args.out)
    rows = choose_clips(read_manifest(corpus / "manifest.jsonl"), args.split, args.per_group, args.max_clips)
    entries = write_gallery(corpus, rows, out, int(args.max_mb * 1e6))
    write_licences(corpus, entries, out)
    size = sum(p.stat().st_size for p in (out / "audio").iterdir())
    logger.info("bundled gallery: %d clips, %.1f MB in %s", len(entries), size / 1e6, out)
    return 0
