"""Building and updating a search index: ``python -m atr_demo index FOLDER... --out INDEX``.

Incremental by construction. Every audio file of the folders is ``stat``-ed; a file whose root,
relative path, size and modification time match a row of the existing index keeps that row (no
hashing, no decoding). Any other file is hashed (SHA-256); its embedding is taken from the
existing index or the embedding cache when its digest is known there, and embedded otherwise.
Files gone from the folders are dropped. Embedding goes through the shared embedding cache
(:func:`atr_demo.gallery.embed_into_cache`: progress bar, decoding overlapped with the CNN, bf16
where native, progress checkpointed), so a killed run resumes where it stopped.

Sharding: under ``torchrun`` (``WORLD_SIZE`` > 1) each process hashes and embeds every
``WORLD_SIZE``-th share (embedding batches are dealt whole, so each clip is embedded in the
same batch as in a single-process run); the shares are gathered on rank 0 (gloo), which writes
the one index.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atr_demo.errors import ATRError, SearchIndexError
from atr_demo.fileio import file_digest
from atr_demo.gallery import (
    embed_into_cache,
    find_audio_files,
    inference_precision,
    model_fingerprint,
    open_cache,
    read_metadata,
)
from atr_demo.index.ann import ANN_THRESHOLD, ann_params, build_ivf
from atr_demo.index.store import COLUMNS, IndexData, read_index, relative_root, write_index
from atr_demo.model import ATRModel
from atr_demo.retrieval import anchor_potentials, metric_factor, transform_rows
from atr_demo.zeroshot import ESC50_CLASSES, ESC50_DESCRIPTIONS

logger = logging.getLogger(__name__)

#: Most anchor queries, and most anchor × clip cost entries, of the transport precompute.
MAX_ANCHORS = 512
MAX_ANCHOR_COSTS = 100_000_000


@dataclass
class Dist:
    """This process's place among ``world`` indexing processes (``rank`` 0 writes the index)."""

    rank: int = 0
    world: int = 1

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (``[obj]`` when alone)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


    def close(self) -> None:
        """Wait for every process, then leave the process group (no-op when alone)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def dist_from_env() -> Dist:
    """Join the ``torchrun`` process group (gloo) when ``WORLD_SIZE`` > 1, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size())


def _scan(roots: list[Path]) -> list[tuple[int, str, Path, int, int]]:
    """(root index, relative POSIX path, path, size, mtime_ns) of every audio file under ``roots``."""
    rows = []
    for r, root in enumerate(roots):
        for path in find_audio_files(root):
            try:
                st = path.stat()
            except OSError as exc:
                logger.warning("skipping %s: %s", path, exc)
                continue
            rel = path.relative_to(root).as_posix() if root.is_dir() else path.name
            rows.append((r, rel, path, int(st.st_size), int(st.st_mtime_ns)))
    return rows


def _anchor_texts(captions: list[str | None]) -> list[str]:
    """The gallery's distinct captions (first :data:`MAX_ANCHORS`), else the ESC-50 descriptions."""
    texts = list(dict.fromkeys(c for c in captions if c))
    if not texts:
        texts = [d for label in ESC50_CLASSES for d in ESC50_DESCRIPTIONS[label]]
    return texts[:MAX_ANCHORS]


def transport_precompute(model: ATRModel, embeddings: np.ndarray, captions: list[str | None],
                         max_costs: int = MAX_ANCHOR_COSTS) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Anchors (k, d), their dual potentials against the gallery (m,) and the settings recorded.

    The anchors are the text embeddings of :func:`_anchor_texts`, capped so that k·m ≤ ``max_costs``
    (the (k, m) cost matrix is held in memory); see :func:`atr_demo.retrieval.potential_scores`.
    """
    m = len(embeddings)
    texts = _anchor_texts(captions)
    k = max(1, min(len(texts), max_costs // max(m, 1)))
    texts = texts[:k]
    anchors = model.embed_texts(texts).float()
    factor = metric_factor(model.metric)
    t0 = time.perf_counter()
    costs = []
    for start in range(0, m, 65_536):
        block = torch.from_numpy(np.asarray(embeddings[start : start + 65_536], dtype=np.float32))
        if model.metric is None:
            costs.append(1.0 - anchors @ block.T)
        else:
            a, b = transform_rows(anchors, factor), transform_rows(block, factor)
            d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
            costs.append(d2.clamp_min(0).sqrt())
    cost = torch.cat(costs, dim=1)
    g = anchor_potentials(cost, model.config.eps)
    settings = {"anchors": k, "eps": model.config.eps, "source": "captions" if any(captions) else "esc50",
                "seconds": round(time.perf_counter() - t0, 2)}
    return anchors.numpy(), g.numpy().astype(np.float32), settings


def ann_indexes(embeddings: np.ndarray, metric_rows: np.ndarray | None, fp16: bool) -> dict[str, Any]:
    """The FAISS IVF indexes of an index (:func:`atr_demo.index.ann.build_ivf`): cosine (inner
    product over E) and, when M ≠ I, metric (L2 over E Lᵀ); rows stored in fp16 or fp32 like the index."""
    indexes = {"cosine": build_ivf(embeddings, inner_product=True, fp16=fp16)}
    if metric_rows is not None:
        indexes["metric"] = build_ivf(metric_rows, inner_product=False, fp16=fp16)
    return indexes


def _same_settings(old: IndexData, roots: list[Path], fp16: bool, transport: bool,
                   ann_threshold: int) -> bool:
    """Whether ``old`` was built over ``roots`` with the same storage and transport settings."""
    return (old.header.get("roots_abs") == [str(r) for r in roots]
            and old.header.get("dtype") == ("float16" if fp16 else "float32")
            and old.header.get("ann", {}).get("type") == ann_params(len(old), ann_threshold, fp16)["type"]
            and (old.header.get("transport") is not None or not transport))


def build_index(  # noqa: C901 - one pass of clearly ordered phases
    model: ATRModel,
    folders: list[str | Path],
    out: str | Path,
    cache_dir: str | Path | None = None,
    fp16: bool = False,
    transport: bool = True,
    ann_threshold: int = ANN_THRESHOLD,
    batch_size: int = 8,
    progress: bool = True,
    dist: Dist | None = None,
) -> dict[str, Any]:
    """Create or update the index ``out`` for the audio files under ``folders``; return a summary.

    The summary (rank 0; other ranks return ``{"rank": r}``) counts ``clips``, ``reused`` rows,
    ``hashed`` files, ``embedded`` clips, ``removed`` rows and lists ``skipped`` files with reasons.
    """
    dist = dist or Dist()
    out = Path(out)
    roots = [Path(f).expanduser().resolve() for f in folders]
    for root in roots:
        if not root.exists():
            raise ATRError(f"{root} does not exist: pass folders of audio files to index")
    fingerprint = model_fingerprint(model)
    old: IndexData | None = None
    try:
        old = read_index(out, fingerprint, model.config.name) if (out / "index.json").exists() else None
    except SearchIndexError as exc:
        if "built by model" in str(exc):
            raise
        logger.warning("rebuilding damaged index: %s", exc)
    scanned = _scan(roots)
    old_rows: dict[tuple[str, str, int, int], int] = {}
    old_by_digest: dict[str, int] = {}
    if old is not None:
        old_roots = [str(r) for r in old.roots]
        for i in range(len(old)):
            key = (old_roots[old.meta["root"][i]], old.meta["path"][i], old.meta["size"][i], old.meta["mtime_ns"][i])
            old_rows[key] = i
            old_by_digest.setdefault(old.meta["digest"][i], i)
    reuse = [old_rows.get((str(roots[r]), rel, size, mtime)) for r, rel, _, size, mtime in scanned]
    unknown = [n for n, row in enumerate(reuse) if row is None]
    if (old is not None and not unknown and len(scanned) == len(old)
            and _same_settings(old, roots, fp16, transport, ann_threshold)):
        logger.info("index %s is up to date (%d clips)", out, len(old))
        return {"index": str(out), "clips": len(old), "reused": len(old), "hashed": 0, "embedded": 0,
                "removed": 0, "skipped": [], "precision": old.header.get("precision"), "ann": old.header["ann"],
                "transport": old.header.get("transport"), "up_to_date": True}
    # hash the unknown files, each process its share
    mine = {n: file_digest(scanned[n][2]) for n in unknown[dist.rank :: dist.world]}
    digests: dict[int, str] = {}
    for part in dist.gather(mine):
        digests.update(part)
    cache = open_cache(model, cache_dir)
    # what to embed: rank 0's view (another process may already have cached some of it meanwhile)
    todo_digests = dist.gather(
        list(dict.fromkeys(d for d in digests.values() if d not in old_by_digest and d not in cache))
    )[0]
    first_file = {d: n for n, d in sorted(digests.items(), reverse=True)}
    todo_files = [scanned[first_file[d]][2] for d in todo_digests]
    # embed, whole batches dealt round-robin to the processes
    batches = [list(range(s, min(s + batch_size, len(todo_files)))) for s in range(0, len(todo_files), batch_size)]
    my_items = [i for b in batches[dist.rank :: dist.world] for i in b]
    precision = inference_precision()
    durations: dict[str, float] = {}
    skipped = embed_into_cache(model, [todo_files[i] for i in my_items], [todo_digests[i] for i in my_items],
                               cache, batch_size=batch_size, progress=progress and dist.rank == 0,
                               precision=precision, durations=durations)
    mine_emb = {todo_digests[i]: cache.get(todo_digests[i]) for i in my_items if todo_digests[i] in cache}
    gathered = dist.gather((mine_emb, skipped, durations))
    if dist.rank != 0:
        return {"rank": dist.rank}
    new_emb: dict[str, torch.Tensor] = {}
    skipped = []
    for emb, skip, durs in gathered:
        new_emb.update(emb)
        skipped.extend(skip)
        durations.update(durs)
    for key, value in new_emb.items():
        if key not in cache:
            cache.put(key, value)
    cache.save()
    bad = {str(p) for p, _ in skipped}
    # assemble the rows in scan order
    metadata: dict[str, dict[str, Any]] = {}
    for root in roots:
        if root.is_dir():
            metadata.update(read_metadata(root))
    d = int(model.config.embed_dim)
    rows_emb: list[np.ndarray] = []
    meta: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for n, (r, rel, path, size, mtime) in enumerate(scanned):
        if str(path) in bad:
            continue
        row = reuse[n]
        if row is not None and old is not None:
            vec = np.asarray(old.embeddings[row], dtype=np.float32)
            digest, duration = old.meta["digest"][row], old.meta["duration"][row]
        else:
            digest = digests[n]
            if digest in new_emb:
                vec = new_emb[digest].numpy()
            elif digest in cache:
                vec = cache.get(digest).numpy()
            elif old is not None and digest in old_by_digest:
                vec = np.asarray(old.embeddings[old_by_digest[digest]], dtype=np.float32)
            else:  # not embedded (cannot happen unless a process lost its work): leave it out, say so
                logger.warning("no embedding for %s: it is left out of the index; re-run the command", path)
                continue
            duration = durations.get(digest)
        info = metadata.get(str(path.resolve()), {})
        caption = info.get("caption") or (info.get("captions") or [None])[0]
        for col, value in zip(COLUMNS, (r, rel, digest, size, mtime, duration, caption,
                                        info.get("licence") or info.get("license")), strict=True):
            meta[col].append(value)
        rows_emb.append(vec)
    embeddings = np.stack(rows_emb).astype(np.float32) if rows_emb else np.zeros((0, d), np.float32)
    factor = metric_factor(model.metric)
    metric_rows = None if factor is None else transform_rows(torch.from_numpy(embeddings), factor).numpy()
    header: dict[str, Any] = {
        "model": {"name": model.config.name, "fingerprint": fingerprint},
        "roots": [relative_root(out, r) for r in roots],
        "roots_abs": [str(r) for r in roots],
        "precision": precision,
        "ann": ann_params(len(embeddings), ann_threshold, fp16),
    }
    data = IndexData(folder=out, header=header, embeddings=embeddings.astype(np.float16 if fp16 else np.float32),
                     meta=meta, metric_rows=None if metric_rows is None else metric_rows.astype(
                         np.float16 if fp16 else np.float32))
    t0 = time.perf_counter()
    if transport and len(embeddings) and model.config.mass >= 1.0:
        data.anchors, data.potentials, header["transport"] = transport_precompute(model, embeddings, meta["caption"])
    ann = None
    if header["ann"]["type"] == "ivf":
        t1 = time.perf_counter()
        ann = ann_indexes(data.embeddings, data.metric_rows, fp16)  # of the stored values
        header["ann"]["build_seconds"] = round(time.perf_counter() - t1, 2)
    header["precompute_seconds"] = round(time.perf_counter() - t0, 2)
    out.mkdir(parents=True, exist_ok=True)
    write_index(data, ann)
    n_removed = 0 if old is None else len(old) - sum(1 for row in reuse if row is not None)
    return {
        "index": str(out), "clips": len(embeddings), "reused": sum(1 for row in reuse if row is not None),
        "hashed": len(digests), "embedded": len(new_emb), "removed": max(n_removed, 0),
        "skipped": [(str(p), reason) for p, reason in skipped], "precision": precision,
        "ann": header["ann"], "transport": header.get("transport"),
        "bytes_per_clip": math.ceil(sum(data.header.get("bytes", {}).values()) / max(len(embeddings), 1)),
    }
