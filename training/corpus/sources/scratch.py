"""``scratch``: the sound library of Scratch 1.4 under ``Media/Sounds/<category>/``: 91 short
WAV and MP3 recordings. Kept: the animals (dogs, cats, rooster, crickets, horse, owl ...), the
human sounds (a baby crying, coughs, sneezes, laughter, screams, footsteps, a slurp, a finger
snap) and the everyday effects (typing, a creaking door, a water drop, running water, a bell).
The table drops the instruments, percussion, music loops, sung vocals and electronic effects.

Licence: the Debian copyright gives ``Media/*`` as CC-BY-SA-3.0 (© 2011 Massachusetts
Institute of Technology). libsndfile decodes the MP3 files, so they are read like the WAVs.
"""

from __future__ import annotations

from training.corpus.sources.common import SOUND_SUFFIXES, tree_source

PACKAGE = "scratch"
SOUND_DIR = "usr/share/scratch/Media/Sounds"
LICENCE = "CC-BY-SA-3.0"
AUTHOR = "Massachusetts Institute of Technology (Scratch 1.4)"

SOURCE = tree_source(PACKAGE, 3, SOUND_DIR, LICENCE, AUTHOR, suffixes=SOUND_SUFFIXES | {".mp3"})
