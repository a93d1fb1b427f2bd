"""``0ad-data``: ~750 Ogg sounds under ``audio/`` inside ``mods/public/public.zip``.

Music, voices and interface sounds are skipped; the rest is captioned by folder and file
name (``captions/0ad-data.csv``). Licence: CC-BY-SA-3.0, Wildfire Games (``audio/LICENSE.txt``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

from training.corpus.captions import load_rules
from training.corpus.clip import Dropped, SourceClip
from training.corpus.sources import Source
from training.corpus.sources.common import clip_from_rules, sound_files

PACKAGE = "0ad-data"
ZIP_PATH = "usr/share/games/0ad/mods/public/public.zip"
AUDIO_DIR = "audio"
SKIPPED_FOLDERS = ("audio/music/", "audio/voice/", "audio/interface/")
LICENCE = "CC-BY-SA-3.0"
AUTHOR = "Wildfire Games"


def unpack_audio(root: Path) -> None:
    """Copy the wanted ``audio/**`` members out of ``public.zip``, then delete the zip."""
    archive = root / ZIP_PATH
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.namelist():
            if not member.startswith(AUDIO_DIR + "/") or member.startswith(SKIPPED_FOLDERS):
                continue
            if not member.lower().endswith((".ogg", ".wav", ".txt")):
                continue
            bundle.extract(member, root)
    archive.unlink()


def parse(root: Path) -> Iterator[SourceClip | Dropped]:
    rules = load_rules(PACKAGE)
    base = root / AUDIO_DIR
    for path in sound_files(base):
        relative = path.relative_to(base).as_posix()
        if f"{AUDIO_DIR}/{relative}".startswith(SKIPPED_FOLDERS):
            continue
        yield clip_from_rules(
            PACKAGE,
            relative,
            rules,
            LICENCE,
            AUTHOR,
            path=path,
            original_name=f"{ZIP_PATH}:{AUDIO_DIR}/{relative}",
        )


SOURCE = Source(
    package=PACKAGE,
    tier=1,
    patterns=(f"./{ZIP_PATH}",),
    parse=parse,
    licence=LICENCE,
    prepare=unpack_audio,
)
