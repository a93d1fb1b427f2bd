"""Concurrent clients against the launched app: does one user's largest request stall the others?

Starts ``app.py`` on 127.0.0.1 (a free port; loopback only) in a subprocess, waits for it to
answer, then runs two phases of ``--seconds`` each:

1. ``normal``: ``--clients`` threads, each with its own ``gradio_client.Client``, send text → audio
   searches (``/search_text``, k = 10, cosine, a query from a fixed list) back to back, and
   ``--audio-clients`` threads send audio → text searches (``/search_audio``, one 5-second clip),
   which share the app's one "heavy" worker with zero-shot;
2. ``with heavy``: the same, while one more client sends the largest request the app allows,
   back to back: ``/zero_shot`` on ``max_files`` (8) uploaded 10-second clips with
   ``max_prompts`` (1 000) prompts: 166 fresh labels × 6 templates + … (the labels change
   every request, so the app's label cache does not help).

Every loop stops at its deadline (a request in flight is waited for, at most 120 s). Prints a
Markdown table per phase: requests, failures, p50 and p95 latency of the normal requests (and of
the heavy ones), and the server's resident memory (``VmRSS``) before and after.

Usage::

    python benchmarks/concurrent_clients.py [--model tiny] [--gallery DIR] [--clients 16] [--seconds 60]

Without ``--model`` the app's default (the bundled model); without ``--gallery`` the app's
default (``bundled_gallery/``).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from atr_demo.fileio import markdown_table
from atr_demo.limits import Limits

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ("a dog barks", "rain on a tin roof", "footsteps on gravel", "a door slams", "birds at dawn",
           "an engine idles", "glass breaks", "a crowd applauds", "wind through trees", "a kettle whistles")
TEMPLATES = ("the sound of {}", "this is a sound of {}", "{}", "a recording of {}", "a sound effect of {}",
             "{} can be heard")
REQUEST_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    """Resident memory (VmRSS) of a process in MiB (Linux); NaN where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@dataclass
class Tally:
    """Latencies (s) of the successful requests and the failures of one kind of client."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float | None, error: str | None = None) -> None:
        with self.lock:
            if error is None and seconds is not None:
                self.latencies.append(seconds)
            else:
                self.failures.append(error or "failed")

    def row(self, name: str) -> list[str]:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))] if lat else float("nan")
        return [name, str(len(lat) + len(self.failures)), str(len(self.failures)), f"{p50:.3f}", f"{p95:.3f}"]


def start_app(args: argparse.Namespace, port: int, cache_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
           "--cache-dir", str(cache_dir)]
    if args.model:
        cmd += ["--model", args.model]
    if args.gallery:
        cmd += ["--gallery", str(args.gallery)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen[str], port: int, timeout: float) -> float:
    """Seconds until ``/search_text`` answers; raises if the app exits or does not answer in ``timeout``."""
    from gradio_client import Client

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            tail = proc.stderr.read()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"app.py exited with {proc.returncode}: {tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
        except OSError:
            time.sleep(0.2)
            continue
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict("a dog barks", 10, "cosine", api_name="/search_text")
        client.close()
        return time.perf_counter() - start
    raise TimeoutError(f"the app did not answer within {timeout:.0f} s")


def normal_client(url: str, seed: int, deadline: float, tally: Tally) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    rng = np.random.default_rng(seed)
    while time.perf_counter() < deadline:
        query = QUERIES[int(rng.integers(len(QUERIES)))]
        start = time.perf_counter()
        try:
            job = client.submit(query, 10, "cosine", api_name="/search_text")
            job.result(timeout=REQUEST_TIMEOUT_S)
            tally.add(time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - a benchmark counts every failure
            tally.add(None, f"{type(exc).__name__}: {str(exc)[:120]}")
    client.close()


def audio_client(url: str, clip: Path, deadline: float, tally: Tally) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        try:
            job = client.submit(handle_file(str(clip)), "", 10, "cosine", api_name="/search_audio")
            job.result(timeout=REQUEST_TIMEOUT_S)
            tally.add(time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001
            tally.add(None, f"{type(exc).__name__}: {str(exc)[:120]}")
    client.close()


def heavy_client(url: str, clips: list[Path], limits: Limits, deadline: float, tally: Tally) -> None:
    """The largest allowed zero-shot request, with fresh labels each time, until ``deadline``."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    n_labels = limits.max_prompts // len(TEMPLATES)
    n = 0
    while time.perf_counter() < deadline:
        labels = "\n".join(f"sound {n}-{i}" for i in range(n_labels))
        n += 1
        start = time.perf_counter()
        try:
            job = client.submit([handle_file(str(c)) for c in clips[: limits.max_files]], None, labels,
                                "\n".join(TEMPLATES), 5, "cosine", api_name="/zero_shot")
            job.result(timeout=REQUEST_TIMEOUT_S)
            tally.add(time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001
            tally.add(None, f"{type(exc).__name__}: {str(exc)[:120]}")
    client.close()


def phase(
    url: str, clients: int, audio_clients: int, seconds: float, probe: Path, clips: list[Path] | None, limits: Limits
) -> tuple[Tally, Tally, Tally]:
    normal, audio, heavy = Tally(), Tally(), Tally()
    deadline = time.perf_counter() + seconds
    threads = [threading.Thread(target=normal_client, args=(url, i, deadline, normal)) for i in range(clients)]
    threads += [threading.Thread(target=audio_client, args=(url, probe, deadline, audio)) for _ in range(audio_clients)]
    if clips:
        threads.append(threading.Thread(target=heavy_client, args=(url, clips, limits, deadline, heavy)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 2 * REQUEST_TIMEOUT_S)
    return normal, audio, heavy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="--model for app.py (default: the bundled model)")
    parser.add_argument("--gallery", type=Path, default=None, help="--gallery for app.py (default: bundled_gallery/)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent normal clients")
    parser.add_argument("--audio-clients", type=int, default=1, help="concurrent audio → text clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for the app")
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default: a temporary one)")
    args = parser.parse_args(argv)
    limits = Limits.from_env()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clips = []
        rng = np.random.default_rng(0)
        for i in range(limits.max_files):
            t = np.arange(10 * 16000) / 16000
            wave = 0.3 * np.sin(2 * np.pi * (150 + 90 * i) * t) + 0.05 * rng.standard_normal(len(t))
            clips.append(work / f"clip{i}.wav")
            sf.write(clips[-1], wave.astype(np.float32), 16000)
        probe = work / "probe.wav"
        t = np.arange(5 * 16000) / 16000
        sf.write(probe, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
        proc = start_app(args, port, args.cache_dir or work / "cache")
        try:
            ready = wait_ready(proc, port, args.startup_timeout)
            rss_start = rss_mib(proc.pid)
            rows = []
            normal, audio, _ = phase(url, args.clients, args.audio_clients, args.seconds, probe, None, limits)
            rss_mid = rss_mib(proc.pid)
            rows.append(["normal only", *normal.row("search_text")[1:], *audio.row("search_audio")[1:], "—",
                         f"{rss_start:.0f}", f"{rss_mid:.0f}"])
            normal, audio, heavy = phase(url, args.clients, args.audio_clients, args.seconds, probe, clips, limits)
            rss_end = rss_mib(proc.pid)
            heavy_row = heavy.row("zero_shot")
            rows.append(["with one heavy client", *normal.row("search_text")[1:], *audio.row("search_audio")[1:],
                         f"{heavy_row[1]} req, p50 {heavy_row[3]} s, {heavy_row[2]} failed",
                         f"{rss_mid:.0f}", f"{rss_end:.0f}"])
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(f"app ready after {ready:.1f} s; {args.clients} clients × {args.seconds:.0f} s per phase; "
          f"heavy request: /zero_shot, {limits.max_files} files × 10 s, {limits.max_prompts // len(TEMPLATES)} "
          f"labels × {len(TEMPLATES)} templates\n")
    print(markdown_table(
        ["phase", "search_text requests", "failures", "p50 (s)", "p95 (s)", "search_audio requests", "failures",
         "p50 (s)", "p95 (s)", "heavy zero_shot", "RSS before (MiB)", "RSS after (MiB)"],
        rows, right=(1, 2, 3, 4, 5, 6, 7, 8, 10, 11),
    ))
    failures = normal.failures + audio.failures + heavy.failures
    if failures:
        print("\nfirst failures: " + "; ".join(failures[:3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
