"""Cutting long ambiences into ~10 s segments."""

from __future__ import annotations

import math

LONG_CLIP_S = 20.0
SEGMENT_S = 10.0


def segment_bounds(
    n_frames: int,
    sample_rate: int,
    long_clip_s: float = LONG_CLIP_S,
    segment_s: float = SEGMENT_S,
) -> list[tuple[int, int]]:
    """Frame ranges ``[start, stop)`` covering a clip.

    A clip no longer than ``long_clip_s`` is one segment; a longer one is cut into
    ``floor(duration / segment_s)`` equal segments (so every segment lasts between
    ``segment_s`` and ``2 * segment_s``, and nothing is thrown away).
    """
    if n_frames <= 0 or sample_rate <= 0:
        raise ValueError("n_frames and sample_rate must be positive")
    duration = n_frames / sample_rate
    if duration <= long_clip_s:
        return [(0, n_frames)]
    count = max(1, math.floor(duration / segment_s))
    edges = [round(i * n_frames / count) for i in range(count + 1)]
    return [(edges[i], edges[i + 1]) for i in range(count)]
