"""``minetest-data``: ~108 short sounds of the ``minetest_game`` mods (footsteps, doors,
glass, fire, water, lava, digging, tools, explosion, cart), captioned by file name.

Licence: CC-BY-SA-3.0 (the mods' README files credit individual sounds; some CC-BY-3.0 / CC0).
"""

from __future__ import annotations

from training.corpus.sources.common import tree_source

PACKAGE = "minetest-data"
SOUND_DIR = "usr/share/games/minetest/games/minetest_game/mods"
LICENCE = "CC-BY-SA-3.0"

SOURCE = tree_source(PACKAGE, 2, SOUND_DIR, LICENCE, "Minetest Game contributors",
                     patterns=("*/sounds/*.ogg", "*/README*", "*/license*"))
