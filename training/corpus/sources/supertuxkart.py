"""``supertuxkart-data``: ~70 Ogg effects under ``data/sfx`` plus a few track sounds.

Captioned by file name (``captions/supertuxkart-data.csv``); music is skipped.
Licence: the package's ``Files: *`` entry (GPL-3+, SuperTuxKart Team).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.sources import Source
from training.corpus.sources.common import clip_from_rules, sound_files

PACKAGE = "supertuxkart-data"
DATA_DIR = "usr/share/games/supertuxkart/data"
LICENCE = "GPL-3+"
AUTHOR = "SuperTuxKart Team"


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    base = root / DATA_DIR
    for path in sound_files(base):
        relative = path.relative_to(base).as_posix()
        if relative.startswith("music/"):
            continue
        yield clip_from_rules(
            PACKAGE, relative, rules, LICENCE, AUTHOR, path=path, original_name=f"{DATA_DIR}/{relative}"
        )


SOURCE = Source(
    package=PACKAGE,
    tier=1,
    patterns=(
        f"./{DATA_DIR}/sfx/*.ogg",
        f"./{DATA_DIR}/tracks/*.ogg",
        f"./{DATA_DIR}/karts/*.ogg",
        f"./{DATA_DIR}/library/*.ogg",
    ),
    parse=parse,
    licence=LICENCE,
)
