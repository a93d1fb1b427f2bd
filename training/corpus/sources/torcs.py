"""``torcs-data``: 45 WAV sounds of racing cars (engines, crashes, skids, backfire, turbo)."""

from __future__ import annotations

from training.corpus.sources.common import tree_source

PACKAGE = "torcs-data"
SOUND_DIR = "usr/share/games/torcs/data/sound"
LICENCE = "GPL-2+"

SOURCE = tree_source(PACKAGE, 2, SOUND_DIR, LICENCE)
