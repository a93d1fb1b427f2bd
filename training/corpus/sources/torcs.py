"""``torcs-data``: 45 WAV sounds of racing cars (engines, crashes, skids, backfire, turbo)."""

from __future__ import annotations

from training.corpus.sources import Source
from training.corpus.sources.common import tree_parser

PACKAGE = "torcs-data"
SOUND_DIR = "usr/share/games/torcs/data/sound"
LICENCE = "GPL-2+"

SOURCE = Source(
    package=PACKAGE,
    tier=2,
    patterns=(f"./{SOUND_DIR}/*",),
    parse=tree_parser(PACKAGE, SOUND_DIR, LICENCE),
    licence=LICENCE,
)
