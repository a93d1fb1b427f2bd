"""CPU cost of the aiSFX audio encoder per 10 s clip.

Usage: ``python benchmarks/audio_encoder.py [--json] [--repeats N] [--threads N]``

Rows (seconds per 10 s clip at 44.1 kHz = 431 frames = 8 blocks of 100×96):

* ``frontend``: log-mel (STFT + mel + log) and blocking, per clip;
* ``cnn baseline``: the plain graph (conv → BN → ReLU, BN unfused, contiguous NCHW) in fp32
  eager under ``torch.no_grad``;
* ``cnn optimised``: the default eval path (BN folded into the convs, channels_last) under
  ``torch.inference_mode``;
* ``end-to-end``: :class:`AisfxAudioBackbone` on waveforms (front-end + optimised CNN + pooling);

each at batch 1 (one clip) and 16 clips (128 blocks: one CNN call for the ``cnn`` rows,
the backbone's CPU chunks of 8 blocks for ``end-to-end``).
Random (not pretrained) weights: the cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from atr_demo.audio import FrontendConfig, LogMelFrontend, to_blocks
from atr_demo.backbones.aisfx import AisfxAudioBackbone, AisfxCNN

CLIP_SECONDS = 10.0


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    config = FrontendConfig()
    n = int(CLIP_SECONDS * config.sample_rate)
    waves = [0.1 * torch.randn(n) for _ in range(16)]
    frontend = LogMelFrontend(config).eval()

    def blocks_of(wave: torch.Tensor) -> torch.Tensor:
        return to_blocks(frontend(wave), config.block_frames, config.block_hop_frames)

    with torch.inference_mode():
        one = blocks_of(waves[0])
        many = torch.cat([blocks_of(w) for w in waves])

    cnn = AisfxCNN().eval()
    backbone = AisfxAudioBackbone(config).eval()
    backbone.cnn.load_state_dict(cnn.state_dict())

    def baseline(x: torch.Tensor) -> Callable[[], object]:
        def call() -> object:
            cnn.fused_inference = False
            with torch.no_grad():
                out = cnn(x)
            cnn.fused_inference = True
            return out
        return call

    def optimised(x: torch.Tensor) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return cnn(x)
        return call

    def end_to_end(ws: list[torch.Tensor]) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return backbone(ws)
        return call

    def frontend_only() -> object:
        with torch.inference_mode():
            return blocks_of(waves[0])

    rows: list[dict[str, object]] = []

    def add(name: str, clips: int, fn: Callable[[], object]) -> None:
        seconds = timeit(fn, repeats)
        rows.append({"name": name, "clips": clips, "seconds_per_clip": seconds / clips})

    add("frontend (log-mel + blocks)", 1, frontend_only)
    add("cnn baseline (fp32 eager, BN unfused)", 1, baseline(one))
    add("cnn optimised (BN folded, channels_last)", 1, optimised(one))
    add("cnn baseline (fp32 eager, BN unfused)", 16, baseline(many))
    add("cnn optimised (BN folded, channels_last)", 16, optimised(many))
    add("end-to-end backbone (frontend + optimised)", 1, end_to_end(waves[:1]))
    add("end-to-end backbone (frontend + optimised)", 16, end_to_end(waves))
    return {
        "clip_seconds": CLIP_SECONDS,
        "blocks_per_clip": int(one.shape[0]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "repeats": repeats,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.repeats)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return 0
    lines = [
        f"aiSFX audio encoder, CPU, {result['threads']} threads, torch {result['torch']}, "
        f"{CLIP_SECONDS:g} s clip = {result['blocks_per_clip']} blocks, median of {result['repeats']}",
        f"{'stage':<46} {'clips':>5} {'s / clip':>9}",
    ]
    for row in result["rows"]:  # type: ignore[union-attr]
        lines.append(f"{row['name']:<46} {row['clips']:>5} {row['seconds_per_clip']:>9.4f}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
