"""``minetest-data``: ~108 short sounds of the ``minetest_game`` mods (footsteps, doors,
glass, fire, water, lava, digging, tools, explosion, cart), captioned by file name.

Licence: CC-BY-SA-3.0 (the mods' README files credit individual sounds; some CC-BY-3.0 / CC0).
"""

from __future__ import annotations

from training.corpus.sources import Source
from training.corpus.sources.common import tree_parser

PACKAGE = "minetest-data"
SOUND_DIR = "usr/share/games/minetest/games/minetest_game/mods"
LICENCE = "CC-BY-SA-3.0"

SOURCE = Source(
    package=PACKAGE,
    tier=2,
    patterns=(f"./{SOUND_DIR}/*/sounds/*.ogg", f"./{SOUND_DIR}/*/README*", f"./{SOUND_DIR}/*/license*"),
    parse=tree_parser(PACKAGE, SOUND_DIR, LICENCE, "Minetest Game contributors"),
    licence=LICENCE,
)
