"""``megaglest-data``: long tileset ambiences (rain, wind, day, night, owl, rooster, chicken,
wolf, hawk, cow), water sounds and non-voice unit sounds of the megapack tech tree.

The ``*_ack`` / ``*_select`` unit sounds are speech and are dropped by the table. Many
tilesets ship the same file: byte-identical copies are dropped by the build step, and all
tileset files of one name (``day.ogg`` of every tileset) share a recording group.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.grouping import stem_family
from training.corpus.sources import Source
from training.corpus.sources.common import clip_from_rules, sound_files

PACKAGE = "megaglest-data"
DATA_DIR = "usr/share/games/megaglest"
SOUND_DIRS = ("tilesets", "data/core/water_sounds", "techs/megapack/commondata/sounds")
LICENCE = "CC-BY-SA-3.0"
AUTHOR = "MegaGlest Team"


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    base = root / DATA_DIR
    for folder in SOUND_DIRS:
        for path in sound_files(base / folder):
            relative = path.relative_to(base).as_posix()
            if folder == "tilesets" and "/sounds/" not in relative:
                continue
            group = None
            if folder == "tilesets":
                group = "tilesets/" + stem_family(PurePosixPath(relative).name)
            yield clip_from_rules(
                PACKAGE, relative, rules, LICENCE, AUTHOR,
                path=path, group=group, original_name=f"{DATA_DIR}/{relative}",
            )


SOURCE = Source(
    package=PACKAGE,
    tier=2,
    patterns=tuple(f"./{DATA_DIR}/{folder}/*" for folder in SOUND_DIRS),
    parse=parse,
    licence=LICENCE,
)
