"""``lincity-ng-data``: 141 WAV sounds named only by the building they play for
(RailTrain, TraficHigh, SportsCroud, Farm ...); ``captions/lincity-ng-data.csv`` maps the
building names to captions by hand and drops the ones whose sound is not clear.
"""

from __future__ import annotations

from training.corpus.sources import Source
from training.corpus.sources.common import tree_parser

PACKAGE = "lincity-ng-data"
SOUND_DIR = "usr/share/games/lincity-ng/sounds"
LICENCE = "GPL-2+"

SOURCE = Source(
    package=PACKAGE,
    tier=2,
    patterns=(f"./{SOUND_DIR}/*",),
    parse=tree_parser(PACKAGE, SOUND_DIR, LICENCE),
    licence=LICENCE,
)
