"""``flightgear-data-base``: ~145 aircraft and weather sounds under ``Sounds/`` and
``Aircraft/*/Sounds/`` (engines, propellers, turbines, rotors, thunder, rain on the
windshield, wind, tyres, doors, windows, keys, switches, water).

Only ``*/Sounds/*`` is extracted from the 1.3 GB package. The cockpit voice alerts
(``Sounds/mk-viii``, ``Sounds/tcas``, the C172P checklists) and the music of ``intro.mp3``
are left out; the remaining files are captioned by path (``captions/flightgear-data-base.csv``).
Licence: GPL-2+ (FlightGear contributors).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.grouping import stem_family
from training.corpus.sources import Source
from training.corpus.sources.common import clip_from_rules, sound_files

PACKAGE = "flightgear-data-base"
DATA_DIR = "usr/share/games/flightgear"
LICENCE = "GPL-2+"
AUTHOR = "FlightGear contributors"


def sound_dirs(base: Path) -> list[Path]:
    """``Sounds/`` and every ``Aircraft/<name>/Sounds/`` folder, sorted."""
    found = [base / "Sounds"] + sorted((base / "Aircraft").glob("*/Sounds"))
    return [path for path in found if path.is_dir()]


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    base = root / DATA_DIR
    for folder in sound_dirs(base):
        for path in sound_files(folder):
            relative = path.relative_to(base).as_posix()
            # Folder + stem family, so that Sounds/click and Aircraft/c172p/Sounds/click stay apart.
            group = f"{path.parent.relative_to(base).as_posix().lower()}/{stem_family(path.name)}"
            yield clip_from_rules(
                PACKAGE, relative, rules, LICENCE, AUTHOR,
                path=path, group=group, original_name=f"{DATA_DIR}/{relative}",
            )
        for path in sorted(folder.rglob("*.mp3")):
            yield Dropped(PACKAGE, f"{DATA_DIR}/{path.relative_to(base).as_posix()}", "music (intro theme)")


SOURCE = Source(
    package=PACKAGE,
    tier=2,
    patterns=(f"./{DATA_DIR}/Sounds/*", f"./{DATA_DIR}/Aircraft/*/Sounds/*"),
    parse=parse,
    licence=LICENCE,
)
