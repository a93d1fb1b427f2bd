"""One parser module per Debian source package.

Every module defines ``SOURCE``, a :class:`Source`: the package name, its tier, the tar
wildcards that select its sounds, an optional ``prepare`` step run once after extraction
(unpacking an inner archive), and ``parse(root)`` which yields a :class:`SourceClip` or a
:class:`Dropped` record for every sound it sees in the extracted tree ``root``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from training.corpus.clip import Dropped, SourceClip

Parser = Callable[[Path], Iterator[SourceClip | Dropped]]


@dataclass(frozen=True)
class Source:
    """How to obtain and read one package."""

    package: str
    tier: int
    patterns: tuple[str, ...]
    parse: Parser
    licence: str
    prepare: Callable[[Path], None] | None = None
    extra_debs: tuple[str, ...] = ()


MODULES: dict[str, str] = {
    "0ad-data": "zero_ad",
    "openttd-opensfx": "opensfx",
    "tuxpaint-stamps-default": "tuxpaint",
    "widelands-data": "widelands",
    "hedgewars-data": "hedgewars",
    "supertuxkart-data": "supertuxkart",
    "minetest-data": "minetest",
    "minetest-mod-homedecor": "homedecor",
    "wesnoth-1.16-data": "wesnoth",
    "torcs-data": "torcs",
    "megaglest-data": "megaglest",
    "lincity-ng-data": "lincity",
    "flightgear-data-base": "flightgear",
    "openclonk-data": "openclonk",
    "unknown-horizons": "unknown_horizons",
    "freeciv-data": "freeciv",
    # Tier 3 (issue 14): real recordings of everyday sounds.
    "scratch": "scratch",
    "scorched3d-data": "scorched3d",
    "lugaru-data": "lugaru",
    "simutrans-pak64": "simutrans",
}


def get_source(package: str) -> Source:
    """The :class:`Source` of a package (imports its module on demand)."""
    if package not in MODULES:
        raise KeyError(f"unknown package {package!r}; known: {', '.join(MODULES)}")
    name = f"training.corpus.sources.{MODULES[package]}"
    if importlib.util.find_spec(name) is None:
        raise KeyError(f"{package!r} has no parser yet; available: {', '.join(available_packages())}")
    module = importlib.import_module(name)
    source: Source = module.SOURCE
    return source


def available_packages() -> list[str]:
    """Packages whose parser module exists in this checkout, in table order."""
    found = []
    for package, module in MODULES.items():
        if importlib.util.find_spec(f"training.corpus.sources.{module}") is not None:
            found.append(package)
    return found
