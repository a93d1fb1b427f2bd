"""Training-data augmentation: two-clip mixtures with composed captions, and caption noise
(a controlled fraction of mismatched audio-caption pairs)."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import replace

from atr_demo.errors import ConfigError

from training.datasets import Clip

logger = logging.getLogger(__name__)


# -- mixtures --------------------------------------------------------------------------------

_LEADING_LOWER = {"a", "an", "the", "some", "someone", "somebody", "several", "many", "two", "three",
                  "people", "person", "footsteps", "water", "rain", "wind", "birds", "it", "there"}


def _strip(caption: str) -> str:
    return caption.strip().rstrip(".!;, ").strip()


def _lower_lead(caption: str) -> str:
    """Lower-case the first word unless it looks like a name or an acronym ("TV", "Paris")."""
    words = caption.split(" ", 1)
    first = words[0]
    is_acronym = len(first) > 1 and first[1:].isupper()
    if first.lower() in _LEADING_LOWER or (not is_acronym and first[:1].isupper() and first[1:].islower()):
        words[0] = first.lower()
    return " ".join(words)


def compose_caption(first: str, second: str, connector: str = "while") -> str:
    """``"A dog barks."`` + ``"The rain falls."`` → ``"A dog barks while the rain falls"``."""
    if connector not in ("while", "and"):
        raise ValueError(f"connector must be 'while' or 'and', got {connector!r}")
    a, b = _strip(first), _lower_lead(_strip(second))
    return f"{a} {connector} {b}"


def make_mixtures(
    clips: Sequence[Clip], count: int, seed: int, gain_db: tuple[float, float] = (-6.0, 6.0)
) -> list[Clip]:
    """``count`` two-clip mixtures of clips from different groups (seeded).

    Each mixture's audio is ``first + gain · second`` (see :func:`training.datasets.mix_waveforms`)
    and its caption composes one caption of each with "while" or "and". Mixture groups are ``mix:<g1>+<g2>``.
    """
    rng = random.Random(seed)
    pool = [c for c in clips if c.mix_of is None]
    if count <= 0 or len({c.group for c in pool}) < 2:
        return []
    out = []
    while len(out) < count:
        a, b = rng.sample(pool, 2)
        if a.group == b.group:
            continue
        gain = rng.uniform(*gain_db)
        connector = rng.choice(("while", "and"))
        caption = compose_caption(rng.choice(a.captions), rng.choice(b.captions), connector)
        out.append(Clip(
            clip_id=f"mix{seed}_{len(out)}:{a.clip_id}+{b.clip_id}", audio=a.audio, captions=[caption],
            split=a.split, group=f"mix:{a.group}+{b.group}", mix_of=(a, b), gain_db=round(gain, 4),
        ))
    return out


# -- caption noise ---------------------------------------------------------------------------

def inject_caption_noise(clips: Sequence[Clip], fraction: float, seed: int) -> tuple[list[Clip], list[int]]:
    """Shuffle the captions of exactly ``round(fraction · n)`` clips among themselves.

    The chosen clips' caption lists are permuted by a random derangement (a random cycle,
    Sattolo's algorithm, redrawn until no clip ends up with captions equal to its own), so every
    chosen clip is mismatched. The other clips are unchanged. Returns new clips and the sorted
    indices of the mismatched ones.

    Raises:
        ConfigError: ``fraction`` outside [0, 1], or exactly one clip would be chosen (one
            caption cannot be shuffled), or the chosen captions are all identical.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"noise fraction must be in [0, 1], got {fraction}")
    n = len(clips)
    k = int(math.floor(fraction * n + 0.5))
    out = [replace(c) for c in clips]
    if k == 0:
        return out, []
    if k == 1:
        raise ConfigError(f"noise fraction {fraction} of {n} clips selects a single clip, which cannot be shuffled")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(n), k))
    for _ in range(1000):
        perm = list(range(k))
        for i in range(k - 1, 0, -1):  # Sattolo: a uniformly random k-cycle
            j = rng.randrange(i)
            perm[i], perm[j] = perm[j], perm[i]
        if all(clips[chosen[perm[j]]].captions != clips[chosen[j]].captions for j in range(k)):
            break
    else:
        raise ConfigError("cannot mismatch the chosen captions: too many of them are identical")
    for j, idx in enumerate(chosen):
        out[idx].captions = list(clips[chosen[perm[j]]].captions)
    logger.info("caption noise: %d of %d training pairs mismatched (fraction %.3f)", k, n, k / n)
    return out, chosen
