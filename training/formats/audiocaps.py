"""AudioCaps: ``train.csv`` / ``val.csv`` / ``test.csv`` (``audiocap_id,youtube_id,start_time,
caption``; one row per caption: 1 per train clip, 5 per validation/test clip) in the root (or its
``dataset/`` folder, as in the AudioCaps repository), and the user's own audio downloads anywhere
under the root.

Audio names (any extension of :data:`atr_demo.fileio.AUDIO_EXTENSIONS`), as download tools write
them: ``<ytid>``, ``Y<ytid>`` (AudioSet style), ``<ytid>_<start>``, ``<ytid>_<start>_<end>``
(start/end in seconds or milliseconds, decimals allowed: ``Y<ytid>_30.000_40.000``), or
``<audiocap_id>``; flat, or in split folders (``train/ val/ test/``, also ``audio/train`` …;
a file in another split's folder is never used). Rows are grouped by clip (``youtube_id`` +
``start_time``) *before* the audio is looked up, so a clip keeps all its captions even when its
file is named by one of its five audiocap ids. A clip is found by any of its audiocap ids, else by
youtube id: the file whose start time matches the row's, else the file of that id without a start time, else
the one file of that id (its start time names no other clip; noted in the report). Rows whose
audio is absent are skipped and reported (downloads are never complete).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atr_demo.errors import DataError

from training.formats.common import (
    SHOW,
    Clip,
    LoadReport,
    SplitReport,
    audio_files,
    check_caption_counts,
    check_nonempty,
    note_unused,
    read_csv,
)

#: CSV name → split.
AUDIOCAPS_SPLITS = {"train": "train", "val": "validation", "test": "test"}
COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
#: Captions per validation/test clip in the AudioCaps protocol.
EVAL_CAPTIONS = 5
#: Folder names that mark a split.
SPLIT_FOLDERS = {"train": "train", "val": "validation", "valid": "validation", "validation": "validation",
                 "test": "test"}
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
#: Two start times closer than this (s) are the same.
_TOLERANCE_S = 0.01


@dataclass(frozen=True)
class AudioFile:
    """An audio file under the root: the start times its name may mean (``()``: none in the name;
    a number is read both as seconds and as milliseconds) and the split of its folder."""

    path: str
    starts: tuple[float, ...]
    split: str | None


def name_candidates(stem: str) -> list[tuple[str, tuple[float, ...]]]:
    """The ``(youtube id, start times)`` that a file stem may name.

    ``abc`` → ``(abc, ())``; ``Yabc_30.000_40.000`` → ``(Yabc_30.000_40.000, ())``,
    ``(Yabc_30.000, (40, 0.04))``, ``(Yabc, (30, 0.03))`` and each base without its leading ``Y``.
    Wrong readings are harmless: only names equal to a youtube id of the CSVs are ever looked up.
    """
    tokens = stem.split("_")
    bases: list[tuple[str, tuple[float, ...]]] = [(stem, ())]
    for tail in (1, 2):
        if len(tokens) > tail and all(_NUMBER.match(t) for t in tokens[-tail:]):
            value = float(tokens[-tail])
            bases.append(("_".join(tokens[:-tail]), (value, value / 1000)))
    out = []
    for base, starts in bases:
        out.append((base, starts))
        if base.startswith("Y") and len(base) > 1:
            out.append((base[1:], starts))
    return out


def index_audio(folder: Path) -> tuple[dict[str, list[AudioFile]], dict[str, list[AudioFile]]]:
    """One walk of ``folder``: audio files by the youtube ids their names may mean, and by stem
    (for ``<audiocap_id>`` names)."""
    by_yt: dict[str, list[AudioFile]] = {}
    by_stem: dict[str, list[AudioFile]] = {}
    for found in audio_files(folder):
        split = next((SPLIT_FOLDERS[p.lower()] for p in reversed(found.folders) if p.lower() in SPLIT_FOLDERS), None)
        by_stem.setdefault(found.stem, []).append(AudioFile(found.path, (), split))
        for yt, starts in name_candidates(found.stem):
            by_yt.setdefault(yt, []).append(AudioFile(found.path, starts, split))
    return by_yt, by_stem


@dataclass
class _Row:
    line: int
    cap_id: str
    caption: str


def _start_text(start: float) -> str:
    return str(int(start)) if start == int(start) else f"{start:g}"


def _find(
    yt: str, start: float, rows: Sequence[_Row], split: str, other_starts: set[float],
    by_yt: dict[str, list[AudioFile]], by_stem: dict[str, list[AudioFile]],
) -> tuple[list[AudioFile], str]:
    """The files of one clip (best first) and a note, or ``([], reason)``.

    Order: a file named by one of the clip's audiocap ids; a ``<ytid>_<start>…`` file whose start
    is the clip's; a ``<ytid>``/``Y<ytid>`` file; the one file of that youtube id whose start
    names no other clip of the id (note ``"start time differs"``).
    """
    def in_split(files: list[AudioFile]) -> list[AudioFile]:
        return [f for f in files if f.split in (None, split)]

    def same(a: float, b: float) -> bool:
        return abs(a - b) < _TOLERANCE_S

    named = in_split([f for r in rows for f in by_stem.get(r.cap_id, [])])
    if named:
        return named, ""
    files = in_split(by_yt.get(yt, []))
    if not files:
        return [], "audio not found"
    timed = [f for f in files if any(same(s, start) for s in f.starts)]
    if timed:
        return timed, ""
    untimed = [f for f in files if not f.starts]
    if untimed:
        return untimed, ""
    if len({f.path for f in files}) == 1 and not any(same(s, o) for f in files for s in f.starts for o in other_starts):
        return files, "start time differs"
    return [], "only other start times on disk"


def _read_split(
    csv_path: Path, split_report: SplitReport, seen_ids: dict[str, str]
) -> tuple[int, dict[tuple[str, float], list[_Row]]]:
    """The row count of one AudioCaps CSV and its rows grouped by clip ``(youtube id, start)``."""
    groups: dict[tuple[str, float], list[_Row]] = {}
    rows = read_csv(csv_path, COLUMNS)
    for line, row in rows:
        where = f"{csv_path}:{line}"
        cap_id, yt = row["audiocap_id"].strip(), row["youtube_id"].strip()
        if cap_id in seen_ids:
            raise DataError(f"{where}: duplicate audiocap_id {cap_id} (first at {seen_ids[cap_id]}); "
                            "use the published CSVs unchanged")
        seen_ids[cap_id] = where
        try:
            start = float(row["start_time"] or 0)
        except ValueError:
            raise DataError(f"{where}: start_time {row['start_time']!r} is not a number of seconds") from None
        if not yt:
            raise DataError(f"{where}: empty youtube_id")
        caption = row["caption"].strip()
        if not caption:
            split_report.skip("empty caption", where)
            continue
        groups.setdefault((yt, start), []).append(_Row(line, cap_id, caption))
    return len(rows), groups


def load_audiocaps(
    root: str | Path, audio_dir: str | Path | None = None, dataset: str = ""
) -> tuple[list[Clip], LoadReport]:
    """AudioCaps in ``root`` (CSVs in ``root`` or ``root/dataset``; audio anywhere under
    ``audio_dir``, default ``root``). Returns the clips of every split and the loading report.

    Raises:
        DataError: no CSV; a missing column; a bad ``start_time``; a duplicate ``audiocap_id``; an
            empty split (no rows, or no row found its audio); a validation/test clip without 5
            captions.
    """
    root = Path(root)
    csv_dir = root if any((root / f"{n}.csv").is_file() for n in AUDIOCAPS_SPLITS) else root / "dataset"
    folder = Path(audio_dir) if audio_dir else root
    report = LoadReport(dataset or str(root), "audiocaps")
    seen_ids: dict[str, str] = {}
    # pass 1: every CSV, rows grouped by clip (youtube id, start time)
    tables: list[tuple[str, Path, int, dict[tuple[str, float], list[_Row]]]] = []
    starts_of: dict[str, set[float]] = {}
    for name, split in AUDIOCAPS_SPLITS.items():
        csv_path = csv_dir / f"{name}.csv"
        if not csv_path.is_file():
            continue
        rows, groups = _read_split(csv_path, report.split(split), seen_ids)
        for yt, start in groups:
            starts_of.setdefault(yt, set()).add(start)
        tables.append((split, csv_path, rows, groups))
    if not tables:
        raise DataError(f"no train.csv / val.csv / test.csv in {root} (or {root / 'dataset'}); "
                        "download them from the AudioCaps repository")
    # pass 2: one walk of the audio folder, then each clip's file
    by_yt, by_stem = index_audio(folder)
    on_disk = [f.path for files in by_stem.values() for f in files]
    clips: list[Clip] = []
    extra: list[str] = []
    differs: list[str] = []
    for split, csv_path, n_rows, groups in tables:
        split_report = report.split(split)
        kept = 0
        for (yt, start), group in groups.items():
            files, note = _find(yt, start, group, split, starts_of[yt] - {start}, by_yt, by_stem)
            clip_id = f"{yt}_{_start_text(start)}"
            if not files:
                lines = ",".join(str(r.line) for r in group)
                split_report.skip(note, f"{clip_id} ({csv_path.name}:{lines})", rows=len(group))
                continue
            paths = sorted({f.path for f in files})
            if len(paths) > 1:
                extra.append(" = ".join(Path(p).name for p in paths))
            if note:
                differs.append(f"{clip_id} → {Path(paths[0]).name}")
            clips.append(Clip(clip_id=clip_id, audio=paths[0],
                              captions=[r.caption for r in group], split=split, group=yt, dataset=report.dataset))
            kept += 1
        check_nonempty(n_rows, kept, split, str(csv_path),
                       f"name the files <youtube_id>.wav, Y<youtube_id>.wav, <youtube_id>_<start>[_<end>].wav or "
                       f"<audiocap_id>.wav (any audio extension) anywhere under {folder}")
    if extra:
        report.notes.append(f"{len(extra)} clip(s) have several files (the first in name order is used): "
                            + "; ".join(extra[:SHOW]))
    if differs:
        report.notes.append(f"{len(differs)} clip(s) use the one file of their youtube id although its start time "
                            "differs from the CSV's: " + "; ".join(differs[:SHOW]))
    note_unused(report, on_disk, clips, folder)
    check_caption_counts(clips, EVAL_CAPTIONS, report.dataset)
    report.count(clips)
    return clips, report
