"""Decoding package sounds and writing 16-bit mono FLAC."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from atr_demo.fileio import atomic_write

SILENCE_PEAK = 1e-3
MIN_DURATION_S = 0.1


def read_mono(source: Path | bytes) -> tuple[np.ndarray, int]:
    """Decode a sound file (path or in-memory bytes) to mono float32 at its own rate.

    Stereo and multi-channel files are down-mixed by averaging the channels.
    """
    handle: Path | io.BytesIO = io.BytesIO(source) if isinstance(source, bytes) else source
    data, sample_rate = sf.read(handle, dtype="float32", always_2d=True)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(mono, dtype=np.float32), int(sample_rate)


def is_usable(samples: np.ndarray, sample_rate: int) -> bool:
    """False for empty, very short (< 0.1 s) or silent (peak < -60 dBFS) sounds."""
    if samples.size < MIN_DURATION_S * sample_rate:
        return False
    return float(np.max(np.abs(samples))) >= SILENCE_PEAK


def write_flac(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write ``samples`` as 16-bit mono FLAC (clipped to [-1, 1]); atomic via a temp file."""
    clipped = np.clip(samples, -1.0, 1.0)

    def write(tmp: Path) -> None:
        sf.write(tmp, clipped, sample_rate, format="FLAC", subtype="PCM_16")

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
