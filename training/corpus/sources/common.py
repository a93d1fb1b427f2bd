"""Helpers shared by the package parsers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from training.corpus.captions import CaptionRule, load_rules, match
from training.corpus.clip import Dropped, SourceClip
from training.corpus.grouping import default_group
from training.corpus.sources import Source

log = logging.getLogger(__name__)

SOUND_SUFFIXES: frozenset[str] = frozenset({".ogg", ".wav", ".flac"})


def sound_files(base: Path, suffixes: frozenset[str] = SOUND_SUFFIXES) -> list[Path]:
    """All sound files under ``base`` (by suffix, ``suffixes``), sorted (so every run sees the same order)."""
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def clip_from_rules(
    package: str,
    name: str,
    rules: list[CaptionRule],
    licence: str,
    author: str | None,
    *,
    path: Path | None = None,
    data: bytes | None = None,
    group: str | None = None,
    original_name: str | None = None,
) -> SourceClip | Dropped:
    """Look ``name`` up in the caption table and build the clip (or the drop record).

    ``name`` is what the rules see (path relative to the sound folder); ``original_name``
    (default: ``name``) is what the manifest records.
    """
    found = match(rules, name)
    original = original_name or name
    if found.dropped or found.rule is None:
        return Dropped(package, original, found.reason)
    rule = found.rule
    return SourceClip(
        package=package,
        original_name=original,
        captions=list(rule.captions),
        licence=licence,
        author=author,
        group=group or default_group(name),
        esc50=rule.esc50,
        path=path,
        data=data,
        cap_key=rule.key if rule.cap is not None else None,
        cap=rule.cap,
    )


def clips_from_tree(
    package: str,
    root: Path,
    sound_dir: str,
    rules: list[CaptionRule],
    licence: str,
    author: str | None = None,
    files: Iterable[Path] | None = None,
) -> Iterator[SourceClip | Dropped]:
    """Caption every sound file under ``root/sound_dir`` by its relative path.

    The manifest keeps the full path inside the package (``sound_dir/<relative>``).
    """
    base = root / sound_dir
    for path in files if files is not None else sound_files(base):
        relative = path.relative_to(base).as_posix()
        yield clip_from_rules(
            package,
            relative,
            rules,
            licence,
            author,
            path=path,
            original_name=f"{sound_dir}/{relative}",
        )


def tree_parser(
    package: str,
    sound_dir: str,
    licence: str,
    author: str | None = None,
    skip: Callable[[str], bool] | None = None,
    suffixes: frozenset[str] = SOUND_SUFFIXES,
) -> Callable[[Path], Iterator[SourceClip | Dropped]]:
    """A parser for packages whose sounds are plain files captioned by their path.

    ``skip(relative)`` leaves a file out silently (e.g. music folders); ``suffixes``: the file
    suffixes that are sounds (:func:`sound_files`).
    """

    def parse(root: Path) -> Iterator[SourceClip | Dropped]:
        rules = load_rules(package)
        files = [
            p for p in sound_files(root / sound_dir, suffixes)
            if skip is None or not skip(p.relative_to(root / sound_dir).as_posix())
        ]
        yield from clips_from_tree(package, root, sound_dir, rules, licence, author, files)

    return parse


def tree_source(package: str, tier: int, sound_dir: str, licence: str, author: str | None = None,
                patterns: tuple[str, ...] = ("*",), suffixes: frozenset[str] = SOUND_SUFFIXES) -> Source:
    """The :class:`Source` of a package whose sounds are plain files under ``sound_dir``, captioned by
    their path (:func:`tree_parser`); ``patterns`` are tar wildcards relative to ``sound_dir``."""
    return Source(package=package, tier=tier, patterns=tuple(f"./{sound_dir}/{p}" for p in patterns),
                  parse=tree_parser(package, sound_dir, licence, author, suffixes=suffixes), licence=licence)
