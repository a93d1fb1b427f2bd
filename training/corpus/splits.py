"""Deterministic train / validation / test assignment by recording group."""

from __future__ import annotations

import hashlib

from training.corpus.clip import SPLITS

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
DEFAULT_SEED = "atr-corpus-v1"


def group_unit(group: str, seed: str = DEFAULT_SEED) -> float:
    """A number in [0, 1) that depends only on ``seed`` and ``group`` (SHA-256 based)."""
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_for_group(
    group: str,
    seed: str = DEFAULT_SEED,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> str:
    """The split of a recording group.

    Hashing each group on its own (rather than shuffling the list of groups) keeps a group's
    split stable when packages are added or removed, and makes re-runs identical.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    u = group_unit(group, seed)
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        edge += fraction
        if u < edge:
            return name
    return SPLITS[-1]


def assign_splits(groups: list[str], seed: str = DEFAULT_SEED) -> dict[str, str]:
    """Split of every distinct group in ``groups``."""
    return {group: split_for_group(group, seed) for group in sorted(set(groups))}
