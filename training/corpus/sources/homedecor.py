"""``minetest-mod-homedecor``: 13 household sounds (toilet, shower, faucet, doorbell ...)."""

from __future__ import annotations

from training.corpus.sources import Source
from training.corpus.sources.common import tree_parser

PACKAGE = "minetest-mod-homedecor"
SOUND_DIR = "usr/share/games/minetest/mods/homedecor"
LICENCE = "CC-BY-SA-4.0"

SOURCE = Source(
    package=PACKAGE,
    tier=2,
    patterns=(f"./{SOUND_DIR}/*/sounds/*.ogg",),
    parse=tree_parser(PACKAGE, SOUND_DIR, LICENCE),
    licence=LICENCE,
)
