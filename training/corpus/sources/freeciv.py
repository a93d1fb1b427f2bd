"""``freeciv-data``: 18 short Ogg effects under ``stdsounds/`` (cannons, explosions, machine
guns, splash, tank tread, footstep, wood and metal breaking), captioned by file name.

``stdsounds.soundspec`` names the artist of every file with a tag (``"stdsounds/LrgCan.ogg"
; [warzone]``) explained in its ``artists`` list; that artist becomes the clip's author.
Licence: the package's GPL-2+.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.sources import Source
from training.corpus.sources.common import clip_from_rules, sound_files

PACKAGE = "freeciv-data"
DATA_DIR = "usr/share/games/freeciv"
SOUND_DIR = f"{DATA_DIR}/stdsounds"
SPEC = f"{DATA_DIR}/stdsounds.soundspec"
LICENCE = "GPL-2+"
AUTHOR = "Freeciv contributors"

_FILE_TAG = re.compile(r'"stdsounds/([^"]+)"\s*;\s*\[(\w+)\]')
_EMAIL = re.compile(r"\s*\([^)]*@[^)]*\)")
_ARTIST = re.compile(r"^\s*(.+?)\s*\[(\w+)\]\s*\\?\"?\s*$")


def read_artists(text: str) -> dict[str, str]:
    """File name → artist, from the ``artists`` list and the tags of the ``[files]`` lines."""
    artists: dict[str, str] = {}
    for line in text.splitlines():
        found = _ARTIST.match(line.replace("artists = \"", ""))
        if found and "=" not in line and not line.lstrip().startswith(";"):
            artists[found.group(2)] = _EMAIL.sub("", found.group(1)).strip()
    by_file: dict[str, str] = {}
    for line in text.splitlines():
        if line.lstrip().startswith(";"):
            continue
        found = _FILE_TAG.search(line)
        if found and found.group(2) in artists:
            by_file.setdefault(found.group(1), artists[found.group(2)])
    return by_file


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    spec = root / SPEC
    artists = read_artists(spec.read_text(encoding="utf-8", errors="replace")) if spec.is_file() else {}
    base = root / SOUND_DIR
    for path in sound_files(base):
        relative = path.relative_to(base).as_posix()
        yield clip_from_rules(
            PACKAGE,
            relative,
            rules,
            LICENCE,
            artists.get(relative, AUTHOR),
            path=path,
            original_name=f"{SOUND_DIR}/{relative}",
        )


SOURCE = Source(
    package=PACKAGE,
    tier=2,
    patterns=(f"./{SOUND_DIR}/*", f"./{SPEC}"),
    parse=parse,
    licence=LICENCE,
)
