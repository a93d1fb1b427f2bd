"""``python -m training build-corpus``: build the open sound-effects corpus.

Pipeline per package: ``apt-get download`` into the cache (skipped when the ``.deb`` is
there) → extract only the sounds (skipped when the per-package done marker exists) →
parse names into clips with reviewed captions → cap large near-duplicate families →
decode, down-mix to mono, cut long ambiences into ~10 s segments, write 16-bit FLAC
(skipped when the file exists). Then splits are assigned by recording group and the
manifest, the licence files and a summary are written. Re-running gives the same manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from atr_demo.fileio import atomic_write_text

from training.corpus import audio, debian
from training.corpus.clip import Dropped, ManifestRow, SourceClip
from training.corpus.grouping import slug
from training.corpus.licences import write_licences
from training.corpus.segment import segment_bounds
from training.corpus.sources import Source, available_packages, get_source
from training.corpus.splits import DEFAULT_SEED, split_for_group
from training.corpus.summary import format_summary

log = logging.getLogger(__name__)

MAX_CLIPS_PER_GROUP = 8
"""Near-duplicate families (cuts of one recording, dozens of combat cries) keep at most
this many clips; the table rows' ``cap`` column limits footsteps, birds and the like."""

MAX_SEGMENTS_PER_RECORDING = 6
"""A long ambience (wind, rain: up to 170 s) keeps at most this many of its ~10 s segments,
spread evenly over the recording, so that a few ambiences do not dominate the corpus."""

PREPARED_MARKER = ".prepared"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training build-corpus",
        description="Download the Debian sound packages of DATA.md and build the corpus.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (audio/, manifest.jsonl, ...)")
    parser.add_argument("--packages", nargs="+", default=None, help="only these packages (default: by --tier)")
    parser.add_argument("--tier", choices=["1", "2", "3", "all"], default="all",
                        help="which tier of DATA.md; 3: the everyday-sound packages of issue 14 (default: all)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where .debs and extracted trees go (default: OUT/cache)")
    parser.add_argument("--seed", default=DEFAULT_SEED, help="seed of the split assignment")
    return parser.parse_args(argv)


def select_packages(packages: list[str] | None, tier: str) -> list[str]:
    """Requested packages, or all available ones of the tier."""
    if packages:
        for package in packages:
            get_source(package)  # raises KeyError for unknown names
        return list(packages)
    chosen = []
    for package in available_packages():
        if tier == "all" or get_source(package).tier == int(tier):
            chosen.append(package)
    return chosen


def fetch(source: Source, cache_dir: Path) -> Path:
    """Download and extract a package (and any helper packages); return the extracted tree."""
    debs = cache_dir / "debs"
    target = cache_dir / "extracted" / source.package
    if not debian.is_done(target):
        deb = debian.download(source.package, debs)
        debian.extract(deb, target, list(source.patterns))
    for helper in source.extra_debs:
        helper_target = cache_dir / "extracted" / helper
        if not debian.is_done(helper_target):
            debian.extract(debian.download(helper, debs), helper_target, ["./usr/bin/*", "./usr/lib/*"])
    if source.prepare is not None and not (target / PREPARED_MARKER).is_file():
        log.info("%s: preparing extracted tree", source.package)
        source.prepare(target)
        (target / PREPARED_MARKER).write_text("ok\n", encoding="utf-8")
    return target


def apply_caps(
    clips: list[SourceClip], max_per_group: int = MAX_CLIPS_PER_GROUP
) -> tuple[list[SourceClip], list[Dropped]]:
    """Keep at most ``cap`` clips per capped table row and ``max_per_group`` per group.

    The kept clips are spread evenly over the name-sorted family, so the choice is
    deterministic and covers the family's variety.
    """
    kept: list[SourceClip] = []
    dropped: list[Dropped] = []

    def spread(items: list[SourceClip], limit: int, reason: str) -> list[SourceClip]:
        items = sorted(items, key=lambda c: c.original_name)
        if len(items) <= limit:
            return items
        chosen = {round(i * (len(items) - 1) / max(1, limit - 1)) for i in range(limit)} if limit > 1 else {0}
        for index, clip in enumerate(items):
            if index not in chosen:
                dropped.append(Dropped(clip.package, clip.original_name, reason))
        return [items[i] for i in sorted(chosen)]

    by_rule: dict[tuple[str, str], list[SourceClip]] = defaultdict(list)
    uncapped: list[SourceClip] = []
    for clip in clips:
        if clip.cap_key is not None and clip.cap is not None:
            by_rule[(clip.package, clip.cap_key)].append(clip)
        else:
            uncapped.append(clip)
    after_rules = list(uncapped)
    for (_, key), items in sorted(by_rule.items()):
        after_rules += spread(items, items[0].cap or 0, f"family cap {items[0].cap} ({key})")

    by_group: dict[tuple[str, str], list[SourceClip]] = defaultdict(list)
    for clip in after_rules:
        by_group[(clip.package, clip.group)].append(clip)
    for (_, group), items in sorted(by_group.items()):
        kept += spread(items, max_per_group, f"group cap {max_per_group} ({group})")
    kept.sort(key=lambda c: (c.package, c.original_name))
    return kept, dropped


ID_MARKERS: tuple[str, ...] = (
    "opensfx.cat#", ".zip:audio/", "/sounds/", "/sound/", "/sfx/", "/stamps/", "/data/", "/Sound.ocg/", "/flightgear/",
    "/stdsounds/", "/Media/Sounds/", "/lugaru/Sounds/",
)


def drop_exact_duplicates(clips: list[SourceClip]) -> tuple[list[SourceClip], list[Dropped]]:
    """Keep the first (by name) of byte-identical files, e.g. one tileset sound shipped twice."""
    kept: list[SourceClip] = []
    dropped: list[Dropped] = []
    seen: dict[str, str] = {}
    for clip in sorted(clips, key=lambda c: c.original_name):
        payload = clip.data if clip.data is not None else clip.path.read_bytes()  # type: ignore[union-attr]
        digest = hashlib.sha256(payload).hexdigest()
        if digest in seen:
            dropped.append(Dropped(clip.package, clip.original_name, f"identical copy of {seen[digest]}"))
            continue
        seen[digest] = clip.original_name
        kept.append(clip)
    return kept, dropped


def clip_id_for(clip: SourceClip) -> str:
    """Stable id: package short name + slug of the name below the package's sound folder.

    Very long names are shortened and made unique with a hash of the full original name.
    """
    prefix = slug(clip.package.replace("-data", "").replace("-default", ""))
    name = clip.original_name
    if "#" not in name and "." in name.rsplit("/", 1)[-1]:
        name = name.rsplit(".", 1)[0]
    for marker in ID_MARKERS:
        if marker in name:
            name = name.rsplit(marker, 1)[1]
            break
    body = slug(name)
    if len(body) > 60:
        body = body[-50:].strip("_") + "_" + hashlib.sha1(clip.original_name.encode()).hexdigest()[:8]
    return f"{prefix}-{body}"


def convert_clip(clip: SourceClip, clip_id: str, out: Path, split: str) -> list[ManifestRow] | Dropped:
    """Decode one clip, write its FLAC file(s), and return its manifest rows."""
    source = clip.data if clip.data is not None else clip.path
    assert source is not None
    try:
        samples, rate = audio.read_mono(source)
    except Exception as exc:  # noqa: BLE001 - a broken file is reported and skipped
        return Dropped(clip.package, clip.original_name, f"cannot decode: {exc}")
    if not audio.is_usable(samples, rate):
        return Dropped(clip.package, clip.original_name, "empty, shorter than 0.1 s, or silent")
    bounds = list(enumerate(segment_bounds(len(samples), rate)))
    if len(bounds) > 1:  # silent segments (game padding, caption audit) are dropped before the spread
        bounds = [(i, (a, b)) for i, (a, b) in bounds if audio.is_usable(samples[a:b], rate)]
    if len(bounds) > MAX_SEGMENTS_PER_RECORDING:
        step = len(bounds) / MAX_SEGMENTS_PER_RECORDING
        bounds = [bounds[int(i * step)] for i in range(MAX_SEGMENTS_PER_RECORDING)]
    rows = []
    for index, (start, stop) in bounds:
        segment_id = clip_id if start == 0 and stop == len(samples) else f"{clip_id}-seg{index:02d}"
        relative = f"audio/{clip.package}/{segment_id}.flac"
        target = out / relative
        if not target.is_file():
            audio.write_flac(target, samples[start:stop], rate)
        rows.append(
            ManifestRow(
                clip_id=segment_id,
                audio=relative,
                captions=list(clip.captions),
                original_name=clip.original_name,
                package=clip.package,
                licence=clip.licence,
                author=clip.author,
                group=f"{clip.package}:{clip.group}",
                split=split,
                esc50=clip.esc50,
                duration_s=(stop - start) / rate,
                start_s=start / rate,
            )
        )
    return rows


def build_package(source: Source, root: Path, out: Path, seed: str) -> tuple[list[ManifestRow], list[Dropped]]:
    """Parse, cap and convert one extracted package."""
    clips: list[SourceClip] = []
    dropped: list[Dropped] = []
    for item in source.parse(root):
        (clips if isinstance(item, SourceClip) else dropped).append(item)  # type: ignore[arg-type]
    clips, duplicates = drop_exact_duplicates(clips)
    dropped += duplicates
    clips, capped = apply_caps(clips)
    dropped += capped
    rows: list[ManifestRow] = []
    used: dict[str, str] = {}
    for clip in tqdm(clips, desc=f"convert {source.package}", unit="clip", leave=False):
        clip_id = clip_id_for(clip)
        if clip_id in used:
            clip_id += "_" + hashlib.sha1(clip.original_name.encode()).hexdigest()[:6]
        used[clip_id] = clip.original_name
        split = split_for_group(f"{clip.package}:{clip.group}", seed)
        result = convert_clip(clip, clip_id, out, split)
        if isinstance(result, Dropped):
            dropped.append(result)
        else:
            rows += result
    remove_stale_audio(out / "audio" / source.package, {row.audio for row in rows}, out)
    return rows, dropped


def remove_stale_audio(folder: Path, keep: set[str], out: Path) -> None:
    """Delete FLAC files of an earlier run that are no longer in the manifest."""
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.flac")):
        if path.relative_to(out).as_posix() not in keep:
            log.info("removing stale %s", path)
            path.unlink()


def write_manifest(rows: list[ManifestRow], path: Path) -> None:
    """One JSON object per line, sorted by clip id, written atomically."""
    lines = [json.dumps(row.to_json_dict(), ensure_ascii=False, sort_keys=False) + "\n"
             for row in sorted(rows, key=lambda r: r.clip_id)]
    atomic_write_text(path, "".join(lines))


def write_dropped(dropped: list[Dropped], path: Path) -> None:
    """``dropped.csv``: every sound seen and skipped, with the reason."""
    import csv

    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["package", "original_name", "reason"])
        for item in sorted(dropped, key=lambda d: (d.package, d.original_name)):
            writer.writerow([item.package, item.original_name, item.reason])


def build(
    packages: list[str],
    out: Path,
    cache_dir: Path,
    seed: str = DEFAULT_SEED,
    roots: dict[str, Path] | None = None,
) -> list[ManifestRow]:
    """Build the corpus for ``packages`` into ``out``; returns the manifest rows.

    ``roots`` maps a package to an already extracted tree (tests use it to skip fetching).
    """
    out.mkdir(parents=True, exist_ok=True)
    rows: list[ManifestRow] = []
    dropped: list[Dropped] = []
    copyrights: dict[str, Path | None] = {}
    for package in packages:
        source = get_source(package)
        root = (roots or {}).get(package) or fetch(source, cache_dir)
        package_rows, package_dropped = build_package(source, root, out, seed)
        log.info("%s: %d manifest rows, %d sounds dropped", package, len(package_rows), len(package_dropped))
        rows += package_rows
        dropped += package_dropped
        copyrights[package] = debian.copyright_file(root, package)
    check_splits(rows)
    write_manifest(rows, out / "manifest.jsonl")
    write_dropped(dropped, out / "dropped.csv")
    write_licences(rows, copyrights, {p: get_source(p).licence for p in packages}, out)
    summary = format_summary(rows)
    (out / "SUMMARY.md").write_text(summary, encoding="utf-8")
    return rows


def check_splits(rows: list[ManifestRow]) -> None:
    """Fail loudly if a recording group ended up in two splits (a leak)."""
    seen: dict[str, str] = {}
    for row in rows:
        if seen.setdefault(row.group, row.split) != row.split:
            raise RuntimeError(f"group {row.group} spans splits {seen[row.group]} and {row.split}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    cache_dir: Path = args.cache_dir or out / "cache"
    try:
        packages = select_packages(args.packages, args.tier)
    except KeyError as exc:
        log.error("%s", exc)
        return 2
    log.info("building %s into %s (cache %s)", ", ".join(packages), out, cache_dir)
    try:
        rows = build(packages, out, cache_dir, args.seed)
    except debian.PackageError as exc:
        log.error("%s", exc)
        return 1
    sys.stdout.write(format_summary(rows))
    return 0
