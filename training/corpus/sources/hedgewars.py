"""``hedgewars-data``: ~90 effects under ``Data/Sounds`` plus laughs and coughs.

Of the ~800 spoken voice lines under ``Data/Sounds/voices/<pack>/`` only the non-speech
``Laugh.ogg`` and ``PoisonCough.ogg`` are kept (captioned by the table like the rest).
Voice packs of one speaker family (``Default``, ``Default_es`` ...) share a group.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.grouping import slug
from training.corpus.sources import Source
from training.corpus.sources.common import clip_from_rules, sound_files

PACKAGE = "hedgewars-data"
SOUNDS_DIR = "usr/share/games/hedgewars/Data/Sounds"
LICENCE = "GFDL-1.3"
KEPT_VOICE_FILES = frozenset({"laugh.ogg", "poisoncough.ogg"})
# Files with their own entry in the Debian copyright file: name prefix -> (licence, author).
FILE_LICENCES: dict[str, tuple[str, str]] = {"Droplet": ("CC-BY-SA-3.0", "saugox")}


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    base = root / SOUNDS_DIR
    for path in sound_files(base):
        relative = path.relative_to(base).as_posix()
        group = None
        if relative.startswith("voices/"):
            if path.name.lower() not in KEPT_VOICE_FILES:
                continue  # spoken lines: never part of the corpus, not even listed as dropped
            pack = relative.split("/")[1].split("_")[0]
            group = f"voices/{slug(pack)}/{slug(path.stem)}"
        licence, author = next(
            (value for prefix, value in FILE_LICENCES.items() if path.name.startswith(prefix)), (LICENCE, None)
        )
        yield clip_from_rules(
            PACKAGE, relative, rules, licence, author, path=path, group=group, original_name=f"{SOUNDS_DIR}/{relative}"
        )


SOURCE = Source(
    package=PACKAGE,
    tier=1,
    patterns=(f"./{SOUNDS_DIR}/*",),
    parse=parse,
    licence=LICENCE,
)
