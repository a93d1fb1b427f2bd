"""``scratch``: the sound library of Scratch 1.4 under ``Media/Sounds/<category>/``: 91 short
WAV and MP3 recordings. Kept: the animals (dogs, cats, rooster, crickets, horse, owl ...), the
human sounds (a baby crying, coughs, sneezes, laughter, screams, footsteps, a slurp, a finger
snap) and the everyday effects (typing, a creaking door, a water drop, running water, a bell).
The table drops the instruments, percussion, music loops, sung vocals and electronic effects.

Licence: the Debian copyright gives ``Media/*`` as CC-BY-SA-3.0 (© 2011 Massachusetts
Institute of Technology). libsndfile decodes the MP3 files, so they are read like the WAVs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.sources import Source
from training.corpus.sources.common import SOUND_SUFFIXES, clips_from_tree

PACKAGE = "scratch"
SOUND_DIR = "usr/share/scratch/Media/Sounds"
LICENCE = "CC-BY-SA-3.0"
AUTHOR = "Massachusetts Institute of Technology (Scratch 1.4)"
SUFFIXES: frozenset[str] = SOUND_SUFFIXES | {".mp3"}


def sound_files(base: Path) -> list[Path]:
    """The WAV and MP3 files under ``base``, sorted."""
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    files = sound_files(root / SOUND_DIR)
    yield from clips_from_tree(PACKAGE, root, SOUND_DIR, rules, LICENCE, AUTHOR, files)


SOURCE = Source(
    package=PACKAGE,
    tier=3,
    patterns=(f"./{SOUND_DIR}/*",),
    parse=parse,
    licence=LICENCE,
)
