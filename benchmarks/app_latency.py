"""Latency and memory of the Gradio app.

Measures, and prints as a Markdown table:

* cold start: ``python app.py`` in a subprocess (imports, model load, gallery indexing with an
  empty embedding cache — the bundled gallery ships its embeddings for the bundled model — server
  start) until HTTP 200 on ``/`` (the page is served) and until a ``gradio_client`` call to
  ``/search_text`` returns; then the same with the cache filled (a restart). ``--start-only``
  measures just these; ``--app-root DIR`` runs another checkout's ``app.py``, to compare;
* text → top-10 query latency (median and 95th percentile, in process, through the app's
  callback) over the given gallery and over a synthetic 10 000-clip gallery of random unit
  embeddings, for each scoring mode;
* peak resident memory of the server process (``VmHWM`` from ``/proc``, for the cold start and
  the restart separately) and of this process (``resource.getrusage``).

Usage::

    python benchmarks/app_latency.py [--model tiny] [--gallery DIR] [--repeats 20]

Without ``--gallery`` it uses ``bundled_gallery/`` when present, else 40 generated tones.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from atr_demo.fileio import markdown_table

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ("a dog barks", "rain on a tin roof", "footsteps on gravel", "a door slams", "birds at dawn",
           "an engine idles", "glass breaks", "a crowd applauds")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def generated_gallery(directory: Path, n: int = 40, seconds: float = 5.0, sr: int = 44100) -> Path:
    """``n`` noisy tones of ``seconds`` with captions, written to ``directory``."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        t = np.arange(int(seconds * sr)) / sr
        wave = 0.4 * np.sin(2 * np.pi * (80 + 40 * i) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(directory / f"tone{i:03d}.wav", wave.astype(np.float32), sr)
        rows.append({"audio": f"tone{i:03d}.wav", "caption": f"a tone at {80 + 40 * i} hertz", "licence": "CC0-1.0"})
    (directory / "gallery.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return directory


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a running process in MiB (Linux); NaN where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cold_start(
    model: str, gallery: Path, cache_dir: Path, timeout: float = 600.0, app_root: Path = ROOT
) -> tuple[float, float, float]:
    """Seconds from spawning ``app.py`` to HTTP 200 on ``/`` (the page served) and to the first answered
    ``/search_text``; server peak RSS (MiB). ``app_root``: the checkout whose ``app.py`` and ``atr_demo`` run."""
    from gradio_client import Client

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join([str(app_root), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(app_root / "app.py"), "--gallery", str(gallery),
           "--cache-dir", str(cache_dir), "--port", str(port)]
    if model != "bundled":
        cmd += ["--model", model]
    start = time.perf_counter()
    log = tempfile.TemporaryFile(mode="w+")  # not a pipe: a full pipe would stall the app's progress bars
    proc = subprocess.Popen(cmd, cwd=app_root, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"app.py exited with {proc.returncode}: {log.read()[-2000:]}")
            if time.perf_counter() - start > timeout:
                raise TimeoutError("the app did not answer in time")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status != 200:
                        raise OSError(response.status)
            except OSError:
                time.sleep(0.1)
                continue
            page = time.perf_counter() - start
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            client.predict("a dog barks", 10, "cosine", api_name="/search_text")
            elapsed = time.perf_counter() - start
            client.close()
            peak = peak_rss_mib(proc.pid)
            break
    finally:
        log.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return page, elapsed, peak


def query_latency(state: object, mode: str, repeats: int) -> tuple[float, float]:
    """Median and p95 (ms) of a text → top-10 search through the app's callback."""
    from atr_demo.ui.callbacks import search_text_cb

    search_text_cb(state, QUERIES[0], 10, mode)  # warm-up (fills the anchor cache)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        search_text_cb(state, QUERIES[i % len(QUERIES)], 10, mode)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]


def synthetic_state(model: object, n: int, seed: int = 0) -> object:
    """An AppState over ``n`` random unit embeddings with one caption each (no audio files)."""
    from atr_demo.gallery import Gallery
    from atr_demo.ui import AppState

    gen = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(n, model.config.embed_dim, generator=gen), dim=-1)
    words = ("dog", "rain", "door", "engine", "bird", "glass", "crowd", "wind", "water", "bell")
    rng = random.Random(seed)
    files = [Path(f"/synthetic/clip{i:05d}.wav") for i in range(n)]
    meta = [
        {"file": str(f), "caption": f"a {rng.choice(words)} and a {rng.choice(words)} {i}"} for i, f in enumerate(files)
    ]
    return AppState(model=model, gallery=Gallery(files=files, embeddings=emb, metadata=meta))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny",
                        help="model for the app: tiny (default), bundled, aisfx-minilm, a folder or a Hub id")
    parser.add_argument("--gallery", type=Path, default=None, help="gallery folder (default: bundled or generated)")
    parser.add_argument("--synthetic", type=int, default=10_000, help="clips in the synthetic gallery")
    parser.add_argument("--repeats", type=int, default=20, help="timed queries per mode")
    parser.add_argument("--modes", default="cosine,metric,transport")
    parser.add_argument("--app-root", type=Path, default=ROOT,
                        help="checkout whose app.py runs for the start-up rows (default: this one), to compare")
    parser.add_argument("--start-only", action="store_true", help="measure the start-up rows only")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        gallery = args.gallery
        described = str(gallery)
        if gallery is None and (ROOT / "bundled_gallery").is_dir():
            gallery, described = ROOT / "bundled_gallery", "bundled_gallery/"
        elif gallery is None:
            (tmp_path / "gallery").mkdir()
            gallery, described = generated_gallery(tmp_path / "gallery"), "40 generated 5-s tones"
        cache = tmp_path / "cache"
        app_root = args.app_root.resolve()
        page, cold, server_peak = cold_start(args.model, gallery, cache, app_root=app_root)
        page2, warm, server_peak2 = cold_start(args.model, gallery, cache, app_root=app_root)
        if args.start_only:
            print(f"\napp: {app_root}; model: {args.model}; gallery: {described}; {os.cpu_count()} CPUs\n")
            print(markdown_table(["measurement", "value"], [
                ("start → page served (HTTP 200 on /), empty embedding cache", f"{page:.1f} s"),
                ("start → first /search_text answered, empty embedding cache", f"{cold:.1f} s"),
                ("restart → page served, embedding cache filled", f"{page2:.1f} s"),
                ("restart → first /search_text answered", f"{warm:.1f} s"),
            ]))
            return 0

        from atr_demo.model import load_model
        from atr_demo.ui import make_state

        model = load_model(args.model)
        state = make_state(model, [gallery], cache_dir=cache, progress=False)
        synth = synthetic_state(model, args.synthetic)
        rows = [
            ("cold start → page served, HTTP 200 on / (empty embedding cache)", f"{page:.2f} s"),
            ("cold start → first /search_text (empty embedding cache)", f"{cold:.2f} s"),
            ("restart → first /search_text (embedding cache filled)", f"{warm:.2f} s"),
        ]
        galleries = ((f"gallery ({len(state.gallery)} clips)", state), (f"synthetic ({args.synthetic} clips)", synth))
        for mode in args.modes.split(","):
            for name, st in galleries:
                med, p95 = query_latency(st, mode, args.repeats)
                rows.append((f"text → top-10, {mode}, {name}", f"{med:.1f} ms median, {p95:.1f} ms p95"))
        rows.append(("peak RSS, app server, cold start (indexing the gallery)", f"{server_peak:.0f} MiB"))
        rows.append(("peak RSS, app server, restart (cached embeddings)", f"{server_peak2:.0f} MiB"))
        rows.append(("peak RSS, this process (model + both galleries)",
                     f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"))

    print(f"\nmodel: {args.model}; gallery: {described}; "
          f"torch threads: {torch.get_num_threads()}; repeats: {args.repeats}\n")
    print(markdown_table(["measurement", "value"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
