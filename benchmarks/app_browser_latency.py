"""Time from typing a query to its results being visible in a real browser (Chromium via Playwright).

Starts ``python app.py`` (the bundled model and gallery by default) in a subprocess, opens the page
in Debian's headless Chromium and, for each k, types queries into the text → audio tab two ways:

* **Enter**: the query is filled in and Enter pressed; timed from the key press;
* **as you type**: the query is typed key by key (30 ms apart); timed from the last key.

Results count as visible when the status line names that query and k result rows are shown. Prints
a Markdown table of the median and 95th percentile per k and way. A benchmark, not a test: the
numbers depend on the machine (run it on an idle one).

Usage::

    python benchmarks/app_browser_latency.py [--model bundled] [--ks 5,10,20] [--queries 20]
    python benchmarks/app_browser_latency.py --app-root /tmp/before   # an older checkout, to compare

``--app-root`` runs ``app.py`` of another checkout of the repository (its own ``atr_demo``, put
first on ``PYTHONPATH``) with this checkout's bundled gallery.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from atr_demo.fileio import markdown_table

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
QUERIES = (
    "a dog barks in the distance", "rain falling on a tin roof", "footsteps on gravel", "a door slams shut",
    "birds singing at dawn", "an engine idles", "glass breaks on the floor", "a crowd applauds",
    "a bell rings twice", "water drips into a bucket", "a helicopter flies over", "wind howls outside",
)
#: True when the status names the query and k result rows are visible (works for the old slot layout too).
VISIBLE_JS = """([query, k]) => {
  const status = document.querySelector('#results-status');
  if (!status || !status.innerText.includes(query)) return false;
  const rows = [...document.querySelectorAll('#text-results .result-slot')].filter(e => e.offsetParent !== null);
  return rows.length >= k;
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_app(app_root: Path, model: str, gallery: Path, cache: Path, port: int) -> tuple[subprocess.Popen, float]:
    """Start ``app.py`` and wait for HTTP 200 on ``/``; returns the process and the seconds it took."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join([str(app_root), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(app_root / "app.py"), "--gallery", str(gallery), "--cache-dir", str(cache),
           "--port", str(port)]
    if model != "bundled":
        cmd += ["--model", model]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=app_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return proc, time.perf_counter() - start
        except OSError:
            time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(url: str, ks: list[int], n_queries: int, timeout_ms: int = 60_000) -> list[list[str]]:
    """Median / p95 seconds from the key press to visible results, per k and way of typing."""
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(timeout_ms)
        page.goto(url)
        box = page.locator("#query textarea")
        box.wait_for()
        k_box = page.locator("input[type=number]").first  # the k slider's number field
        for k in ks:
            k_box.fill(str(k))
            k_box.press("Enter")
            page.wait_for_timeout(300)
            for way in ("Enter", "as you type"):
                times = []
                for i in range(n_queries + 1):  # the first query of each series warms up and is not counted
                    query = f"{QUERIES[i % len(QUERIES)]} {k}{way[0]}{i}"
                    box.fill("")
                    page.wait_for_timeout(150)
                    if way == "Enter":
                        box.fill(query)
                        start = time.perf_counter()
                        box.press("Enter")
                    else:
                        box.press_sequentially(query[:-1], delay=30)
                        start = time.perf_counter()
                        box.press_sequentially(query[-1])
                    page.wait_for_function(VISIBLE_JS, arg=[query, k], polling=20)
                    if i:
                        times.append(time.perf_counter() - start)
                rows.append([str(k), way, str(len(times)), f"{statistics.median(times):.2f}",
                             f"{percentile(times, 0.95):.2f}"])
        browser.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled", help="bundled (default), tiny, a folder or a Hub id")
    parser.add_argument("--gallery", type=Path, default=ROOT / "bundled_gallery")
    parser.add_argument("--app-root", type=Path, default=ROOT, help="checkout whose app.py runs (default: this)")
    parser.add_argument("--ks", default="5,10,20")
    parser.add_argument("--queries", type=int, default=20, help="timed queries per k and way of typing")
    args = parser.parse_args(argv)
    if not CHROMIUM.is_file():
        sys.stderr.write(f"{CHROMIUM} is absent: apt-get install chromium\n")
        return 2
    ks = [int(k) for k in args.ks.split(",")]
    port = free_port()
    with tempfile.TemporaryDirectory() as cache:
        proc, started = start_app(args.app_root.resolve(), args.model, args.gallery.resolve(), Path(cache), port)
        try:
            time.sleep(5)  # let a background warm-up finish
            rows = measure(f"http://127.0.0.1:{port}/", ks, args.queries)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\napp: {args.app_root}; model: {args.model}; gallery: {args.gallery.name}; "
          f"page served {started:.1f} s after start; {os.cpu_count()} CPUs\n")
    print(markdown_table(["k", "typing", "queries", "median (s)", "p95 (s)"], rows, right=(0, 2, 3, 4)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
