"""``scorched3d-data``: the WAV sounds of Scorched3D's two built-in mods under
``data/globalmods/<mod>/data/wav/``.

* ``none`` (the base game; GPL-2+, Gavin Camp): kept are the ambiences and animals (birds,
  frogs, gulls, bats, a wolf, ocean waves, rain, thunder), aircraft (fighter jets, a
  helicopter), a camera shutter, a splash, explosions and cannon shots; shields, lasers,
  teleports, beeps and the turret motors are dropped by the table.
* ``apoc`` (the Apocalypse mod; CC-BY-SA-3.0 in the Debian copyright) is dropped whole: its
  ``authors.txt`` says that apart from a few weapon sounds its author "obtained the rest from
  various sources on the net", so the recordings' origin and licence are unknown (the same
  rule as Widelands' rows of unknown licence).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.sources import Source
from training.corpus.sources.common import clip_from_rules, sound_files

PACKAGE = "scorched3d-data"
MODS_DIR = "usr/share/games/scorched3d/data/globalmods"
LICENCE = "GPL-2+"
AUTHOR = "Gavin Camp (Scorched3D)"
UNKNOWN_ORIGIN: dict[str, str] = {
    "apoc": "unknown origin: the Apocalypse mod's authors.txt says its sounds were obtained "
    "from various sources on the net",
}


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    base = root / MODS_DIR
    for path in sound_files(base):
        relative = path.relative_to(base).as_posix()  # <mod>/data/wav/<folder>/<name>.wav
        original = f"{MODS_DIR}/{relative}"
        mod = relative.split("/", 1)[0]
        if mod in UNKNOWN_ORIGIN:
            yield Dropped(PACKAGE, original, UNKNOWN_ORIGIN[mod])
            continue
        yield clip_from_rules(PACKAGE, relative, rules, LICENCE, AUTHOR, path=path, original_name=original)


SOURCE = Source(
    package=PACKAGE,
    tier=3,
    patterns=(f"./{MODS_DIR}/*/data/wav/*",),
    parse=parse,
    licence=LICENCE,
)
