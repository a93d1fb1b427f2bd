"""Benchmark: samples/s of a training step, 1 vs N processes, and on a GPU with and without bf16.

A synthetic AudioCaps-layout set is written to a temporary folder (``train.csv`` / ``val.csv``
with ``audiocap_id,youtube_id,start_time,caption``; ``audio/train/<ytid>.wav`` mono 16-bit, a
seeded tone + noise of ``--seconds`` s each, one caption per training clip, 5 per validation
clip), then ``python -m training train`` runs on it for ``--epochs`` epoch(s): with 1 process
directly, with N processes under ``torchrun --nproc_per_node=N`` (gloo on the CPU, NCCL on
CUDA). Every step writes a step record (``log_every_steps: 1``); the table reports, per run,

* ``step samples/s``: global-batch samples over the time of the training steps (embedding,
  gather, loss, backward, optimiser), the first step (warm-up) left out;
* ``epoch samples/s``: training pairs over the wall time of the epoch (data loading and
  validation included);
* ``peak MB``: peak CUDA memory (GPU runs).

Usage (CPU, tiny model, raw audio so the backbones run each step)::

    python benchmarks/train_step.py --clips 64 --batch-size 16 --procs 1 2

GPU (one device; 2 000 clips, 1 epoch, bf16 vs fp32)::

    python benchmarks/train_step.py --device cuda --clips 2000 --seconds 10 --batch-size 128 \\
        --model aisfx-minilm --amp bf16 none --procs 1

``--model tiny`` needs nothing downloaded; ``aisfx-minilm`` needs the offline backbones
(``make install``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from atr_demo.fileio import markdown_table

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["dog", "rain", "bell", "engine", "bird", "wind", "horn", "clock", "water", "fire", "cow", "train", "siren",
         "door", "glass", "frog", "crow", "pig", "car", "drum"]
VERBS = ["barks", "falls", "rings", "runs", "sings", "blows", "sounds", "ticks", "drips", "crackles"]


def write_audiocaps(folder: Path, clips: int, seconds: float, rate: int, seed: int = 0) -> int:
    """An AudioCaps-layout set of ``clips`` training clips (+ clips/10 validation clips); returns the count."""
    rng = np.random.default_rng(seed)
    audio = folder / "audio"
    n_val = max(2, clips // 10)
    for split, count, per_clip in (("train", clips, 1), ("val", n_val, 5)):
        (audio / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            ytid = f"{split[:2]}{i:09d}x"
            t = np.arange(int(seconds * rate)) / rate
            wave = 0.3 * np.sin(2 * np.pi * (100 + 37 * i % 2000) * t) + 0.05 * rng.standard_normal(t.size)
            sf.write(audio / split / f"{ytid}.wav", wave.astype(np.float32), rate, subtype="PCM_16")
            for k in range(per_clip):
                caption = f"a {WORDS[(i + k) % len(WORDS)]} {VERBS[(i * 7 + k) % len(VERBS)]} {i} {k}"
                rows.append({"audiocap_id": f"{split}{i}_{k}", "youtube_id": ytid, "start_time": 0,
                             "caption": caption})
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["audiocap_id", "youtube_id", "start_time", "caption"])
            writer.writeheader()
            writer.writerows(rows)
    return clips


def run(data: Path, out: Path, procs: int, args: argparse.Namespace, amp: str) -> dict[str, float]:
    """One training run; its throughput figures from the step and epoch records."""
    config = {"data": str(data), "data_format": "audiocaps", "model": args.model, "loss": "mltm", "eps": 0.1,
              "batch_size": args.batch_size, "epochs": args.epochs, "lr": 1e-3, "seed": 0, "device": args.device,
              "amp": amp, "use_cached_features": False, "batching": "none", "out": str(out), "progress": False,
              "log_every_steps": 1, "num_workers": args.workers, "max_duration_s": args.seconds,
              "check_audio": "off"}
    if args.model == "tiny":
        config["model"] = {"audio": {"kind": "tiny_audio", "dim": 32, "trainable": True},
                           "text": {"kind": "tiny_text", "dim": 32, "trainable": True}, "embed_dim": 16,
                           "name": "tiny", "max_duration_s": 120.0}
    elif args.trainable:
        config["model"] = {"audio": {"kind": "aisfx", "trainable": True},
                           "text": {"kind": "hf_text", "name": "sentence-transformers/all-MiniLM-L6-v2",
                                    "trainable": True}}
    out.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    command = [sys.executable, "-m", "training", "train", "--config", str(path)]
    if procs > 1:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
                   "--master_port", str(29500 + os.getpid() % 1000), "-m", "training", "train", "--config", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    began = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=None if args.verbose else subprocess.DEVNULL)
    wall = time.perf_counter() - began
    records = [json.loads(line) for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [r for r in records if r.get("kind") == "step"][1:]
    epochs = [r for r in records if "kind" not in r]
    pairs = args.clips * args.epochs
    result = {"processes": procs, "amp": amp,
              "step samples/s": sum(r["global_batch_size"] for r in steps) / max(1e-9, sum(r["step_seconds"]
                                                                                             for r in steps)),
              "epoch samples/s": pairs / max(1e-9, sum(r["seconds"] for r in epochs)),
              "wall s": wall}
    if any("peak_mem_mb" in r for r in steps):
        result["peak MB"] = max(r.get("peak_mem_mb", 0.0) for r in steps)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=64, help="training clips of the synthetic set")
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length (s)")
    parser.add_argument("--batch-size", type=int, default=16, help="global batch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", nargs="+", default=["none"], choices=["none", "bf16", "fp16"])
    parser.add_argument("--model", default="tiny", choices=["tiny", "aisfx-minilm"])
    parser.add_argument("--trainable", action="store_true", help="fine-tune the aisfx-minilm backbones")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process (OMP_NUM_THREADS)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="show the training logs")
    args = parser.parse_args()
    rate = 16000 if args.model == "tiny" else 44100
    with tempfile.TemporaryDirectory(prefix="train-step-") as tmp:
        data = Path(tmp) / "audiocaps"
        write_audiocaps(data, args.clips, args.seconds, rate)
        rows = [run(data, Path(tmp) / f"run-{procs}-{amp}", procs, args, amp)
                for amp in args.amp for procs in args.procs]
    if args.json:
        print(json.dumps({"args": vars(args), "rows": rows}, indent=2))
        return
    header = list(rows[0])
    for row in rows[1:]:
        header += [k for k in row if k not in header]
    print(f"{args.model} model, {args.clips} clips of {args.seconds:g} s, global batch {args.batch_size}, "
          f"{args.epochs} epoch(s), device {args.device}")
    print(markdown_table(header, [[f"{r[k]:.1f}" if isinstance(r.get(k), float) else str(r.get(k, "–"))
                                   for k in header] for r in rows]))


if __name__ == "__main__":
    main()
