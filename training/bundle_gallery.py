"""``python -m training bundle-gallery``: the app's bundled gallery from the corpus.

By default the gallery holds every corpus clip whose licence allows redistribution
(:data:`REDISTRIBUTABLE_LICENCES`; a row with another or no licence, or from a package whose
copyright file is missing, is left out and counted), of every split, encoded as mono Ogg Opus at
48 kHz (``--kbps``, 48 by default: about 30 MB for the 4946 s of the 1426-clip corpus). Each row of
``gallery.jsonl`` (audio, caption, captions, source package, original file, author, licence, ESC-50
class, clip id, split) says ``in_training``: true for the train and validation splits (the model
fitted or selected on them), false for the test split, so that held-out numbers can be kept apart.
``LICENSES.md`` lists every clip with its author, package and licence, and the Debian copyright
file of every package used is copied to ``licenses/``. More than ``--max-mb`` of audio is an error
(lower ``--kbps``), never a silent cut. Audio files of an earlier build that are no longer part of
the gallery are removed from ``<out>/audio`` (the app indexes every audio file of the folder).
Each row also records its source's SHA-256 and the encoding (``opus@48``); a rebuild keeps a clip's
file byte for byte when both are unchanged (Ogg streams carry a random serial number, so
re-encoding would rewrite every file in the repository's history) and re-encodes the rest.

The earlier gallery (140 test clips, at most 3 per recording group, Ogg Vorbis at the source rate)
is ``--split test --per-group 3 --max-clips 200 --codec vorbis``.

``--embeddings`` (alone, or after copying) ships the gallery's embeddings for a model: a
:class:`~atr_demo.fileio.TensorStore` at ``<out>/embeddings/<model fingerprint>.safetensors`` keyed
by file digest, which :func:`atr_demo.gallery.index_gallery` uses instead of re-embedding (a changed
file or another model is embedded as usual), and the "no good match" calibration of
:func:`atr_demo.confidence.calibrate_no_match` at ``<out>/embeddings/calibration-<model digest>.json``,
computed over the clips *not* in training only (all clips when the gallery marks none).
Stores and calibrations of other models in that folder are removed (they would never be used again).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import soundfile as sf
from tqdm.auto import tqdm

from atr_demo.audio import decode_audio, load_audio
from atr_demo.confidence import calibrate_gallery, calibration_path, model_digest, write_calibration
from atr_demo.errors import DataError
from atr_demo.fileio import TensorStore, atomic_write_bytes, file_digest, markdown_table
from atr_demo.gallery import index_gallery, model_fingerprint, shipped_embeddings_path

logger = logging.getLogger(__name__)

#: Licences (as the corpus manifest spells them) under which a clip may be redistributed in the
#: repository: public domain, CC0, CC BY / BY-SA, GPL, LGPL, GFDL, Artistic, MIT/BSD-style (all in
#: Debian main). Anything else, and a missing licence, keeps the clip out of the gallery.
REDISTRIBUTABLE_LICENCES = frozenset({
    "public-domain", "CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0",
    "GPL-2", "GPL-2+", "GPL-3", "GPL-3+", "LGPL-2.1+", "LGPL-3+", "GFDL-1.2+", "GFDL-1.3", "GFDL-1.3+",
    "Artistic-1.0", "Artistic-2.0", "Expat", "MIT", "BSD-2-clause", "BSD-3-clause", "Zlib",
})
#: Splits whose clips the model saw in training or in model selection (``in_training: true``).
TRAINING_SPLITS = frozenset({"train", "validation"})
#: Codecs of the gallery's audio and their file suffixes.
CODECS = {"opus": ".opus", "vorbis": ".ogg"}
#: Rate Ogg Opus is written at (its internal rate; 44.1 kHz sources are resampled to it).
OPUS_RATE = 48_000
#: libsndfile maps its compression level linearly onto the Opus bitrate: level 0 → 256 kb/s,
#: level 1 → 6 kb/s (measured: asking 48 kb/s gives 48.2 kb/s on the corpus).
OPUS_KBPS_RANGE = (6.0, 256.0)


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """Rows of a corpus ``manifest.jsonl``."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def redistributable(rows: list[dict[str, Any]], corpus: Path) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The rows that may be shipped, and why the others may not (reason → count).

    A row ships when its licence is in :data:`REDISTRIBUTABLE_LICENCES` and its package's copyright
    file (the full licence texts) is in ``corpus/licenses/``.
    """
    kept: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for row in rows:
        licence = row.get("licence")
        if licence not in REDISTRIBUTABLE_LICENCES:
            dropped[f"licence {licence!r} not known to allow redistribution"] += 1
        elif not (corpus / "licenses" / f"{row['package']}.copyright").is_file():
            dropped[f"no copyright file for {row['package']}"] += 1
        else:
            kept.append(row)
    for reason, n in sorted(dropped.items()):
        logger.warning("left out %d clip(s): %s", n, reason)
    return kept, dropped


def choose_clips(
    rows: list[dict[str, Any]], split: str | None, per_group: int | None, max_clips: int | None
) -> list[dict[str, Any]]:
    """Clips of ``split`` (``None``: every split), at most ``per_group`` per recording group
    (``None``: no cap), at most ``max_clips`` (``None``: no cap), round-robin over packages.

    Deterministic: the manifest order decides ties. Round-robin keeps one large package from
    filling the gallery when ``max_clips`` cuts it.
    """
    by_package: dict[str, list[dict[str, Any]]] = defaultdict(list)
    per_group_count: dict[str, int] = defaultdict(int)
    for row in rows:
        if split is not None and row.get("split") != split:
            continue
        if per_group is not None and per_group_count[row["group"]] >= per_group:
            continue
        per_group_count[row["group"]] += 1
        by_package[row["package"]].append(row)
    limit = len(rows) if max_clips is None else max_clips
    chosen: list[dict[str, Any]] = []
    queues = [list(v) for _, v in sorted(by_package.items())]
    while queues and len(chosen) < limit:
        for queue in list(queues):
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
            if not queue:
                queues.remove(queue)
    return chosen


def encode_clip(source: Path, codec: str, kbps: float) -> bytes:
    """One corpus clip as mono Ogg bytes.

    Opus: resampled to :data:`OPUS_RATE` (windowed sinc, :func:`atr_demo.audio.load_audio`), VBR
    at about ``kbps`` kb/s. Vorbis: at the source rate, libsndfile's default quality (the earlier
    gallery's encoding; ``kbps`` is not used).
    """
    buffer = io.BytesIO()
    if codec == "opus":
        low, high = OPUS_KBPS_RANGE
        level = min(1.0, max(0.0, (high - kbps) / (high - low)))
        wave = load_audio(source, OPUS_RATE, max_duration_s=None).numpy()
        sf.write(buffer, wave, OPUS_RATE, format="OGG", subtype="OPUS", compression_level=level)
    else:
        samples, rate = decode_audio(source)
        sf.write(buffer, samples.mean(axis=1), rate, format="OGG", subtype="VORBIS")
    return buffer.getvalue()


def write_gallery(
    corpus: Path, rows: list[dict[str, Any]], out: Path, max_bytes: int, codec: str = "opus", kbps: float = 48.0
) -> list[dict[str, Any]]:
    """Encode ``rows``' audio into ``out/audio`` and write ``gallery.jsonl``; returns its entries.

    Raises :class:`DataError` when the audio would exceed ``max_bytes`` (nothing is cut silently).
    Audio files in ``out/audio`` that are not part of this gallery are removed.
    """
    suffix = CODECS[codec]
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    encoding = f"{codec}@{kbps:g}"
    previous = _previous_entries(out)
    entries: list[dict[str, Any]] = []
    total = reused = 0
    for row in tqdm(rows, desc="gallery", unit="clip"):
        target = audio_dir / f"{row['clip_id']}{suffix}"
        source_digest = file_digest(corpus / row["audio"])
        before = previous.get(row["clip_id"], {})
        if (before.get("source_sha256") == source_digest and before.get("encoding") == encoding
                and before.get("audio") == f"audio/{target.name}" and target.is_file()):
            data = None  # same source, same encoding: the file stays byte for byte
            reused += 1
            total += target.stat().st_size
        else:
            data = encode_clip(corpus / row["audio"], codec, kbps)
            total += len(data)
        if total > max_bytes:
            raise DataError(
                f"the gallery's audio exceeds {max_bytes / 1e6:.1f} MB after {len(entries)} of {len(rows)} clips; "
                "lower --kbps, raise --max-mb or choose fewer clips (--split, --per-group, --max-clips)"
            )
        if data is not None:
            atomic_write_bytes(target, data)
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
            "split": row.get("split"),
            "in_training": row.get("split") in TRAINING_SPLITS,
            "source_sha256": source_digest,
            "encoding": encoding,
        })
    if reused:
        logger.info("kept %d clip(s) of the earlier build unchanged (same source audio and encoding)", reused)
    keep = {Path(e["audio"]).name for e in entries}
    stale = [p for p in audio_dir.iterdir() if p.is_file() and p.name not in keep]
    for path in stale:
        path.unlink()
    if stale:
        logger.info("removed %d audio file(s) of an earlier build from %s", len(stale), audio_dir)
    with open(out / "gallery.jsonl", "w", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return entries


def _previous_entries(out: Path) -> dict[str, dict[str, Any]]:
    """The existing ``gallery.jsonl`` of ``out`` by clip id (empty when there is none or it is unreadable)."""
    try:
        return {e["clip_id"]: e for e in read_manifest(out / "gallery.jsonl") if "clip_id" in e}
    except (OSError, ValueError, TypeError):
        return {}


def codec_description(codec: str, kbps: float) -> str:
    """How the clips were re-encoded, in words (for ``LICENSES.md``)."""
    if codec == "opus":
        return f"Ogg Opus (mono, {OPUS_RATE // 1000} kHz, about {kbps:g} kb/s VBR)"
    return "Ogg Vorbis (mono, source sample rate)"


def write_licences(
    corpus: Path, entries: list[dict[str, Any]], out: Path, codec: str = "opus", kbps: float = 48.0
) -> None:
    """``LICENSES.md`` with a summary per package and one row per clip, plus each package's
    Debian copyright file in ``licenses/`` (copyright files of packages no longer used are removed)."""
    packages = sorted({e["source"] for e in entries})
    folder = out / "licenses"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.copyright"):
        if old.stem not in packages:
            old.unlink()
    for package in packages:
        source = corpus / "licenses" / f"{package}.copyright"
        if source.is_file():
            shutil.copyfile(source, folder / source.name)
    per_package: dict[str, Counter[str]] = defaultdict(Counter)
    for e in entries:
        per_package[e["source"]][e["licence"]] += 1
    summary = [[p, str(sum(per_package[p].values())),
                ", ".join(f"{name} ({n})" for name, n in sorted(per_package[p].items())),
                f"licenses/{p}.copyright"] for p in packages]
    lines = [
        "# Licences of the bundled gallery",
        "",
        "Every clip comes from a Debian package (see `licenses/<package>.copyright` for the full",
        "licence texts and the upstream authors), decoded, down-mixed to mono and re-encoded as",
        f"{codec_description(codec, kbps)}; long recordings were cut into segments. The original files",
        "are in the named packages. Built by `python -m training bundle-gallery`.",
        "",
        markdown_table(["package", "clips", "licences", "copyright file"], summary, right={1}),
        "",
        markdown_table(
            ["file", "caption", "package", "original file", "author", "licence"],
            [[e["audio"], e["caption"], e["source"], (e["original_name"] or "").split(":")[-1],
              e["author"] or "see the package's copyright file", e["licence"]] for e in entries],
        ),
    ]
    (out / "LICENSES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def ship_embeddings(out: Path, model_name: str | None, cache_dir: Path | None = None) -> dict[str, Any]:
    """Embed the gallery in ``out`` with the model (reusing any matching shipped or cached embeddings),
    write the shipped store and the calibration (over the held-out clips,
    :meth:`~atr_demo.gallery.Gallery.held_out`), remove other models' ones; returns a summary."""
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
    calibration = calibrate_gallery(model, gallery.held_out())
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
    parser.add_argument("--split", default=None,
                        help="take clips of this corpus split only (default: every split, marked in_training)")
    parser.add_argument("--per-group", type=int, default=None, help="clips per recording group at most (default: all)")
    parser.add_argument("--max-clips", type=int, default=None, help="clips at most (default: all)")
    parser.add_argument("--codec", choices=sorted(CODECS), default="opus", help="audio codec (default: opus)")
    parser.add_argument("--kbps", type=float, default=48.0, help="Opus bitrate in kb/s (default: 48)")
    parser.add_argument("--max-mb", type=float, default=40.0, help="size limit of the audio in MB (an error if over)")
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
    rows, _ = redistributable(read_manifest(corpus / "manifest.jsonl"), corpus)
    rows = choose_clips(rows, args.split, args.per_group, args.max_clips)
    entries = write_gallery(corpus, rows, out, int(args.max_mb * 1e6), args.codec, args.kbps)
    write_licences(corpus, entries, out, args.codec, args.kbps)
    size = sum(p.stat().st_size for p in (out / "audio").iterdir())
    seen = sum(e["in_training"] for e in entries)
    logger.info("bundled gallery: %d clips (%d in training, %d held out), %.1f MB in %s",
                len(entries), seen, len(entries) - seen, size / 1e6, out)
    if args.embeddings:
        ship_embeddings(out, args.model)
    return 0
