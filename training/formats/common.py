"""What every dataset loader shares: the :class:`Clip` record, the loading report
(:class:`LoadReport`, one :class:`SplitReport` per split), one index of the audio files under a
folder, CSV reading with column checks, the protocol caption-count check and the audio probe.

Policy for bad input (every message names the file or row and the fix):

* a missing CSV column, a duplicate id, an empty split: :class:`~atr_demo.errors.DataError`;
* a caption row whose audio is absent: skipped and counted in the report (downloads of AudioCaps
  and WavCaps are never complete); a validation/test split that loses clips this way is logged
  as a WARNING (its numbers are then not comparable with published ones);
* an unreadable clip (probed at load time for validation/test, for every split on request):
  skipped and reported in the training split, a ``DataError`` in validation/test;
* a validation/test clip without the protocol's caption count (5 for AudioCaps and Clotho):
  ``DataError`` naming the count and the first offending clips.
"""

from __future__ import annotations

import csv
import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from atr_demo.errors import DataError
from atr_demo.fileio import AUDIO_EXTENSIONS, markdown_table

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
#: Splits whose protocol is fixed (caption count, audio must decode).
EVAL_SPLITS = ("validation", "test")
#: How many offending rows / clips a message or report lists.
SHOW = 5


@dataclass
class Clip:
    """One audio clip (or a segment of a file) with its captions.

    Attributes:
        clip_id: unique id within a dataset.
        audio: absolute path of the audio file.
        captions: one or more captions (Clotho has 5).
        split: ``train`` | ``validation`` | ``test``.
        group: recording group: cuts of one recording share it (batches hold one per group).
        esc50: ESC-50 class of the clip, if one applies.
        start_s, duration_s: the segment of the file (``None``: to the end).
        fold: ESC-50 fold (1–5) for ESC-50 data.
        mix_of: for a mixture, the two source clips (the audio is built on the fly).
        gain_db: gain applied to the second source of a mixture.
        package: source package of a corpus clip (``None`` for other formats).
        captions_by_lang: captions in other languages, ``{"fr": [...], "de": [...]}``, from the
            manifest columns ``caption_<lang>`` (``captions`` is the default-language list; see
            :func:`training.datasets.language_captions`).
        dataset: the dataset the clip was loaded from (its ``format:path`` spec without a
            weight; the key of the sampling weights, :mod:`training.sampling`).
    """

    clip_id: str
    audio: str
    captions: list[str]
    split: str
    group: str
    esc50: str | None = None
    start_s: float = 0.0
    duration_s: float | None = None
    fold: int | None = None
    mix_of: tuple[Clip, Clip] | None = field(default=None, repr=False)
    gain_db: float = 0.0
    package: str | None = None
    captions_by_lang: dict[str, list[str]] = field(default_factory=dict)
    dataset: str = ""


def captions_of(value: object, where: str) -> list[str]:
    """A caption or list of captions, stripped, empty ones dropped; DataError when none is left."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise DataError(f"{where}: captions must be a string or a list of strings")
    captions = [c.strip() for c in value if c.strip()]
    if not captions:
        raise DataError(f"{where}: no caption")
    return captions


def nfc(name: str) -> str:
    """Unicode NFC form of a file name (macOS writes NFD; the CSVs are NFC)."""
    return unicodedata.normalize("NFC", name)


# -- the loading report ------------------------------------------------------------------------


@dataclass
class SplitReport:
    """What loading found in one split: clips and captions kept, skipped rows by reason (with the
    first few examples of each)."""

    split: str
    clips: int = 0
    captions: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, example: str, rows: int = 1) -> None:
        """Count ``rows`` skipped caption rows (entries) under ``reason``, named by ``example``;
        keep the first :data:`SHOW` examples."""
        self.skipped[reason] += rows
        shown = self.examples.setdefault(reason, [])
        if len(shown) < SHOW:
            shown.append(example)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


@dataclass
class LoadReport:
    """The report of one dataset: per split what was found, WavCaps exclusions per source, notes.

    Attributes:
        dataset: the dataset spec as given (``format:path``).
        format: the format it was read as.
        splits: ``split → SplitReport`` (only the splits the dataset has).
        excluded: clips dropped by exclusion lists, ``source → count`` (WavCaps).
        notes: other facts worth reading (exclusion lists used, a missing one, …).
    """

    dataset: str
    format: str
    splits: dict[str, SplitReport] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> SplitReport:
        """The report of split ``name`` (created on first use)."""
        if name not in self.splits:
            self.splits[name] = SplitReport(name)
        return self.splits[name]

    def count(self, clips: Iterable[Clip]) -> None:
        """Set the clip and caption counts of every split from the kept ``clips``."""
        for report in self.splits.values():
            report.clips = report.captions = 0
        for clip in clips:
            report = self.split(clip.split)
            report.clips += 1
            report.captions += len(clip.captions)

    def table(self) -> str:
        """The report as a Markdown table (one row per split: clips, captions, skipped caption rows
        and their reasons), then the first skipped rows of each reason, exclusions and notes."""
        rows = []
        for name in [s for s in SPLITS if s in self.splits]:
            r = self.splits[name]
            reasons = "; ".join(f"{reason}: {n}" for reason, n in sorted(r.skipped.items())) or "–"
            rows.append([name, str(r.clips), str(r.captions), str(r.skipped_total), reasons])
        lines = [f"{self.dataset} ({self.format})",
                 markdown_table(["split", "clips", "captions", "skipped", "reasons"], rows, right=(1, 2, 3))]
        for name, r in self.splits.items():
            for reason, shown in r.examples.items():
                lines.append(f"  {name}, {reason} ({r.skipped[reason]} rows), first: {'; '.join(shown)}")
        if self.excluded:
            lines.append("  excluded by exclusion lists: "
                         + ", ".join(f"{source} {n}" for source, n in sorted(self.excluded.items())))
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)

    def log(self) -> None:
        """Log :meth:`table` (INFO), and a WARNING for every split with skipped rows (validation and
        test: their metrics are then not comparable with published numbers)."""
        logger.info("loaded %s", self.table())
        for name, r in self.splits.items():
            if r.skipped_total:
                why = ", ".join(f"{k}: {v}" for k, v in sorted(r.skipped.items()))
                tail = ("; metrics on this split are not comparable with published numbers until its audio is "
                        "complete" if name in EVAL_SPLITS else "")
                logger.warning("%s: skipped %d caption row(s) of the %s split (%s)%s", self.dataset,
                               r.skipped_total, name, why, tail)


# -- files -------------------------------------------------------------------------------------


class FoundAudio(NamedTuple):
    """An audio file found under a root: absolute ``path``, file ``name``, ``stem`` (the name
    without extension) and the ``folders`` between the root and the file."""

    path: str
    name: str
    stem: str
    folders: tuple[str, ...]


def audio_files(root: Path, skip_dirs: Sequence[str] = ()) -> list[FoundAudio]:
    """Every audio file under ``root`` (recursive, symlinked folders followed, hidden folders and
    ``skip_dirs`` names left out), in a stable order: one ``os.walk``, O(files), plain strings
    (no per-file ``Path`` or ``resolve``: 400k files in seconds)."""
    skip = set(skip_dirs)
    top = os.path.abspath(root)
    found: list[FoundAudio] = []
    for folder, dirs, files in os.walk(top, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in skip)
        rel = os.path.relpath(folder, top)
        folders = () if rel == "." else tuple(rel.split(os.sep))
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in AUDIO_EXTENSIONS and not name.startswith("."):
                found.append(FoundAudio(os.path.join(folder, name), name, stem, folders))
    return found


def note_unused(report: LoadReport, on_disk: Iterable[str], clips: Iterable[Clip], where: Path) -> None:
    """Add a note naming the audio files under ``where`` that no kept clip uses (a naming
    mismatch shows up here: files on disk, rows skipped as "audio not found")."""
    used = {c.audio for c in clips}
    unused = sorted(p for p in set(on_disk) if p not in used)
    if unused:
        shown = ", ".join(os.path.basename(p) for p in unused[:SHOW])
        report.notes.append(f"{len(unused)} audio file(s) under {where} match no kept caption row, e.g. {shown}")


def strip_audio_extension(name: str) -> str:
    """``name`` without a trailing audio extension (``Yabc.wav`` → ``Yabc``, ``123`` → ``123``)."""
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in AUDIO_EXTENSIONS else name


def read_csv(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a CSV with a header (UTF-8, a BOM allowed; quoted fields with
    commas, quotes and newlines as the csv module reads them); blank rows skipped.

    Raises:
        DataError: a column of ``required`` is missing from the header, or the CSV has no header.
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        if not header:
            raise DataError(f"{path} is empty: it needs a header row with the columns {', '.join(required)}")
        reader.fieldnames = header
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header)}); "
                            f"use the published CSV, whose header has {', '.join(required)}")
        rows = []
        for row in reader:
            if any((v or "").strip() for k, v in row.items() if k is not None and isinstance(v, str)):
                rows.append((reader.line_num, {k: (v or "") for k, v in row.items() if k is not None}))
    return rows


def probe_audio(path: str) -> str | None:
    """Why ``path`` cannot be read as audio, or ``None`` when its header opens (libsndfile, then
    FFmpeg through PyAV): a cheap check that decodes no samples."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
    except OSError as exc:
        return f"cannot stat ({exc.strerror or exc})"
    import soundfile as sf

    try:
        info = sf.info(path)
        return None if info.frames > 0 else "no samples"
    except Exception:  # noqa: BLE001 - libsndfile does not read every format; FFmpeg decides
        pass
    import av

    try:
        with av.open(f"file:{path}") as container:
            return None if container.streams.audio else "no audio stream"
    except Exception as exc:  # noqa: BLE001 - any FFmpeg failure means the file is unreadable
        return f"not decodable ({type(exc).__name__})"


def check_readable(clips: list[Clip], report: LoadReport, splits: Sequence[str]) -> list[Clip]:
    """Probe the audio of the clips in ``splits`` (:func:`probe_audio`): an unreadable training
    clip is skipped and reported, an unreadable validation/test clip is a DataError."""
    kept, bad_eval = [], []
    for clip in clips:
        reason = probe_audio(clip.audio) if clip.split in splits else None
        if reason is None:
            kept.append(clip)
        elif clip.split in EVAL_SPLITS:
            bad_eval.append(f"{clip.audio} ({reason})")
        else:
            report.split(clip.split).skip("unreadable audio", f"{clip.audio} ({reason})")
    if bad_eval:
        raise DataError(f"{report.dataset}: {len(bad_eval)} validation/test clip(s) cannot be read: "
                        f"{'; '.join(bad_eval[:SHOW])}; re-download or re-convert them (evaluation needs every clip)")
    return kept


def check_caption_counts(
    clips: Sequence[Clip], expected: int, dataset: str, splits: Sequence[str] = EVAL_SPLITS
) -> None:
    """Every clip of ``splits`` must have exactly ``expected`` captions (the protocol's count).

    Raises:
        DataError: naming the count and the first offending clips.
    """
    bad = [c for c in clips if c.split in splits and len(c.captions) != expected]
    if bad:
        shown = ", ".join(f"{c.clip_id} ({len(c.captions)})" for c in bad[:SHOW])
        raise DataError(
            f"{dataset}: {len(bad)} {'/'.join(sorted({c.split for c in bad}))} clip(s) do not have the protocol's "
            f"{expected} captions: {shown}; use the published caption files unchanged (a missing row or an empty "
            "caption changes the retrieval metrics)"
        )


def check_nonempty(rows: int, clips: int, split: str, where: str, hint: str) -> None:
    """An empty caption file, or one of whose rows none found its audio, is a DataError."""
    if rows == 0:
        raise DataError(f"{where}: the {split} split has no rows; use the published file or remove it")
    if clips == 0:
        raise DataError(f"{where}: none of the {rows} {split} row(s) found its audio; {hint}")
