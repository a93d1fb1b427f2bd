"""WavCaps (training only): ``json_files/<source>/*.json`` in the root (also ``data/json_files``),
one folder per source (``AudioSet_SL``, ``BBC_Sound_Effects``, ``FreeSound``, ``SoundBible``),
each file ``{"num_captions_per_audio": 1, "data": [{"id", "caption", "duration", …}, …]}`` (a
bare list of entries, as in early releases, is read too; ``num_captions_per_audio`` > 1 reads
``caption_1``…).

Audio is found by ``id`` anywhere under the root (the release's zip archives unpack in various
ways): a trailing audio extension of the id is dropped (AudioSet_SL ids are ``Y<ytid>.wav``, the
archives hold ``Y<ytid>.flac``) and ``<id>.<any audio extension>`` is looked up in one index of the
tree (one ``os.walk``); an AudioSet id also matches ``<ytid>.*`` without its ``Y``. When several
files share a name (FreeSound and SoundBible ids are both numbers), the one under a folder named
like the source wins. Entries without audio are skipped and reported (the archives hold fewer
clips than the JSON files).

Exclusion lists keep the AudioCaps / Clotho test clips (and others) out of training: the
release's ``json_files/blacklist/*.json`` (``blacklist_exclude_test_ac.json``, ``…_all_ac.json``,
``…_ub8k_esc50_vggsound.json``), each ``{"AudioSet": [ids], "FreeSound": [ids], …}``. Every
list found there is applied, or only those given as ``blacklist`` (files or folders; then the
release's folder is not read). A key applies to the source whose folder name starts with it
(``AudioSet`` → ``AudioSet_SL``), ids compared without audio extension. The report counts the
excluded clips per source; without any list, a WARNING says that test overlap is not excluded.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atr_demo.errors import DataError

from training.formats.common import (
    Clip,
    FoundAudio,
    LoadReport,
    audio_files,
    check_nonempty,
    strip_audio_extension,
)

logger = logging.getLogger(__name__)

BLACKLIST_DIR = "blacklist"


def json_root(root: Path) -> Path | None:
    """The ``json_files`` folder of a WavCaps root (``root/json_files``, ``root/data/json_files``,
    or ``root`` itself when it is named ``json_files``)."""
    for candidate in (root / "json_files", root / "data" / "json_files", root):
        if candidate.is_dir() and (candidate.name == "json_files" or candidate != root):
            return candidate
    return None


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not readable JSON ({exc}); download it again") from exc


def _entries(path: Path) -> tuple[list[Any], int]:
    """The entries of one WavCaps JSON file and its captions per audio."""
    data = _read_json(path)
    if isinstance(data, list):
        return data, 1
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path}: expected {{\"num_captions_per_audio\": 1, \"data\": [...]}} (a WavCaps json file)")
    per_audio = data.get("num_captions_per_audio", 1)
    if not isinstance(per_audio, int) or per_audio < 1:
        raise DataError(f"{path}: num_captions_per_audio must be a positive integer, got {per_audio!r}")
    return data["data"], per_audio


def read_blacklists(paths: Sequence[Path]) -> tuple[dict[str, set[str]], list[Path]]:
    """``key → ids`` (audio extensions dropped) merged over the JSON files of ``paths`` (files, or
    folders of ``*.json``), and the files read."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.glob("*.json"))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"WavCaps exclusion list {path} does not exist; give a JSON file or a folder of them "
                            "(the release's json_files/blacklist/)")
    merged: dict[str, set[str]] = {}
    for file in files:
        data = _read_json(file)
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise DataError(f"{file}: an exclusion list must map sources to id lists, "
                            '{"AudioSet": ["Y….wav", …], "FreeSound": ["123", …]}')
        for key, ids in data.items():
            merged.setdefault(key, set()).update(strip_audio_extension(str(i)) for i in ids)
    return merged, files


def _source_lists(sources: Sequence[str], lists: dict[str, set[str]], report: LoadReport) -> dict[str, set[str]]:
    """The excluded ids of each source folder: the lists whose key its name starts with."""
    out: dict[str, set[str]] = {s: set() for s in sources}
    for key, ids in lists.items():
        matched = [s for s in sources if _norm(s).startswith(_norm(key)) or _norm(key).startswith(_norm(s))]
        for source in matched:
            out[source] |= ids
        if not matched:
            report.notes.append(f"exclusion list key {key!r} ({len(ids)} ids) matches no source folder")
    return out


def _find_audio(
    item_id: str, source: str, given: object, root: Path, index: dict[str, list[FoundAudio]]
) -> tuple[str | None, str]:
    """The audio file of one entry (absolute path), or ``(None, reason)``. An ``audio`` value with
    an audio extension is tried first, relative to the root (the release writes a placeholder)."""
    if isinstance(given, str) and strip_audio_extension(given) != given:
        path = os.path.abspath(os.path.join(root, given))
        if os.path.isfile(path):
            return path, ""
    files = index.get(item_id, [])
    if not files and item_id.startswith("Y"):
        files = index.get(item_id[1:], [])
    if not files:
        return None, "audio not found"
    if len(files) > 1:
        mine = [f for f in files if any(_norm(source)[:8] in _norm(p) for p in f.folders)]
        if len(mine) != 1:
            return None, "ambiguous audio (several files of that name)"
        files = mine
    return files[0].path, ""


def _captions(item: dict, per_audio: int) -> list[str]:
    if per_audio > 1:
        raw: Any = [item.get(f"caption_{i}") for i in range(1, per_audio + 1)]
    else:
        raw = item.get("caption")
    values = raw if isinstance(raw, list) else [raw]
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def load_wavcaps(
    root: str | Path, blacklist: Sequence[str | Path] | None = None, dataset: str = ""
) -> tuple[list[Clip], LoadReport]:
    """WavCaps in ``root``: every entry with audio as a training clip (``clip_id``
    ``<source>/<id>``), the exclusion lists applied (see the module docstring). Returns the
    clips and the loading report.

    Raises:
        DataError: no ``json_files/<source>/*.json``; an unreadable JSON file; an entry without
            ``id``; a duplicate id in one source; a missing exclusion list file; no entry with audio.
    """
    root = Path(root)
    report = LoadReport(dataset or str(root), "wavcaps")
    jroot = json_root(root)
    sources = sorted(p.name for p in jroot.iterdir() if p.is_dir() and p.name != BLACKLIST_DIR) if jroot else []
    files_of = {s: sorted((jroot / s).glob("*.json")) for s in sources} if jroot else {}
    sources = [s for s in sources if files_of[s]]
    if jroot is None or not sources:
        raise DataError(f"no json_files/<source>/*.json in {root}; download the WavCaps json_files folder "
                        "(AudioSet_SL, BBC_Sound_Effects, FreeSound, SoundBible)")
    if blacklist:
        lists, list_files = read_blacklists([Path(p).expanduser() for p in blacklist])
    elif (jroot / BLACKLIST_DIR).is_dir():
        lists, list_files = read_blacklists([jroot / BLACKLIST_DIR])
    else:
        lists, list_files = {}, []
    if list_files:
        report.notes.append("exclusion lists applied: " + ", ".join(f.name for f in list_files))
    else:
        message = (f"{report.dataset}: no WavCaps exclusion list (json_files/blacklist/ or the wavcaps_blacklist "
                   "option): clips that overlap the AudioCaps / Clotho test sets are NOT excluded from training, "
                   "so test results on those sets are optimistic; put the release's json_files/blacklist/ in place "
                   "or set wavcaps_blacklist")
        logger.warning("%s", message)
        report.notes.append("WARNING: " + message)
    excluded_ids = _source_lists(sources, lists, report)
    index: dict[str, list[FoundAudio]] = {}
    for found in audio_files(root, skip_dirs=("json_files",)):
        index.setdefault(found.stem, []).append(found)
    split_report = report.split("train")
    clips: list[Clip] = []
    rows = 0
    for source in sources:
        seen: dict[str, str] = {}
        excluded = 0
        for json_path in files_of[source]:
            entries, per_audio = _entries(json_path)
            for n, item in enumerate(entries):
                where = f"{json_path} entry {n}"
                rows += 1
                if not isinstance(item, dict) or item.get("id") in (None, ""):
                    raise DataError(f"{where}: every entry needs an \"id\"; use the published json files")
                item_id = strip_audio_extension(str(item["id"]).strip())
                if item_id in seen:
                    raise DataError(f"{where}: duplicate id {item['id']!r} in {source} (first at {seen[item_id]}); "
                                    "keep one json file per source")
                seen[item_id] = where
                if item_id in excluded_ids[source]:
                    excluded += 1
                    continue
                captions = _captions(item, per_audio)
                if not captions:
                    split_report.skip("no caption", where)
                    continue
                path, reason = _find_audio(item_id, source, item.get("audio"), root, index)
                if path is None:
                    split_report.skip(reason, f"{source}/{item_id}")
                    continue
                clips.append(Clip(clip_id=f"{source}/{item_id}", audio=path, captions=captions,
                                  split="train", group=f"{source}/{item_id}", dataset=report.dataset))
        if list_files:
            report.excluded[source] = excluded
    check_nonempty(rows, len(clips), "train", str(jroot),
                   f"unpack the WavCaps audio archives anywhere under {root} (files named <id>.flac or <id>.wav)")
    report.count(clips)
    return clips, report
