"""``lugaru-data``: 71 Ogg sounds of Lugaru HD under ``Sounds/``. Kept: dog barks, growls and
snarls, footsteps on grass, snow and stone, a crackling fire, wind and desert ambiences, a
hawk, rustling bushes, knives drawn and sheathed, metal clanks. The music, the interface
cues, the rabbit-warrior voices, whooshes and the combat hits are dropped by the table.

Licence: CC-BY-SA-3.0 (Debian copyright: ``Data/*`` © 2003, 2010 Wolfire Games).
"""

from __future__ import annotations

from training.corpus.sources.common import tree_source

PACKAGE = "lugaru-data"
SOUND_DIR = "usr/share/games/lugaru/Sounds"
LICENCE = "CC-BY-SA-3.0"
AUTHOR = "Wolfire Games"

SOURCE = tree_source(PACKAGE, 3, SOUND_DIR, LICENCE, AUTHOR)
