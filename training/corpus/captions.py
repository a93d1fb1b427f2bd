"""Reviewed name → caption tables (``captions/<package>.csv``).

Each table has the columns ``pattern,esc50,cap,captions``:

* ``pattern`` — a regular expression searched (``re.search``) in the lower-cased name of
  the sound inside the package (a path relative to the package's sound folder, or the
  OpenSFX title); the **first** matching row wins;
* ``esc50`` — an ESC-50 class name, or empty;
* ``cap`` — the most clips this row may contribute per package (empty: no cap); used for
  the footstep / bird / vocalisation families that would otherwise dominate;
* ``captions`` — ``|``-separated natural English sentences, or ``DROP: <reason>`` to skip
  the sound (speech, music, interface beeps, magic, unclear content).

A sound that matches no row is dropped, so every caption in the corpus was written or
reviewed by hand.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from training.corpus.clip import ESC50_CLASSES

DROP_PREFIX = "DROP"


@dataclass(frozen=True)
class CaptionRule:
    """One row of a caption table."""

    pattern: re.Pattern[str]
    esc50: str | None
    cap: int | None
    captions: tuple[str, ...]
    drop_reason: str | None
    row: int

    @property
    def key(self) -> str:
        """Identifies the row (for per-row caps)."""
        return f"row{self.row}:{self.pattern.pattern}"


@dataclass(frozen=True)
class CaptionMatch:
    """The outcome of looking a name up: captions, or a drop reason."""

    rule: CaptionRule | None

    @property
    def dropped(self) -> bool:
        return self.rule is None or self.rule.drop_reason is not None

    @property
    def reason(self) -> str:
        if self.rule is None:
            return "no caption rule"
        return self.rule.drop_reason or ""


def parse_rules(lines: list[str], source: str = "<table>") -> list[CaptionRule]:
    """Parse the CSV text of a caption table (header ``pattern,esc50,cap,captions``)."""
    reader = csv.DictReader(line for line in lines if line.strip() and not line.lstrip().startswith("#"))
    rules: list[CaptionRule] = []
    for index, record in enumerate(reader, start=2):
        try:
            pattern = re.compile(record["pattern"].strip())
        except re.error as exc:  # pragma: no cover - caught by the table tests
            raise ValueError(f"{source}:{index}: bad pattern {record['pattern']!r}: {exc}") from exc
        esc50 = (record.get("esc50") or "").strip() or None
        if esc50 is not None and esc50 not in ESC50_CLASSES:
            raise ValueError(f"{source}:{index}: unknown ESC-50 class {esc50!r}")
        cap_text = (record.get("cap") or "").strip()
        text = (record.get("captions") or "").strip()
        if not text:
            raise ValueError(f"{source}:{index}: empty captions")
        drop_reason = None
        captions: tuple[str, ...] = ()
        if text.startswith(DROP_PREFIX):
            drop_reason = text[len(DROP_PREFIX):].lstrip(": ").strip() or "dropped"
        else:
            captions = tuple(c.strip() for c in text.split("|") if c.strip())
        rules.append(
            CaptionRule(
                pattern=pattern,
                esc50=esc50,
                cap=int(cap_text) if cap_text else None,
                captions=captions,
                drop_reason=drop_reason,
                row=index,
            )
        )
    return rules


def load_rules(package: str, directory: Path | None = None) -> list[CaptionRule]:
    """Load ``captions/<package>.csv`` shipped with this module (or from ``directory``)."""
    if directory is not None:
        path = directory / f"{package}.csv"
        return parse_rules(path.read_text(encoding="utf-8").splitlines(), str(path))
    resource = resources.files("training.corpus").joinpath("captions", f"{package}.csv")
    return parse_rules(resource.read_text(encoding="utf-8").splitlines(), f"captions/{package}.csv")


def match(rules: list[CaptionRule], name: str) -> CaptionMatch:
    """The first rule whose pattern occurs in the lower-cased ``name``."""
    lowered = name.lower()
    for rule in rules:
        if rule.pattern.search(lowered):
            return CaptionMatch(rule)
    return CaptionMatch(None)
