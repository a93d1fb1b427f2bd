"""``unknown-horizons``: ~20 Ogg sounds under ``content/audio/sounds`` (chapel bells, ship's
bell, lumberjack, sheep field, smithy, stonemason, tavern, windmill), captioned by file name.
Interface cues and the event jingles of ``events/`` are dropped by the table.

Licence: CC-BY-SA-3.0 (Unknown Horizons Team; the lumberjack recordings also by hazure).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.sources import Source
from training.corpus.sources.common import clip_from_rules, sound_files

PACKAGE = "unknown-horizons"
SOUND_DIR = "usr/share/unknown-horizons/content/audio/sounds"
LICENCE = "CC-BY-SA-3.0"
AUTHOR = "Unknown Horizons Team"
# Files with their own entry in the Debian copyright file: name prefix -> (author, group).
FILE_CREDITS: dict[str, tuple[str, str]] = {"lumberjack": ("hazure, Unknown Horizons Team", "lumberjack")}


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    base = root / SOUND_DIR
    for path in sound_files(base):
        relative = path.relative_to(base).as_posix()
        author, group = next(
            (value for prefix, value in FILE_CREDITS.items() if relative.startswith(prefix)), (AUTHOR, None)
        )
        yield clip_from_rules(
            PACKAGE, relative, rules, LICENCE, author, path=path, group=group, original_name=f"{SOUND_DIR}/{relative}"
        )


SOURCE = Source(
    package=PACKAGE,
    tier=2,
    patterns=(f"./{SOUND_DIR}/*",),
    parse=parse,
    licence=LICENCE,
)
