"""Recording groups: cuts of one original recording share a group id."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

_TRAILING_NUMBER = re.compile(r"(?:[ _\-.]?\(?\d{1,3}\)?|[_\-][a-z])$")


def stem_family(name: str) -> str:
    """The family of a file name: the stem without its extension and one trailing cut number.

    ``sawing_00.ogg`` → ``sawing``; ``crash2.ogg`` → ``crash``; ``bird1_00.ogg`` → ``bird1``
    (only one number is removed, so ``bird1`` and ``bird2`` stay apart);
    ``Toyland: Sugar mine (2)`` → ``toyland: sugar mine``.
    """
    stem = PurePosixPath(name).name
    if "." in stem:
        stem = stem.rsplit(".", 1)[0]
    stem = stem.lower().strip()
    family = _TRAILING_NUMBER.sub("", stem).strip()
    return family or stem


def default_group(original_name: str) -> str:
    """Folder plus stem family, e.g. ``saw/sawing`` for ``data/sound/saw/sawing_01.ogg``."""
    path = PurePosixPath(original_name)
    parent = path.parent.name.lower()
    family = stem_family(path.name)
    return f"{parent}/{family}" if parent else family


def slug(text: str) -> str:
    """A file-name-safe lower-case identifier."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"
