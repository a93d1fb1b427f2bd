"""``tuxpaint-stamps-default``: ~110 short sound effects next to the stamp pictures.

The ``<name>.txt`` captions describe the picture, so captions come from the reviewed table
``captions/tuxpaint-stamps-default.csv`` instead. ``symbols/`` (spoken letters) and the
spoken ``*_desc*`` files are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.sources import Source
from training.corpus.sources.common import clip_from_rules, sound_files

PACKAGE = "tuxpaint-stamps-default"
STAMPS_DIR = "usr/share/tuxpaint/stamps"
LICENCE = "GPL-2+"


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    base = root / STAMPS_DIR
    for path in sound_files(base):
        relative = path.relative_to(base).as_posix()
        if relative.startswith("symbols/") or "_desc" in path.name:
            continue
        yield clip_from_rules(
            PACKAGE, relative, rules, LICENCE, None, path=path, original_name=f"{STAMPS_DIR}/{relative}"
        )


SOURCE = Source(
    package=PACKAGE,
    tier=1,
    patterns=(f"./{STAMPS_DIR}/*.ogg", f"./{STAMPS_DIR}/*.wav"),
    parse=parse,
    licence=LICENCE,
)
