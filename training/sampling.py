"""Sampling weights of several training datasets (``--data wavcaps:/d/wc@0.3 --data
audiocaps:/d/ac@0.7``, or ``data: [{path: /d/wc, format: wavcaps, weight: 0.3}, …]``).

How weights act (:func:`epoch_items`): an epoch has ``N`` training items (default: as many as
all datasets hold together). With weights ``w_d`` (normalised to sum 1), dataset ``d``
contributes ``n_d = w_d · N`` of them (largest-remainder rounding, so the counts sum to ``N``).
A dataset with fewer items than ``n_d`` is repeated (each item ``⌊n_d/|d|⌋`` or ``⌈n_d/|d|⌉``
times), one with more gives a random subset. Draws are seeded by ``(seed, epoch, d)`` and the
epoch's order by ``(seed, epoch)``: a resumed run sees exactly the items of an uninterrupted one.
Without weights every item is used once per epoch, in its original order.

Items are whatever the pipeline iterates over (clips, or (clip, caption) pairs); each is named
by its dataset key (:attr:`training.datasets.Clip.dataset`, the ``data`` entry without its
weight). Weights apply to datasets that have training items; validation and test are never
sampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from atr_demo.errors import ConfigError

from training.datasets import parse_data_spec


def data_weights(data: Sequence[str]) -> dict[str, float] | None:
    """``dataset key → weight`` of the ``data`` entries, or ``None`` when none has a weight.

    Raises:
        ConfigError: some entries have a weight and others not, or a key appears twice.
    """
    specs = [parse_data_spec(d) for d in data]
    weighted = [s for s in specs if s.weight is not None]
    if not weighted:
        return None
    if len(weighted) != len(specs):
        unweighted = ", ".join(s.key for s in specs if s.weight is None)
        raise ConfigError(f"data: give a weight to every dataset or to none (no weight: {unweighted}); "
                          "e.g. --data audiocaps:/d/ac@0.7 --data wavcaps:/d/wc@0.3")
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"data: a dataset is listed twice: {keys}")
    return {s.key: float(s.weight) for s in weighted}  # type: ignore[arg-type]


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers ``c`` with ``sum(c) == total`` and ``c ≈ weights / sum(weights) · total`` (largest
    remainders get the leftover units; ties by position)."""
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(np.int64)
    left = total - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:left]] += 1
    return counts


def epoch_items(
    datasets: Sequence[str],
    weights: dict[str, float] | None,
    seed: int,
    epoch: int,
    epoch_size: int | None = None,
) -> list[int]:
    """The item indices of one training epoch under dataset sampling weights.

    Args:
        datasets: per item, its dataset key (``len(datasets)`` items).
        weights: ``key → weight > 0`` for every key of ``datasets`` (:func:`data_weights`), or
            ``None``: every item once, in order.
        seed, epoch: the draw is a function of these (and of the inputs) only.
        epoch_size: items per epoch ``N`` (default ``len(datasets)``).

    Returns:
        ``N`` indices into ``datasets`` (repeats where a dataset is oversampled), in a random order
        seeded by ``(seed, epoch)``; ``N_d = round(w_d/Σw · N)`` of them from dataset ``d``.

    Raises:
        ConfigError: a dataset with items has no weight, a weight names a dataset without training
            items, or a weight is not > 0.
    """
    n = len(datasets)
    if weights is None:
        return list(range(n))
    keys = list(dict.fromkeys(datasets))  # first-appearance order
    unweighted = [k for k in keys if k not in weights]
    if unweighted:
        raise ConfigError(f"training datasets without a sampling weight: {', '.join(unweighted)}; "
                          "give every training dataset a weight (PATH@WEIGHT) or none")
    empty = [k for k in weights if k not in set(keys)]
    if empty:
        raise ConfigError(f"sampling weight for dataset(s) without training clips: {', '.join(empty)}; "
                          "drop their weight or check their train split")
    w = np.array([weights[k] for k in keys], dtype=np.float64)
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise ConfigError(f"sampling weights must be finite and > 0, got {dict(zip(keys, w.tolist(), strict=True))}")
    total = n if epoch_size is None else int(epoch_size)
    if total < 1:
        raise ConfigError(f"epoch_size must be at least 1, got {epoch_size}")
    members: dict[str, list[int]] = {k: [] for k in keys}
    for i, key in enumerate(datasets):
        members[key].append(i)
    chosen: list[np.ndarray] = []
    for d, (key, count) in enumerate(zip(keys, _largest_remainder(w, total), strict=True)):
        items = np.asarray(members[key], dtype=np.int64)
        rng = np.random.default_rng([seed % 2**64, epoch, d])
        rounds = -(-int(count) // len(items))  # ceil
        draws = np.concatenate([rng.permutation(len(items)) for _ in range(rounds)]) if rounds else np.empty(0, int)
        chosen.append(items[draws[: int(count)]])
    picked = np.concatenate(chosen)
    order = np.random.default_rng([seed % 2**64, epoch]).permutation(len(picked))
    return picked[order].tolist()
