"""``python -m training build-multilingual --corpus DIR``: the corpus's multilingual split.

Tux Paint's stamps ship a ``<name>.txt`` next to each ``<name>.ogg``: an English sentence on the
first line, then ``<lang>.utf8=<translation>`` lines in up to ~100 languages. The sentence
describes the stamp's *picture* ("A red kangaroo."), so the main corpus replaces it by reviewed
sound captions; here the original sentence and its translations are kept, because they are
parallel text: every language says the same thing about the same clip.

For every ``tuxpaint-stamps-default`` clip of ``<corpus>/manifest.jsonl`` this writes one row of
``<corpus>/multilingual.jsonl`` (same ``clip_id``, audio file, split and group as the corpus, so
no recording spans two splits) with ``captions`` = the English sentence and ``caption_<lang>``
= its translation for each language the ``.txt`` has (``caption_fr``, ``caption_pt_BR``, …),
and ``<corpus>/multilingual_coverage.csv`` with the number of clips per language and split.
Train with ``languages: [en, fr, de, …]`` in the training config (languages a clip lacks drop
the clip from that run). The ``.txt`` files are extracted from the cached ``.deb``
(downloaded when missing), into their own folder of the cache.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from atr_demo.errors import ATRError, ConfigError
from atr_demo.fileio import atomic_write_text

from training.corpus import debian
from training.datasets import LANG_COLUMN

logger = logging.getLogger(__name__)

PACKAGE = "tuxpaint-stamps-default"
STAMPS_DIR = "usr/share/tuxpaint/stamps"
TEXT_PATTERNS = (f"./{STAMPS_DIR}/*.txt",)
SOURCE_NOTE = "Tux Paint stamp description (describes the picture) and its translations"


def parse_stamp_text(text: str) -> dict[str, str]:
    """A stamp ``.txt`` → ``{"en": sentence, lang: translation, …}``.

    The first non-empty line without ``=`` is the English sentence; ``<lang>.utf8=<text>``
    lines give translations (the ``.utf8`` suffix is dropped; tags that are not language tags
    such as ``fr`` / ``pt_BR`` / ``sr@latin`` are skipped). Whitespace is collapsed and stray
    ``|`` separators at the end are removed; empty translations are skipped.
    """
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or " " in key:
            if "en" not in out:
                out["en"] = _clean(line)
            continue
        lang = key.removesuffix(".utf8").removesuffix(".UTF-8")
        if LANG_COLUMN.match(f"caption_{lang}") is None:
            continue
        cleaned = _clean(value)
        if cleaned and lang not in out:
            out[lang] = cleaned
    return {k: v for k, v in out.items() if v}


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip("|").strip()


def extract_texts(cache_dir: Path) -> Path:
    """Extract the stamps' ``.txt`` files from the cached (or downloaded) ``.deb``; return the tree."""
    target = cache_dir / "extracted" / f"{PACKAGE}-text"
    if not debian.is_done(target):
        deb = debian.download(PACKAGE, cache_dir / "debs")
        debian.extract(deb, target, list(TEXT_PATTERNS))
    return target


def build(corpus: Path, cache_dir: Path | None = None) -> tuple[Path, dict[str, Counter[str]]]:
    """Write ``multilingual.jsonl`` and ``multilingual_coverage.csv`` into ``corpus``.

    Returns the manifest path and, per language, the number of clips per split.
    """
    manifest = corpus / "manifest.jsonl"
    if not manifest.is_file():
        raise ConfigError(f"no manifest.jsonl in {corpus}: build the corpus first (python -m training build-corpus)")
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    stamps = [r for r in rows if r.get("package") == PACKAGE]
    if not stamps:
        raise ConfigError(f"{manifest} has no {PACKAGE} clips: build the corpus with that package")
    tree = extract_texts(cache_dir or corpus / "cache")
    out_rows: list[dict[str, object]] = []
    coverage: dict[str, Counter[str]] = {}
    missing = 0
    for row in stamps:
        original = Path(str(row["original_name"]))
        txt = tree / original.with_suffix(".txt")
        if not txt.is_file():
            missing += 1
            continue
        texts = parse_stamp_text(txt.read_text(encoding="utf-8", errors="replace"))
        if "en" not in texts:
            missing += 1
            continue
        out = {k: row[k] for k in ("clip_id", "audio", "split", "group", "package", "licence", "author",
                                   "original_name", "esc50") if k in row}
        out["captions"] = [texts["en"]]
        out["caption_source"] = SOURCE_NOTE
        for lang in sorted(texts):
            if lang != "en":
                out[f"caption_{lang}"] = texts[lang]
        out_rows.append(out)
        for lang in texts:
            coverage.setdefault(lang, Counter())[str(row["split"])] += 1
    if not out_rows:
        raise ConfigError(f"no stamp description found for the {len(stamps)} {PACKAGE} clips under {tree}")
    if missing:
        logger.warning("%d of %d %s clips have no description text and are left out", missing, len(stamps), PACKAGE)
    path = corpus / "multilingual.jsonl"
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out_rows))
    with open(corpus / "multilingual_coverage.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["language", "clips", "train", "validation", "test"])
        for lang, counts in sorted(coverage.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
            writer.writerow([lang, sum(counts.values()), counts["train"], counts["validation"], counts["test"]])
    logger.info("wrote %s: %d clips, %d languages", path, len(out_rows), len(coverage))
    return path, coverage


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training build-multilingual",
                                     description="write the multilingual split "
                                     "(Tux Paint descriptions and translations)")
    parser.add_argument("--corpus", type=Path, required=True, help="corpus folder (with manifest.jsonl)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where .debs and extracted trees go (default: CORPUS/cache)")
    args = parser.parse_args(argv)
    try:
        path, coverage = build(args.corpus, args.cache_dir)
    except (ATRError, debian.PackageError) as exc:
        logger.error("%s", exc)
        return 1
    n = max(sum(c.values()) for c in coverage.values())
    full = sorted(lang for lang, c in coverage.items() if sum(c.values()) == n)
    print(f"{path}: {n} clips; languages on every clip ({len(full)}): {', '.join(full)}")
    return 0
