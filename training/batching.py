"""Batch composition: batches in which no two items share a recording group or a caption
(:func:`group_batches` with :func:`caption_key`), and the group ids of a batch for losses that
take them (:func:`caption_groups`)."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Sequence


def group_batches(keys: Sequence[set[str]], batch_size: int, rng: random.Random, min_size: int = 2) -> list[list[int]]:
    """Shuffle items into batches in which no two items share a key (group or caption).

    Args:
        keys: per item, the set of keys that must be unique within a batch.
        batch_size: target batch size.
        rng: random source (the order is a function of its state).
        min_size: batches smaller than this are dropped (a batch of one has no negatives).

    Returns:
        lists of item indices; an item that cannot be placed in any open batch waits for the next.
    """
    order = list(range(len(keys)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    pending = order
    while pending:
        batch: list[int] = []
        seen: set[str] = set()
        rest = []
        for i in pending:
            if len(batch) < batch_size and not (keys[i] & seen):
                batch.append(i)
                seen |= keys[i]
            else:
                rest.append(i)
        batches.append(batch)
        pending = rest
    return [b for b in batches if len(b) >= min_size]


def caption_key(caption: str) -> str:
    """Normalised caption text used to detect duplicate captions in a batch: case-folded words
    (letters and digits of any script, apostrophes), punctuation and spacing dropped — so
    "A dog barks." and "a dog barks" collide, and so do "Un canard." and "un canard"."""
    return "cap:" + " ".join(re.findall(r"(?:[^\W_]|')+", caption.casefold()))


def caption_groups(captions: Sequence[str], groups: Sequence[str]) -> list[int]:
    """Integer group ids: items sharing a recording group or a normalised caption share an id."""
    parent = list(range(len(captions)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, key in enumerate(zip(captions, groups, strict=True)):
        for k in (caption_key(key[0]), "grp:" + key[1]):
            if k in first:
                parent[find(i)] = find(first[k])
            else:
                first[k] = i
    roots: dict[int, int] = defaultdict(lambda: len(roots))
    return [roots[find(i)] for i in range(len(captions))]
