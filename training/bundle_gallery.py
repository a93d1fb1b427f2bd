"""``python -m training bundle-gallery``: the app's bundled gallery from the corpus test split.

Copies the chosen clips as mono Ogg Vorbis (small enough to ship in the repo), writes
``gallery.jsonl`` (audio, caption, captions, source package, original file, author, licence,
ESC-50 class) and a licences file, and copies the Debian copyright file of every package used.
Only clips of the held-out test split are taken, so the bundled model never trained on them.

``--embeddings`` (alone, or after copying) ships the gallery's embeddings for a model: a
:class:`~atr_demo.fileio.TensorStore` at ``<out>/embeddings/<model fingerprint>.safetensors`` keyed
by file digest, which :func:`atr_demo.gallery.index_gallery` uses instead of re-embedding (a changed
file or another model is embedded as usual), and the "no good match" calibration of
:func:`atr_demo.confidence.calibrate_no_match` at ``<out>/embeddings/calibration-<model digest>.json``.
Stores and calibrations of other models in that folder are removed (they would never be used again).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import soundfile as sf
from tqdm.auto import tqdm

from atr_demo.audio import decode_audio
from atr_demo.confidence import calibrate_gallery, calibration_path, model_digest, write_calibration
from atr_demo.fileio import TensorStore, file_digest, markdown_table
from atr_demo.gallery import index_gallery, model_fingerprint, shipped_embeddings_path

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


def ship_embeddings(out: Path, model_name: str | None, cache_dir: Path | None = None) -> dict[str, Any]:
    """Embed the gallery in ``out`` with the model (reusing any matching shipped or cached embeddings),
    write the shipped store and the calibration, remove other models' ones; returns a summary."""
    from atr_demo.gallery import PRECISION_ENV
    from atr_demo.model import load_model

    model = load_model(model_name)
    previous = os.environ.get(PRECISION_ENV)
    os.environ[PRECISION_ENV] = "fp32"  # ship full-precision embeddings, whatever this CPU prefers
    try:
        with tempfile.TemporaryDirectory() as tmp:  # not the user's cache: it may hold bf16 embeddings
            gallery = index_gallery(model, [out], cache_dir=cache_dir or Path(tmp), progress=True)
    finally:
        if previous is None:
            os.environ.pop(PRECISION_ENV, None)
        else:
            os.environ[PRECISION_ENV] = previous
    if gallery.skipped:
        logger.warning("%d file(s) could not be embedded: %s", len(gallery.skipped), gallery.skipped)
    fingerprint, digest = model_fingerprint(model), model_digest(model)
    target = shipped_embeddings_path(out, fingerprint)
    target.parent.mkdir(parents=True, exist_ok=True)
    for old in target.parent.glob("*.safetensors"):
        if old != target:
            old.unlink()
    target.unlink(missing_ok=True)
    store = TensorStore(target, "shipped embeddings")
    for f, e in zip(gallery.files, gallery.embeddings, strict=True):
        store.put(file_digest(f), e)
    store.save()
    calibration = calibrate_gallery(model, gallery)
    keep = calibration_path(out, digest)
    for old in target.parent.glob("calibration-*.json"):
        if old != keep:
            old.unlink()
    if calibration is not None:
        write_calibration(out, digest, calibration)
    logger.info("shipped %d embeddings to %s; calibration: %s", len(store), target, calibration)
    return {"store": target, "entries": len(store), "calibration": calibration}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training bundle-gallery", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=None, help="corpus folder (with manifest.jsonl); needed unless "
                        "--embeddings alone is asked for")
    parser.add_argument("--out", default="bundled_gallery", help="output folder")
    parser.add_argument("--split", default="test", help="corpus split to take clips from")
    parser.add_argument("--per-group", type=int, default=3, help="clips per recording group at most")
    parser.add_argument("--max-clips", type=int, default=200)
    parser.add_argument("--max-mb", type=float, default=20.0, help="size limit of the audio")
    parser.add_argument("--embeddings", action="store_true",
                        help="ship the gallery's embeddings and no-match calibration for --model (with --corpus: "
                             "after copying the clips; without: for the clips already in --out)")
    parser.add_argument("--model", default=None, help="model for --embeddings (default: the bundled checkpoint)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.corpus is None:
        if not args.embeddings:
            parser.error("give --corpus DIR to copy clips, or --embeddings to embed the clips already in --out")
        ship_embeddings(out, args.model)
        return 0
    corpus = Path(args.corpus)
    rows = choose_clips(read_manifest(corpus / "manifest.jsonl"), args.split, args.per_group, args.max_clips)
    entries = write_gallery(corpus, rows, out, int(args.max_mb * 1e6))
    write_licences(corpus, entries, out)
    size = sum(p.stat().st_size for p in (out / "audio").iterdir())
    logger.info("bundled gallery: %d clips, %.1f MB in %s", len(entries), size / 1e6, out)
    if args.embeddings:
        ship_embeddings(out, args.model)
    return 0
