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

    The items are shuffled with ``rng``; then, in that order, each item goes to the *first*
    batch (in creation order) that has room and holds none of its keys, or opens a new batch.
    This first-fit rule gives exactly the batches of the original multi-pass algorithm
    (:func:`group_batches_reference`: fill batch 1 by one scan of the shuffled items, batch 2 by a
    scan of the rest, …), because each pass scans the remaining items in the same order; the tests
    check the equality on large random inputs.

    Cost: the batches that still have room are linked by a disjoint-set "next open batch"
    pointer (path halving), and each key maps to the set of batches holding it, so placing an
    item costs O(|keys|) per open batch it has to skip (one that holds one of its keys): about
    O(n · |keys|) for real data (1M items in seconds, see ``benchmarks/input_pipeline.py``), and
    never more than the quadratic reference.

    Args:
        keys: per item, the set of keys that must be unique within a batch.
        batch_size: target batch size.
        rng: random source (the order is a function of its state; one ``shuffle`` call).
        min_size: batches smaller than this are dropped (a batch of one has no negatives).

    Returns:
        lists of item indices, in batch creation order, items in placement order.
    """
    order = list(range(len(keys)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    holders: dict[str, set[int]] = {}  # key -> the batches that hold it
    # next_open[b] == b while batch b has room; a full batch links towards a later one. Index
    # len(batches) stands for the batch that does not exist yet (always open).
    next_open: list[int] = [0]
    holding = holders.get
    for i in order:
        item_keys = keys[i]
        held = [h for h in map(holding, item_keys) if h is not None]
        b = 0
        while True:
            while next_open[b] != b:  # find the first open batch >= b, halving the path
                next_open[b] = next_open[next_open[b]]
                b = next_open[b]
            if b == len(batches) or not any(b in h for h in held):
                break
            b += 1
        if b == len(batches):
            batches.append([])
            next_open.append(b + 1)
        batches[b].append(i)
        for k in item_keys:
            h = holding(k)
            if h is None:
                holders[k] = {b}
            else:
                h.add(b)
        if len(batches[b]) >= batch_size:
            next_open[b] = b + 1
    return [b for b in batches if len(b) >= min_size]


def group_batches_reference(
    keys: Sequence[set[str]], batch_size: int, rng: random.Random, min_size: int = 2
) -> list[list[int]]:
    """The original multi-pass algorithm (quadratic: one scan of the remaining items per batch),
    kept as the specification :func:`group_batches` is tested against and benchmarked with."""
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
