"""Data types shared by the package parsers and the build step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ESC50_CLASSES: frozenset[str] = frozenset(
    """
    dog rooster pig cow frog cat hen insects sheep crow
    rain sea_waves crackling_fire crickets chirping_birds water_drops wind pouring_water
    toilet_flush thunderstorm crying_baby sneezing clapping breathing coughing footsteps
    laughing brushing_teeth snoring drinking_sipping door_wood_knock mouse_click
    keyboard_typing door_wood_creaks can_opening washing_machine vacuum_cleaner clock_alarm
    clock_tick glass_breaking helicopter chainsaw siren car_horn engine train church_bells
    airplane fireworks hand_saw
    """.split()
)

SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass
class SourceClip:
    """One sound file found in a package, before conversion.

    ``path`` is the extracted file on disk; ``data`` holds the bytes instead for sounds that
    live inside a container (OpenSFX). ``group`` is the recording group before the package
    prefix is added (cuts of one recording share it).
    """

    package: str
    original_name: str
    captions: list[str]
    licence: str
    author: str | None
    group: str
    esc50: str | None = None
    path: Path | None = None
    data: bytes | None = None
    cap_key: str | None = None
    cap: int | None = None

    def __post_init__(self) -> None:
        if not self.captions:
            raise ValueError(f"{self.package}:{self.original_name}: no caption")
        if self.esc50 is not None and self.esc50 not in ESC50_CLASSES:
            raise ValueError(f"{self.package}:{self.original_name}: unknown ESC-50 class {self.esc50!r}")
        if (self.path is None) == (self.data is None):
            raise ValueError(f"{self.package}:{self.original_name}: give exactly one of path or data")


@dataclass
class ManifestRow:
    """One line of ``manifest.jsonl`` (a whole clip or one segment of a long recording)."""

    clip_id: str
    audio: str
    captions: list[str]
    original_name: str
    package: str
    licence: str
    author: str | None
    group: str
    split: str
    esc50: str | None
    duration_s: float
    start_s: float
    speech: bool = False

    def to_json_dict(self) -> dict[str, object]:
        """Manifest keys in a fixed order."""
        return {
            "clip_id": self.clip_id,
            "audio": self.audio,
            "captions": list(self.captions),
            "original_name": self.original_name,
            "package": self.package,
            "licence": self.licence,
            "author": self.author,
            "group": self.group,
            "split": self.split,
            "esc50": self.esc50,
            "duration_s": round(self.duration_s, 3),
            "start_s": round(self.start_s, 3),
            "speech": self.speech,
        }


@dataclass(frozen=True)
class Dropped:
    """A sound that a parser saw and skipped, with the reason (reported in ``dropped.csv``)."""

    package: str
    original_name: str
    reason: str
