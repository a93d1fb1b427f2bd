"""``minetest-mod-homedecor``: 13 household sounds (toilet, shower, faucet, doorbell ...)."""

from __future__ import annotations

from training.corpus.sources.common import tree_source

PACKAGE = "minetest-mod-homedecor"
SOUND_DIR = "usr/share/games/minetest/mods/homedecor"
LICENCE = "CC-BY-SA-4.0"

SOURCE = tree_source(PACKAGE, 2, SOUND_DIR, LICENCE, patterns=("*/sounds/*.ogg",))
