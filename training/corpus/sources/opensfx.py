"""``openttd-opensfx``: 73 titled WAV recordings packed in ``opensfx.cat``.

Container layout: little-endian ``uint32`` pairs ``(offset, size)`` at the start (the
entry count is the first offset with its top bit cleared, divided by 8; the top bit of
every offset is cleared); at each offset one length byte, a NUL-padded name of that length
(the title in quotes, then credit and licence), then the RIFF/WAV bytes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.grouping import slug
from training.corpus.sources import Source
from training.corpus.sources.common import clip_from_rules

PACKAGE = "openttd-opensfx"
CAT_PATH = "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
PACKAGE_LICENCE = "CC-BY-SA-3.0"

_LICENCES = {
    "creative commons zero 1.0": "CC0-1.0",
    "creative commons attribution-sharealike 3.0 unported": "CC-BY-SA-3.0",
    "creative commons attribution 3.0 unported": "CC-BY-3.0",
    "creative commons attribution 3.0": "CC-BY-3.0",
}


@dataclass(frozen=True)
class CatEntry:
    """One sound of the container."""

    index: int
    name: str
    wav: bytes

    @property
    def title(self) -> str:
        found = re.match(r'\s*"([^"]*)"', self.name)
        return found.group(1).strip() if found else self.name.strip()

    @property
    def credit(self) -> str:
        found = re.match(r'\s*"[^"]*"\.?\s*(.*)', self.name, re.S)
        return (found.group(1) if found else "").strip()


def read_cat(data: bytes) -> list[CatEntry]:
    """Parse the bytes of ``opensfx.cat``."""
    if len(data) < 8:
        raise ValueError("opensfx.cat: too short")
    first = struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF
    count = first // 8
    entries = []
    for index in range(count):
        offset, size = struct.unpack_from("<II", data, 8 * index)
        offset &= 0x7FFFFFFF
        length = data[offset]
        name = data[offset + 1 : offset + 1 + length].split(b"\0", 1)[0].decode("latin-1")
        start = offset + 1 + length
        wav = data[start : start + size]
        if wav[:4] != b"RIFF":
            raise ValueError(f"opensfx.cat entry {index}: no RIFF header")
        entries.append(CatEntry(index, name, wav))
    return entries


def licence_of(credit: str) -> str:
    """SPDX-like licence id from a credit line (the collection licence if unrecognised)."""
    found = re.search(r"License:\s*([^.]*(?:\.\d[^.]*)?)", credit)
    text = found.group(1).strip().lower() if found else ""
    return _LICENCES.get(text, PACKAGE_LICENCE)


def authors_of(credit: str) -> str | None:
    """Everyone credited (original authors and editors), comma-separated."""
    names: list[str] = []
    pattern = r'(?:[Bb]y|and)\s+((?:"[^"]+")|(?:[A-Za-z][\w\-]*(?:\s+[A-Z][\w\-]*){0,3}))'
    for part in re.findall(pattern, credit):
        name = part.strip('"').strip()
        is_file = re.search(r"\.(wav|mp3|aif|aiff|flac|ogg)$", name, re.I) is not None
        is_credit_word = name.startswith("Creative") or name.lower() in {"edited", "mixed"}
        if name and name not in names and not is_file and not is_credit_word:
            names.append(name)
    return ", ".join(names) or None


def recording_group(entry: CatEntry) -> str:
    """Entries edited from the same original file (e.g. "Wind" / "Heavy wind") share a group."""
    original = re.search(r'Original\s+"([^"]+)"', entry.credit)
    return "orig/" + slug(original.group(1)) if original else "title/" + slug(entry.title)


def parse_entries(entries: list[CatEntry]) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    for entry in entries:
        yield clip_from_rules(
            PACKAGE,
            entry.title,
            rules,
            licence_of(entry.credit),
            authors_of(entry.credit),
            data=entry.wav,
            group=recording_group(entry),
            original_name=f"{CAT_PATH}#{entry.index:02d}:{entry.title}",
        )


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    yield from parse_entries(read_cat((root / CAT_PATH).read_bytes()))


SOURCE = Source(
    package=PACKAGE,
    tier=1,
    patterns=("./usr/share/games/openttd/baseset/opensfx/*",),
    parse=parse,
    licence=PACKAGE_LICENCE,
)
