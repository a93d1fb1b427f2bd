"""``lincity-ng-data``: 141 WAV sounds named only by the building they play for
(RailTrain, TraficHigh, SportsCroud, Farm ...); ``captions/lincity-ng-data.csv`` maps the
building names to captions by hand and drops the ones whose sound is not clear.
"""

from __future__ import annotations

from training.corpus.sources.common import tree_source

PACKAGE = "lincity-ng-data"
SOUND_DIR = "usr/share/games/lincity-ng/sounds"
LICENCE = "GPL-2+"

SOURCE = tree_source(PACKAGE, 2, SOUND_DIR, LICENCE)
