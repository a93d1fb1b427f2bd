"""Benchmark: the training input pipeline (clips/s) and group batching (seconds).

1. **Input pipeline.** ``--clips`` ten-second 44.1 kHz stereo files are written to a temporary
   folder, a third each as 16-bit WAV, Ogg/Vorbis (libsndfile) and MP3 (FFmpeg), with one caption
   each. Measured, in clips/s over ``--epochs`` epochs of batches of ``--batch-size``:

   * ``main process (before)``: what ``train.py`` did before the pipeline, every clip decoded
     whole in the main process (``training.datasets.load_clip_audio``) at each step;
   * ``DataLoader, N workers``: :class:`training.pipeline.PairLoader` with ``num_workers`` N
     (persistent workers, prefetch 2; the first epoch includes starting the workers), random
     crops of ``max_duration_s`` 10 s.

   CPU ms per clip counts this process and the workers (joined at the end), so it shows the
   work per clip whatever else the machine runs; clips/s is wall-clock. Both decode and resample
   to ``--rate`` Hz (44 100: aiSFX, no resampling; 16 000: the tiny
   model, resampled). No model runs: this is the rate at which the pipeline can feed one.

2. **Group batching.** :func:`training.batching.group_batches` on n items whose keys are a
   recording group (n/3 groups) and a caption (0.8·n distinct captions), batch size 128; the
   original multi-pass algorithm (:func:`training.batching.group_batches_reference`) side by side
   up to ``--reference-max`` items. Outputs are checked equal where both run.

Usage: ``python benchmarks/input_pipeline.py [--clips 64] [--workers 0 1 2] [--rate 44100]
[--sizes 10000 100000 1000000] [--json]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch

from atr_demo.fileio import markdown_table

from training.batching import group_batches, group_batches_reference
from training.config import TrainConfig
from training.datasets import Clip, load_clip_audio
from training.pipeline import EpochBatchSampler, PairLoader

SECONDS = 10.0
RATE = 44100


def write_clips(folder: Path, count: int) -> list[Clip]:
    """``count`` 10 s stereo 44.1 kHz files (wav, ogg, mp3 in turn), one clip each."""
    clips = []
    for i in range(count):
        rng = np.random.default_rng(i)
        t = np.arange(int(SECONDS * RATE)) / RATE
        tone = 0.3 * np.sin(2 * np.pi * (220 + 10 * i) * t)
        data = (tone[:, None] + 0.05 * rng.standard_normal((t.size, 2))).astype(np.float32)
        ext = ("wav", "ogg", "mp3")[i % 3]
        path = folder / f"clip{i:03d}.{ext}"
        if ext == "mp3":
            with av.open(str(path), "w") as out:
                stream = out.add_stream("mp3", rate=RATE, layout="stereo")
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T), format="fltp", layout="stereo")
                frame.sample_rate = RATE
                for packet in [*stream.encode(frame), *stream.encode(None)]:
                    out.mux(packet)
        else:
            sf.write(str(path), data, RATE, subtype="PCM_16" if ext == "wav" else "VORBIS")
        clips.append(Clip(clip_id=f"c{i}", audio=str(path), captions=[f"tone number {i}"], split="train",
                          group=f"g{i}"))
    return clips


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished (joined) children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pipeline_rate(clips: list[Clip], workers: int, rate: int, batch_size: int, epochs: int) -> tuple[float, float]:
    """(clips/s, CPU ms per clip, workers included) of PairLoader with ``workers`` workers over
    ``epochs`` epochs."""
    config = TrainConfig.from_dict(dict(data=["unused"], model="tiny", batch_size=batch_size, seed=0, device="cpu",
                                        use_cached_features=False, max_duration_s=SECONDS, train_crop="random",
                                        num_workers=workers, progress=False))
    sampler = EpochBatchSampler(lambda epoch: clips, config)
    cpu = cpu_seconds()
    loader = PairLoader(sampler, config, rate, torch.device("cpu"), decode=True)
    began, seen = time.perf_counter(), 0
    for epoch in range(1, epochs + 1):
        for batch in loader.epoch(epoch):
            seen += len(batch.waves or [])
    wall = time.perf_counter() - began
    del loader, batch  # shuts the persistent workers down (joined: their CPU time is counted)
    gc.collect()
    return seen / wall, 1000 * (cpu_seconds() - cpu) / seen


def main_process_rate(clips: list[Clip], rate: int, batch_size: int, epochs: int) -> tuple[float, float]:
    """(clips/s, CPU ms per clip) of the loop before the pipeline: whole-file decodes in the main
    process."""
    cpu = cpu_seconds()
    began, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for start in range(0, len(clips), batch_size):
            waves = [load_clip_audio(c, rate, SECONDS) for c in clips[start : start + batch_size]]
            seen += len(waves)
    return seen / (time.perf_counter() - began), 1000 * (cpu_seconds() - cpu) / seen


def batching_keys(n: int, seed: int = 0) -> list[set[str]]:
    rng = random.Random(seed)
    return [{f"grp:{rng.randrange(max(1, n // 3))}", f"cap:{rng.randrange(max(1, int(0.8 * n)))}"} for _ in range(n)]


def time_call(fn, *args) -> tuple[float, float, object]:  # type: ignore[no-untyped-def]
    """(wall seconds, CPU seconds of this process, result) of ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rate", type=int, nargs="+", default=[44100, 16000])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--reference-max", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(1)
    result: dict[str, object] = {"cpus": os.cpu_count(), "load_average": os.getloadavg()[0], "clips": args.clips,
                                 "pipeline": [], "batching": []}
    with tempfile.TemporaryDirectory() as tmp:
        clips = write_clips(Path(tmp), args.clips)
        for rate in args.rate:
            rows = [("main process (before)", main_process_rate(clips, rate, args.batch_size, args.epochs))]
            for workers in args.workers:
                rows.append((f"DataLoader, {workers} workers",
                             pipeline_rate(clips, workers, rate, args.batch_size, args.epochs)))
            result["pipeline"] += [{"rate": rate, "what": what, "clips_per_s": r, "cpu_ms_per_clip": ms}
                                   for what, (r, ms) in rows]
    for n in args.sizes:
        keys = batching_keys(n)
        new_s, new_cpu, new = time_call(group_batches, keys, 128, random.Random(0))
        entry: dict[str, object] = {"items": n, "first_fit_s": new_s, "first_fit_cpu_s": new_cpu,
                                    "reference_s": None, "reference_cpu_s": None}
        if n <= args.reference_max:
            old_s, old_cpu, old = time_call(group_batches_reference, keys, 128, random.Random(0))
            if old != new:
                raise SystemExit(f"group_batches differs from the reference at n={n}")
            entry.update(reference_s=old_s, reference_cpu_s=old_cpu)
        result["batching"].append(entry)

    if args.json:
        print(json.dumps(result, indent=2))
        return
    pipe = result["pipeline"]
    rates = list(dict.fromkeys(p["rate"] for p in pipe))  # type: ignore[index]
    whats = list(dict.fromkeys(p["what"] for p in pipe))  # type: ignore[index]
    cell = {(p["what"], p["rate"]): f"{p['clips_per_s']:.1f} ({p['cpu_ms_per_clip']:.0f})" for p in pipe}  # type: ignore[index]
    print(f"Input pipeline: {args.clips} ten-second 44.1 kHz stereo clips (wav/ogg/mp3), batch {args.batch_size}, "
          f"{args.epochs} epochs, {os.cpu_count()} CPUs, load average {result['load_average']:.1f} at the start\n")
    print(markdown_table(["loader"] + [f"→ {r} Hz: clips/s (CPU ms/clip)" for r in rates],
                         [[w] + [cell[(w, r)] for r in rates] for w in whats], right=range(1, len(rates) + 1)))
    print("\nGroup batching (batch 128; n/3 groups, 0.8·n captions)\n")
    def seconds(wall: float | None, cpu: float | None) -> str:
        return "—" if wall is None or cpu is None else f"{wall:.2f} ({cpu:.2f})"

    print(markdown_table(["items", "first-fit: wall s (CPU s)", "original multi-pass: wall s (CPU s)"],
                         [[f"{b['items']:,}", seconds(b["first_fit_s"], b["first_fit_cpu_s"]),  # type: ignore[index]
                           seconds(b["reference_s"], b["reference_cpu_s"])]  # type: ignore[index]
                          for b in result["batching"]], right={1, 2}))  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
