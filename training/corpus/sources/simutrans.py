"""``simutrans-pak64``: 24 WAV sounds of the Simutrans pak64 set under ``pak/sound/``: a
chainsaw felling a tree, a circular saw, a jackhammer, a horse, seagulls, a ship's horn, a
level-crossing bell, road vehicles, aircraft, a steam locomotive and climate ambiences
(arctic wind, desert insects, forest and tropical birds). Interface cues are dropped.

Licence: Artistic-1.0 (Debian copyright: © 1997-2004 Hansjoerg Malthaner).
"""

from __future__ import annotations

from training.corpus.sources.common import tree_source

PACKAGE = "simutrans-pak64"
SOUND_DIR = "usr/share/games/simutrans/pak/sound"
LICENCE = "Artistic-1.0"
AUTHOR = "Hansjoerg Malthaner (Simutrans pak64)"

SOURCE = tree_source(PACKAGE, 3, SOUND_DIR, LICENCE, AUTHOR)
