"""Clotho v2.1: ``clotho_captions_{development,validation,evaluation}.csv`` (``file_name,
caption_1..caption_5``) with the audio of each split in a folder named after it: ``development/``,
``validation/``, ``evaluation/`` (as the ``clotho_audio_<split>.7z`` archives unpack), or
``clotho_audio_<split>/`` (optionally holding ``<split>/``), also under ``audio/``.

File names hold spaces, commas, parentheses, quotes and non-ASCII letters: the CSVs are read with
the csv module (quoted fields) and names are compared in Unicode NFC (macOS stores NFD). Every
clip of every split must have 5 captions in validation/evaluation (the protocol); Clotho's
archives are complete, so a caption row whose file is absent is an error in validation/evaluation
and skipped + reported in development.
"""

from __future__ import annotations

from pathlib import Path

from atr_demo.errors import DataError

from training.formats.common import (
    SHOW,
    Clip,
    LoadReport,
    audio_files,
    check_caption_counts,
    check_nonempty,
    nfc,
    note_unused,
    read_csv,
)

#: CSV / folder name → split.
CLOTHO_SPLITS = {"development": "train", "validation": "validation", "evaluation": "test"}
CAPTION_COLUMNS = tuple(f"caption_{i}" for i in range(1, 6))
#: Captions per clip in the Clotho protocol.
CAPTIONS = 5


def audio_folder(root: Path, name: str) -> Path | None:
    """The folder holding the audio of split ``name`` (see the module docstring), or None."""
    for base in (root, root / "audio"):
        for candidate in (base / name, base / f"clotho_audio_{name}" / name, base / f"clotho_audio_{name}"):
            if candidate.is_dir():
                return candidate
    return None


def load_clotho(root: str | Path, dataset: str = "") -> tuple[list[Clip], LoadReport]:
    """Every ``clotho_captions_<split>.csv`` in ``root`` with its audio folder; the clips of every
    split and the loading report.

    Raises:
        DataError: no caption CSV; a missing column; a duplicate ``file_name``; no audio folder for
            a split; a validation/evaluation file that is absent; an empty split; a
            validation/evaluation clip without 5 captions.
    """
    root = Path(root)
    report = LoadReport(dataset or str(root), "clotho")
    clips: list[Clip] = []
    on_disk: dict[Path, list[str]] = {}
    found = False
    for name, split in CLOTHO_SPLITS.items():
        csv_path = root / f"clotho_captions_{name}.csv"
        if not csv_path.is_file():
            continue
        found = True
        rows = read_csv(csv_path, ("file_name", *CAPTION_COLUMNS))
        folder = audio_folder(root, name)
        if folder is None:
            raise DataError(f"{csv_path.name} has no audio folder: looked for {root / name}/, "
                            f"{root / f'clotho_audio_{name}'}/ and {root / 'audio' / name}/; "
                            f"unpack clotho_audio_{name}.7z into {root}")
        files = {nfc(f.name): f.path for f in audio_files(folder)}
        on_disk[folder] = list(files.values())
        split_report = report.split(split)
        seen: dict[str, int] = {}
        missing: list[str] = []
        for line, row in rows:
            file_name = row["file_name"].strip()
            key = nfc(file_name)
            where = f"{csv_path}:{line}"
            if not file_name:
                raise DataError(f"{where}: empty file_name")
            if key in seen:
                raise DataError(f"{where}: duplicate file_name {file_name!r} (first on line {seen[key]}); "
                                "use the published caption CSV unchanged")
            seen[key] = line
            path = files.get(key)
            if path is None:
                split_report.skip("audio not found", f"{file_name!r} ({csv_path.name}:{line})")
                missing.append(file_name)
                continue
            captions = [row[c].strip() for c in CAPTION_COLUMNS if row[c].strip()]
            if not captions:
                split_report.skip("no caption", where)
                continue
            clip_id = f"{name}/{file_name}"
            clips.append(Clip(clip_id=clip_id, audio=path, captions=captions, split=split,
                              group=clip_id, dataset=report.dataset))
        if missing and split != "train":
            shown = ", ".join(repr(m) for m in missing[:SHOW])
            raise DataError(f"{csv_path.name}: {len(missing)} of {len(rows)} file(s) are not in {folder}: {shown}; "
                            f"Clotho's archives are complete: unpack clotho_audio_{name}.7z again")
        check_nonempty(len(rows), sum(c.split == split for c in clips), split, str(csv_path),
                       f"put the audio of clotho_audio_{name}.7z in {folder} with the names of the CSV")
    if not found:
        raise DataError(f"no clotho_captions_{{development,validation,evaluation}}.csv in {root}; "
                        "download them from the Clotho release (v2.1)")
    for folder, paths in on_disk.items():
        note_unused(report, paths, clips, folder)
    check_caption_counts(clips, CAPTIONS, report.dataset)
    report.count(clips)
    return clips, report
