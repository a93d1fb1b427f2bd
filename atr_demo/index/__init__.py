"""A persistent search index for large sound libraries (10⁵–10⁶ clips).

* :mod:`~atr_demo.index.store`: the on-disk format (memory-mapped ``.npy`` embeddings, columnar
  metadata, header with model, ANN and transport settings) and :func:`read_index`;
* :mod:`~atr_demo.index.build`: :func:`build_index`, incremental (size + mtime, then digest),
  resumable, sharded under ``torchrun``;
* :mod:`~atr_demo.index.ann`: :class:`Searcher`, exact and FAISS IVF search in the cosine,
  metric (factored, ``M = LᵀL``) and transport (precomputed anchor potentials) modes.

:func:`open_index` and :func:`search_text_index` are what the CLI and the app use.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from atr_demo.index.ann import Searcher, load_ann
from atr_demo.index.build import build_index
from atr_demo.index.store import IndexData, read_index
from atr_demo.model import ATRModel
from atr_demo.retrieval import metric_factor

__all__ = ["IndexData", "Searcher", "build_index", "open_index", "read_index", "search_text_index"]

logger = logging.getLogger(__name__)


def open_index(model: ATRModel, folder: str | Path) -> Searcher:
    """Open the index in ``folder`` for ``model`` (refused when built by another model)."""
    from atr_demo.gallery import model_fingerprint

    t0 = time.perf_counter()
    data = read_index(folder, model_fingerprint(model), model.config.name)
    ann = {}
    kind = data.header.get("ann", {}).get("type")
    if kind == "ivf":
        ann = load_ann(data.folder)
    elif kind != "exact":  # an HNSW graph of an earlier release: search exactly until rebuilt
        logger.warning("index %s has a %s graph, which this release no longer reads: searching exactly; re-run "
                       "`python -m atr_demo index ... --out %s` to build its IVF (embeddings are reused)",
                       folder, kind, folder)
    searcher = Searcher(data, metric_factor(model.metric), model.metric is not None, model.config.eps, ann)
    logger.info("opened index %s: %d clips, ann %s, in %.2f s", folder, len(data), data.header["ann"]["type"],
                time.perf_counter() - t0)
    return searcher


def search_text_index(
    model: ATRModel, searcher: Searcher, queries: list[str], k: int = 10, mode: str = "cosine",
    method: str = "auto",
) -> list[dict[str, Any]]:
    """Rank the index for each text query → ``[{"query", "results": [{"file", "score", …}]}]``.

    ``file`` is the clip's path relative to its library folder; ``path`` its absolute path now.
    """
    q = model.embed_texts(queries)
    scores, ids = searcher.search(q, k, mode=mode, method=method)
    data = searcher.data
    return [
        {"query": query,
         "results": [{**data.row_meta(int(i)), "path": str(data.file(int(i))), "score": float(v)}
                     for v, i in zip(vals, idx, strict=True)]}
        for query, vals, idx in zip(queries, scores, ids, strict=True)
    ]
