"""``widelands-data``: ~110 Ogg sounds under ``data/sound`` (+ the duck critter).

``data/sound/wl-sound-docu.csv`` documents part of the files (author, licence, original
recording). Rows whose licence is unknown, empty or "personal", and rows marked as a
duplicate of another file, are dropped. Files the sheet does not list fall under the
package's ``Files: *`` licence (GPL-2+, Widelands Development Team).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.grouping import slug
from training.corpus.sources import Source
from training.corpus.sources.common import clip_from_rules, sound_files

PACKAGE = "widelands-data"
DATA_DIR = "usr/share/games/widelands/data"
DOCU = "sound/wl-sound-docu.csv"
LICENCE = "GPL-2+"
AUTHOR = "Widelands Development Team"

_LICENCES = {"cc-0": "CC0-1.0", "cc0": "CC0-1.0", "cc-3": "CC-BY-3.0", "cc-by-3.0": "CC-BY-3.0", "pd": "public-domain"}


@dataclass(frozen=True)
class DocuRow:
    """One documented file of ``wl-sound-docu.csv``."""

    file_name: str
    author: str
    licence: str
    original: str


def read_docu(path: Path) -> dict[str, DocuRow]:
    """File name → documentation row (the sheet's header is the row starting "File Name")."""
    if not path.is_file():
        return {}
    rows: dict[str, DocuRow] = {}
    header: list[str] | None = None
    with path.open(encoding="utf-8", newline="") as handle:
        for record in csv.reader(handle):
            if header is None:
                if record and record[0].strip() == "File Name":
                    header = [cell.strip() for cell in record]
                continue
            if not record or not record[0].strip():
                continue
            cells = dict(zip(header, (cell.strip() for cell in record), strict=False))
            rows[cells["File Name"]] = DocuRow(
                file_name=cells["File Name"],
                author=cells.get("Author", ""),
                licence=cells.get("License", ""),
                original=cells.get("Original File Name", ""),
            )
    return rows


def licence_of(row: DocuRow) -> str | None:
    """The SPDX-like licence of a documented file, or None when it must be dropped."""
    if row.author.upper().startswith("DUPLICATE"):
        return None
    return _LICENCES.get(row.licence.strip().lower())


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    base = root / DATA_DIR
    docu = read_docu(base / DOCU)
    files = sound_files(base / "sound") + sound_files(base / "world" / "critters")
    for path in files:
        relative = path.relative_to(base).as_posix()
        original_name = f"{DATA_DIR}/{relative}"
        row = docu.get(path.name)
        licence, author, group = LICENCE, AUTHOR, None
        if row is not None:
            documented = licence_of(row)
            if documented is None:
                reason = "duplicate of another file" if row.author.upper().startswith("DUPLICATE") else (
                    f"licence unknown or personal ({row.licence or 'empty'})"
                )
                yield Dropped(PACKAGE, original_name, reason)
                continue
            licence = documented
            author = None if row.author.upper() == "UNKNOWN" else row.author
            if row.original and row.original.upper() != "UNKNOWN":
                group = "orig/" + slug(row.original)
        yield clip_from_rules(
            PACKAGE, relative, rules, licence, author, path=path, group=group, original_name=original_name
        )


SOURCE = Source(
    package=PACKAGE,
    tier=1,
    patterns=(f"./{DATA_DIR}/sound/*", f"./{DATA_DIR}/world/critters/*.ogg"),
    parse=parse,
    licence=LICENCE,
)
