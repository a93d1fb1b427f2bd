"""``wesnoth-1.16-data``: real-world sounds under ``data/core/sounds`` (wolf, horse, bow,
axe, birds, campfire, night ...); magic, monster and voice sounds are dropped by the table.
The interface sounds of ``sounds/`` are not extracted.
"""

from __future__ import annotations

from training.corpus.sources.common import tree_source

PACKAGE = "wesnoth-1.16-data"
SOUND_DIR = "usr/share/games/wesnoth/1.16/data/core/sounds"
LICENCE = "GPL-2+"

SOURCE = tree_source(PACKAGE, 2, SOUND_DIR, LICENCE, "Battle for Wesnoth contributors")
