"""Group batching: the first-fit algorithm gives exactly the batches of the original multi-pass
one, keeps the constraints and is deterministic (its speed: benchmarks/input_pipeline.py)."""

from __future__ import annotations

import random

import pytest

from training.batching import group_batches, group_batches_reference


def random_keys(rng: random.Random, n: int, groups: int, captions: int, shared: float = 0.02) -> list[set[str]]:
    """Items with a recording group, a caption and, for a few, an extra key shared widely."""
    keys = []
    for _ in range(n):
        item = {f"grp:{rng.randrange(groups)}", f"cap:{rng.randrange(captions)}"}
        if rng.random() < shared:
            item.add(f"lang:{rng.randrange(4)}")
        keys.append(item)
    return keys


def check_constraints(keys: list[set[str]], batches: list[list[int]], batch_size: int, min_size: int = 2) -> None:
    placed = [i for b in batches for i in b]
    assert len(placed) == len(set(placed)), "an item is in two batches"
    for batch in batches:
        assert min_size <= len(batch) <= batch_size
        seen: set[str] = set()
        for i in batch:
            assert not keys[i] & seen, f"batch {batch} holds two items sharing {keys[i] & seen}"
            seen |= keys[i]


def test_equals_the_original_algorithm_on_random_inputs() -> None:
    rng = random.Random(1)
    for case in range(400):
        n = rng.randint(0, 300)
        keys = random_keys(rng, n, groups=rng.randint(1, 80), captions=rng.randint(1, 300), shared=rng.random() * 0.2)
        batch_size = rng.randint(2, 40)
        min_size = rng.randint(1, 3)
        fast = group_batches(keys, batch_size, random.Random(case), min_size)
        slow = group_batches_reference(keys, batch_size, random.Random(case), min_size)
        assert fast == slow, f"case {case}: n={n}, batch_size={batch_size}"


@pytest.mark.parametrize(("groups", "captions"), [(3000, 8000), (50, 10_000), (6000, 200)])
def test_equal_and_valid_on_larger_inputs(groups: int, captions: int) -> None:
    keys = random_keys(random.Random(groups), 10_000, groups, captions)
    fast = group_batches(keys, 64, random.Random(5))
    assert fast == group_batches_reference(keys, 64, random.Random(5))
    check_constraints(keys, fast, 64)


def test_constraints_and_determinism_at_scale() -> None:
    keys = random_keys(random.Random(0), 200_000, groups=70_000, captions=150_000)
    a = group_batches(keys, 128, random.Random(3))
    check_constraints(keys, a, 128)
    assert a == group_batches(keys, 128, random.Random(3))
    assert a != group_batches(keys, 128, random.Random(4))
    assert sum(map(len, a)) > 0.99 * len(keys)  # only the tail's leftovers are dropped


def test_rng_state_after_the_call_is_unchanged_by_the_rewrite() -> None:
    """Callers draw from the same rng afterwards: both versions consume exactly one shuffle."""
    keys = random_keys(random.Random(2), 500, 100, 400)
    r1, r2 = random.Random(9), random.Random(9)
    group_batches(keys, 16, r1)
    group_batches_reference(keys, 16, r2)
    assert r1.random() == r2.random()


def test_a_key_shared_by_every_item_gives_singletons_that_are_dropped() -> None:
    keys = [{"grp:same", f"cap:{i}"} for i in range(50)]
    assert group_batches(keys, 8, random.Random(0)) == []
    assert [len(b) for b in group_batches(keys, 8, random.Random(0), min_size=1)] == [1] * 50
