"""Search latency and recall at library scale: ``python benchmarks/search_scale.py [--sizes 10000 100000] --json``.

Synthetic galleries shaped like the bundled model's embeddings: a Gaussian mixture with one
component per bundled clip (mean: the clip's embedding; covariance: ``--spread`` times the full
covariance of the bundled embeddings, so samples vary along the directions real embeddings vary
in), samples L2-normalised. Queries: the bundled gallery's real
captions, embedded by the bundled model. For each size the script writes an index (atr_demo.index
format, IVF always built here), reopens it, and times, per query (medians over the queries):

* ``numpy``: a plain matmul over the gallery + argpartition (the limit for exact search);
* ``exact``: :meth:`atr_demo.index.ann.Searcher.exact`;
* ``faiss_flat``: FAISS IndexFlatIP/IndexFlatL2 (cosine, metric);
* ``ann``: :meth:`~atr_demo.index.ann.Searcher.ann_search` (FAISS IVF, nprobe cells; transport re-ranks a shortlist);
* transport ``joint``: the exact joint solve (query + anchors vs gallery), the reference.

``recall_at_10`` is the overlap of the top 10 with exact search in the same mode (transport:
with the joint solve up to ``--joint-max-n`` clips, above it with the exact potential scores).
Also printed: index build time (write, IVF, transport potentials), load time, the time the app
takes to open the index (``app_open_s``: :class:`atr_demo.index.view.IndexGallery` over
:func:`atr_demo.index.open_index`) and bytes per clip on disk.

``--index FOLDER`` measures a saved index instead (e.g. one of 10⁶ clips built by
``python -m atr_demo index``): load time, resident memory per clip after serving the queries (graph,
metadata columns, the memory-mapped rows the search touched), then the same rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from atr_demo.gallery import index_gallery, model_fingerprint
from atr_demo.index import open_index
from atr_demo.index.ann import Searcher, ann_params, load_ann
from atr_demo.index.build import ann_indexes, transport_precompute
from atr_demo.index.store import COLUMNS, IndexData, read_index, write_index
from atr_demo.index.view import IndexGallery
from atr_demo.model import load_model
from atr_demo.retrieval import metric_factor, transform_rows, transport_scores

ROOT = Path(__file__).resolve().parents[1]


def synthetic_gallery(base: np.ndarray, n: int, spread: float = 0.5, seed: int = 0) -> np.ndarray:
    """(n, d) unit rows from the Gaussian mixture fitted to ``base`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    centred = base - base.mean(axis=0)
    # Σ = Vᵀ diag(s²/(N−1)) V from the SVD of the centred rows: noise = z diag(s/√(N−1)) V
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    scale = np.sqrt(spread) * sv / np.sqrt(max(len(base) - 1, 1))
    out = np.empty((n, base.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        z = rng.standard_normal((m, len(sv))).astype(np.float32)
        out[start : start + m] = base[rng.integers(0, len(base), m)] + (z * scale) @ vt
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _p50(fn, queries: np.ndarray) -> tuple[float, list[np.ndarray]]:
    times, ids = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids.append(fn(q))
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times)), ids


def _recall(ids: list[np.ndarray], ref: list[np.ndarray]) -> float:
    pairs = zip(ids, ref, strict=True)
    return float(np.mean([len(set(a[:10].tolist()) & set(b[:10].tolist())) / 10 for a, b in pairs]))


def _topk(scores: np.ndarray, k: int = 10) -> np.ndarray:
    part = np.argpartition(-scores, k)[:k]
    return part[np.argsort(-scores[part])]


def run(sizes: list[int], n_queries: int, n_joint: int, spread: float = 0.5,  # noqa: C901
        joint_max_n: int = 100_000, ann: bool = True, fp16: bool = True, keep: Path | None = None) -> list[dict]:
    model = load_model(None)
    gallery = index_gallery(model, ROOT / "bundled_gallery", progress=False)
    base = gallery.embeddings.numpy().astype(np.float32)
    captions = gallery.captions()
    queries = model.embed_texts(captions[:n_queries]).numpy().astype(np.float32)
    factor = metric_factor(model.metric)
    rows: list[dict] = []
    for n in sizes:
        dtype = np.float16 if fp16 else np.float32  # the stored rows; the references score them as float32
        emb = synthetic_gallery(base, n, spread).astype(dtype)
        metric_rows = None if factor is None else \
            transform_rows(torch.from_numpy(emb.astype(np.float32)), factor).numpy().astype(dtype)
        meta = {c: [None] * n for c in COLUMNS}
        meta.update(root=[0] * n, path=[f"clip{i:07d}.wav" for i in range(n)], digest=[f"{i:064x}" for i in range(n)],
                    size=[0] * n, mtime_ns=[0] * n)
        with tempfile.TemporaryDirectory() as tmp:
            folder = (keep / f"synthetic_{n}") if keep is not None else Path(tmp) / "index"
            t0 = time.perf_counter()
            anchors, potentials, tsettings = transport_precompute(model, emb, [])
            t_transport = time.perf_counter() - t0
            t0 = time.perf_counter()
            graphs = ann_indexes(emb, metric_rows, fp16) if ann else {}
            t_ivf = time.perf_counter() - t0
            header = {"model": {"name": model.config.name, "fingerprint": model_fingerprint(model)}, "roots": ["."],
                      "roots_abs": [tmp], "ann": ann_params(n, threshold=0 if ann else n + 1, fp16=fp16),
                      "transport": tsettings}
            data = IndexData(folder=folder, header=header, embeddings=emb, meta=meta, metric_rows=metric_rows,
                             potentials=potentials, anchors=anchors)
            t0 = time.perf_counter()
            write_index(data, graphs or None)
            t_save = time.perf_counter() - t0
            t0 = time.perf_counter()
            loaded = read_index(folder)
            graphs = load_ann(folder)
            t_load = time.perf_counter() - t0
            t_app = _app_open(model, folder)
            bytes_per_clip = sum(loaded.header["bytes"].values()) / n
            searcher = Searcher(loaded, factor, model.metric is not None, model.config.eps, graphs)
            build = {"n": n, "mode": "build", "method": "index", "ivf_s": round(t_ivf, 2),
                     "transport_precompute_s": round(t_transport, 2), "anchors": tsettings["anchors"],
                     "save_s": round(t_save, 2), "load_s": round(t_load, 2),
                     "app_open_s": round(t_app, 2), "bytes_per_clip": round(bytes_per_clip)}
            rows.append(build)
            print(json.dumps(build), flush=True)
            emb, metric_rows = emb.astype(np.float32), None if metric_rows is None else metric_rows.astype(np.float32)
            rows.extend(_modes(n, emb, metric_rows, queries, searcher, factor, model, anchors, potentials,
                               n_joint if n <= joint_max_n else 0))
    return rows


def _app_open(model, folder: Path) -> float:
    """Seconds to open ``folder`` the way ``app.py --index`` does: the index, its ANN graphs, and the
    columns the first page needs (captions, captioned rows, names)."""
    t0 = time.perf_counter()
    view = IndexGallery(open_index(model, folder))
    view.captions(), view.captioned(), view.names()
    return time.perf_counter() - t0


def _rss_mb(key: str = "VmRSS:") -> float:
    """Resident MiB of this process: all (``VmRSS:``), anonymous (``RssAnon:``) or file-backed (``RssFile:``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_saved(folder: Path, n_queries: int, n_joint: int, joint_max_n: int) -> list[dict]:
    """Measure a saved index (``--index``): load time, resident bytes per clip after ANN queries, then
    every method and mode as :func:`run` does (the numpy / FAISS-flat references copy it as float32)."""
    model = load_model(None)
    gallery = index_gallery(model, ROOT / "bundled_gallery", progress=False)
    queries = model.embed_texts(gallery.captions()[:n_queries]).numpy().astype(np.float32)
    factor = metric_factor(model.metric)
    rss0, anon0 = _rss_mb(), _rss_mb("RssAnon:")
    t0 = time.perf_counter()
    loaded = read_index(folder)
    graphs = load_ann(folder)
    t_load = time.perf_counter() - t0
    searcher = Searcher(loaded, factor, model.metric is not None, model.config.eps, graphs)
    for q in queries:  # what serving touches: the graph, the columns, the re-ranked rows
        searcher.search(torch.from_numpy(q[None]), 10, "cosine")
    n = len(loaded)
    build = {"n": n, "mode": "build", "method": "saved", "load_s": round(t_load, 2),
             "app_open_s": round(_app_open(model, folder), 2), "ann": loaded.header["ann"],
             "dtype": loaded.header["dtype"], "disk_bytes_per_clip": round(sum(loaded.header["bytes"].values()) / n),
             "ram_bytes_per_clip": round((_rss_mb() - rss0) * 2**20 / n),
             "ram_anon_bytes_per_clip": round((_rss_mb("RssAnon:") - anon0) * 2**20 / n)}
    print(json.dumps(build), flush=True)
    emb = np.asarray(loaded.embeddings, dtype=np.float32)
    metric_rows = None if loaded.metric_rows is None else np.asarray(loaded.metric_rows, dtype=np.float32)
    return [build, *_modes(n, emb, metric_rows, queries, searcher, factor, model, loaded.anchors,
                           loaded.potentials, n_joint if n <= joint_max_n else 0)]


def _modes(n, emb, metric_rows, queries, searcher, factor, model, anchors, potentials, n_joint) -> list[dict]:
    import faiss

    out = []
    space = emb if metric_rows is None else metric_rows
    sq = (space * space).sum(1)
    flat_ip = faiss.IndexFlatIP(emb.shape[1])
    flat_ip.add(emb)
    flat_l2 = faiss.IndexFlatL2(space.shape[1])
    flat_l2.add(space)
    eps = model.config.eps

    def to_space(q: np.ndarray) -> np.ndarray:
        return q if factor is None else q @ factor.numpy().T

    def cost(q: np.ndarray) -> np.ndarray:
        if model.metric is None:
            return 1.0 - emb @ q
        z = to_space(q)
        return np.sqrt(np.maximum(z @ z + sq - 2 * (space @ z), 0))

    methods = {
        "cosine": {
            "numpy": lambda q: _topk(emb @ q),
            "exact": lambda q: searcher.exact(torch.from_numpy(q[None]), 10, "cosine")[1][0],
            "faiss_flat": lambda q: flat_ip.search(q[None], 10)[1][0],
            "ann": lambda q: searcher.ann_search(torch.from_numpy(q[None]), 10, "cosine")[1][0],
        },
        "metric": {
            "numpy": lambda q: _topk(2 * (space @ to_space(q)) - sq),
            "exact": lambda q: searcher.exact(torch.from_numpy(q[None]), 10, "metric")[1][0],
            "faiss_flat": lambda q: flat_l2.search(to_space(q)[None], 10)[1][0],
            "ann": lambda q: searcher.ann_search(torch.from_numpy(q[None]), 10, "metric")[1][0],
        },
        "transport": {
            "numpy": lambda q: _topk(potentials - cost(q)),
            "exact": lambda q: searcher.exact(torch.from_numpy(q[None]), 10, "transport")[1][0],
            "ann": lambda q: searcher.ann_search(torch.from_numpy(q[None]), 10, "transport")[1][0],
        },
    }
    for mode, fns in methods.items():
        ref = None
        if mode == "transport" and n_joint:
            joint_q = queries[:n_joint]
            t, ref = _p50(lambda q: _topk(transport_scores(
                torch.from_numpy(q[None]), torch.from_numpy(emb), model.metric, eps,
                anchors=torch.from_numpy(anchors))[0].numpy()), joint_q)
            row = {"n": n, "mode": mode, "method": "joint", "p50_ms": round(t, 2), "recall_at_10": 1.0}
            out.append(row)
            print(json.dumps(row), flush=True)
        for method, fn in fns.items():
            if method == "ann" and not searcher.ann:
                continue
            qs = queries[: n_joint or 20] if mode == "transport" else queries
            t, ids = _p50(fn, qs)
            if ref is None:
                _, ref = _p50(fns["exact"], qs)
            row = {"n": n, "mode": mode, "method": method, "p50_ms": round(t, 2),
                   "recall_at_10": round(_recall(ids, ref), 3)}
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=100, help="text queries timed per method")
    parser.add_argument("--joint", type=int, default=20, help="queries for the transport joint solve")
    parser.add_argument("--spread", type=float, default=0.5, help="mixture covariance / bundled covariance")
    parser.add_argument("--joint-max-n", type=int, default=100_000, help="largest n with the joint solve")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the indexes to KEEP/synthetic_N (for --index), not a temporary folder")
    parser.add_argument("--fp32", action="store_true", help="store the synthetic indexes in float32, not float16")
    parser.add_argument("--no-ann", action="store_true", help="skip the IVF (and the ANN rows)")
    parser.add_argument("--index", type=Path, default=None,
                        help="measure this saved index instead of synthetic ones (--sizes ignored)")
    parser.add_argument("--json", action="store_true", help="print only the JSON rows (one per line)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.index is not None:
        rows = run_saved(args.index, args.queries, args.joint, args.joint_max_n)
    else:
        rows = run(args.sizes, args.queries, args.joint, args.spread, args.joint_max_n, not args.no_ann,
                   not args.fp32, args.keep)
    if not args.json:
        print("| n | mode | method | p50 ms | recall@10 |")
        print("|---:|---|---|---:|---:|")
        for r in rows:
            if r["mode"] != "build":
                print(f"| {r['n']} | {r['mode']} | {r['method']} | {r['p50_ms']} | {r['recall_at_10']} |")


if __name__ == "__main__":
    main()
