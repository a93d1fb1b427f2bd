"""Indexing throughput: ``python benchmarks/index_throughput.py [--clips 48] [--unchanged 100000] --json``.

Two measurements, printed as JSON rows:

* cold indexing of ``--clips`` synthetic 10 s clips (Ogg Vorbis, 44.1 kHz stereo: decoding and
  resampling cost what real files cost) with the bundled model, side by side in one run, in
  alternating order: ``before`` (the previous path: decode sequentially, fp32 CNN) and ``after``
  (:func:`atr_demo.gallery.embed_into_cache`: decoding in a thread one batch ahead, bf16 autocast
  where the CPU has it natively), each into an empty cache; reports clips/s, audio-seconds per
  wall-second and the smallest cosine between the two paths' embeddings;
* re-indexing an unchanged library of ``--unchanged`` files (tiny WAV files, an index whose rows
  match them): the wall time of :func:`atr_demo.index.build_index`, which must recognise every
  file by size + mtime and hash nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from atr_demo.audio import load_audio
from atr_demo.gallery import embed_into_cache, inference_precision, model_fingerprint, open_cache
from atr_demo.index import build_index
from atr_demo.index.ann import ANN_THRESHOLD
from atr_demo.index.store import COLUMNS, IndexData, relative_root, write_index
from atr_demo.model import load_model


def _clips(folder: Path, n: int, seconds: float = 10.0, sr: int = 44100) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        tone = 0.3 * np.sin(2 * np.pi * (100 + 37 * i) * t) + 0.05 * rng.standard_normal(len(t))
        path = folder / f"clip{i:04d}.ogg"
        sf.write(path, np.stack([tone, tone[::-1]], 1).astype(np.float32), sr, format="OGG", subtype="VORBIS")
        files.append(path)
    return files


def _before(model, files: list[Path], batch_size: int = 8) -> torch.Tensor:
    """The previous indexing loop: sequential decoding, fp32 inference."""
    out = []
    model.eval()
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        waves = [load_audio(f, model.sample_rate, model.config.max_duration_s) for f in batch]
        with torch.inference_mode():
            out.append(model.encode_audio(waves).cpu())
    return torch.cat(out)


def cold(model, n: int, rounds: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = _clips(Path(tmp), n)
        audio_s = 10.0 * n
        precision = inference_precision()
        for r in range(rounds):
            for path in (("before", "after") if r % 2 == 0 else ("after", "before")):
                t0 = time.perf_counter()
                if path == "before":
                    ref = _before(model, files)
                else:
                    cache = open_cache(model, Path(tmp) / f"cache{r}")
                    embed_into_cache(model, files, [str(i) for i in range(n)], cache, progress=False)
                    new = torch.stack([cache.get(str(i)) for i in range(n)])
                wall = time.perf_counter() - t0
                row = {"measure": "cold", "path": path, "round": r, "clips": n, "precision":
                       "fp32" if path == "before" else precision, "seconds": round(wall, 2),
                       "clips_per_s": round(n / wall, 2), "audio_s_per_s": round(audio_s / wall, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        rows.append({"measure": "cold", "path": "agreement", "min_cosine": round(float((ref * new).sum(-1).min()), 5)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def unchanged(model, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "library"
        for i in range(n):
            sub = lib / f"d{i // 1000:03d}"
            if i % 1000 == 0:
                sub.mkdir(parents=True)
            (sub / f"c{i:06d}.wav").write_bytes(b"RIFF")
        out = Path(tmp) / "index"
        d = model.config.embed_dim
        paths = sorted(p for p in lib.rglob("*.wav"))
        meta = {c: [None] * n for c in COLUMNS}
        meta.update(root=[0] * n, path=[p.relative_to(lib).as_posix() for p in paths],
                    digest=[f"{i:064x}" for i in range(n)], size=[p.stat().st_size for p in paths],
                    mtime_ns=[p.stat().st_mtime_ns for p in paths])
        emb = np.zeros((n, d), np.float32)
        emb[:, 0] = 1.0
        header = {"model": {"name": model.config.name, "fingerprint": model_fingerprint(model)},
                  "roots": [relative_root(out, lib)], "roots_abs": [str(lib.resolve())],
                  "ann": {"type": "exact", "threshold": ANN_THRESHOLD}, "transport": {"anchors": 1},
                  "dtype": "float32"}
        write_index(IndexData(folder=out, header=header, embeddings=emb, meta=meta,
                              potentials=np.zeros(n, np.float32), anchors=np.zeros((1, d), np.float32)))
        t0 = time.perf_counter()
        summary = build_index(model, [lib], out, progress=False)
        wall = time.perf_counter() - t0
    row = {"measure": "unchanged", "files": n, "seconds": round(wall, 2),
           "up_to_date": summary.get("up_to_date", False), "hashed": summary["hashed"]}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--unchanged", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="(rows are always JSON lines)")
    args = parser.parse_args()
    model = load_model(None)
    if args.clips:
        cold(model, args.clips, args.rounds)
    if args.unchanged:
        unchanged(model, args.unchanged)


if __name__ == "__main__":
    main()
