"""Searching an index: exact scoring in blocks, FAISS HNSW shortlists with exact re-ranking.

Spaces. Cosine mode searches the L2-normalised embeddings ``E`` (for unit vectors
‖q − x‖² = 2 − 2⟨q, x⟩, so L2 and cosine rank alike). Metric mode searches the rows ``E Lᵀ`` with
``M = LᵀL`` (:func:`atr_demo.retrieval.metric_factor`), where the metric is Euclidean; when
``M = I`` those are ``E`` itself. Transport mode scores ``softmax_j((g_j − C_qj)/ε)`` with the
anchors' precomputed potentials ``g`` (:func:`atr_demo.retrieval.potential_scores`) over the
whole gallery (exact) or over a shortlist (ANN): the cost space's graph's
:data:`TRANSPORT_CANDIDATES` nearest rows (default), or, when the index was built with one, a third
graph over :func:`transport_rows` (a maximum-inner-product search for the linearised score), then
exact re-ranking.

ANN: above :data:`ANN_THRESHOLD` clips the index holds a FAISS HNSW graph per space (cosine;
metric only when M ≠ cI)
(``IndexHNSWSQ``, fp16 vectors, M = :data:`HNSW_M`, efConstruction = :data:`EF_CONSTRUCTION`,
searched with efSearch = :data:`EF_SEARCH`); a query takes ``max(candidates, k)`` candidates from it
and re-ranks them exactly. Below the threshold every search is exact.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atr_demo.errors import ConfigError
from atr_demo.index.store import IndexData
from atr_demo.retrieval import MODES, potential_scores

logger = logging.getLogger(__name__)

ANN_THRESHOLD = 50_000
HNSW_M = 32
EF_CONSTRUCTION = 80
EF_SEARCH = 1024
#: Candidates re-ranked exactly per query (cosine, metric) and for transport mode. At 10⁶ synthetic
#: clips (efConstruction 80) efSearch/candidates 512/256 gave recall@10 0.82 in 1.8 ms, 1024/1024
#: 0.92 in 4.3 ms, 2048/1024 0.96 in 22 ms (benchmarks/search_scale.py --index).
CANDIDATES = 1024
TRANSPORT_CANDIDATES = 1024
#: Rows scored per block in exact search (bounds the float32 working copy).
BLOCK = 65_536


def ann_params(n: int, threshold: int = ANN_THRESHOLD) -> dict[str, Any]:
    """The ANN settings recorded in an index of ``n`` clips: HNSW above ``threshold``, else exact."""
    if n < threshold:
        return {"type": "exact", "threshold": threshold}
    return {"type": "hnsw", "M": HNSW_M, "efConstruction": EF_CONSTRUCTION, "efSearch": EF_SEARCH,
            "storage": "fp16", "candidates": CANDIDATES, "transport_candidates": TRANSPORT_CANDIDATES,
            "transport_graph": False, "threshold": threshold}


def build_hnsw(vectors: np.ndarray, m: int = HNSW_M, ef_construction: int = EF_CONSTRUCTION) -> Any:
    """A FAISS ``IndexHNSWSQ`` (fp16 storage, L2) over ``vectors`` (n, d), added in blocks."""
    import faiss

    index = faiss.IndexHNSWSQ(vectors.shape[1], faiss.ScalarQuantizer.QT_fp16, m)
    index.hnsw.efConstruction = ef_construction
    index.train(np.ascontiguousarray(vectors[: min(len(vectors), 65_536)], dtype=np.float32))
    for start in range(0, len(vectors), BLOCK):
        index.add(np.ascontiguousarray(vectors[start : start + BLOCK], dtype=np.float32))
    return index


def transport_rows(space: np.ndarray, potentials: np.ndarray, c0: float, sq: np.ndarray) -> np.ndarray:
    r"""(m, d + 2) rows whose L2 nearest neighbours of ``[u, 0]`` rank the linearised transport score.

    The score :math:`g_j - c(q, z_j)` with :math:`c = \lVert Lq - z_j\rVert`: linearising
    :math:`c \approx c_0 + (c^2 - c_0^2)/(2c_0)` around a typical top cost :math:`c_0` gives, up to
    terms that do not depend on j, :math:`(u \cdot y_j)/c_0` with :math:`u = [Lq, 1]` and
    :math:`y_j = [z_j,\ c_0 g_j - \lVert z_j\rVert^2/2]` (exact, with :math:`c_0 = 1`, for the
    cosine cost :math:`1 - q\cdot x`). Inner-product search becomes L2 search by appending
    :math:`\sqrt{R^2 - \lVert y_j\rVert^2}`, :math:`R = \max_j \lVert y_j\rVert`.
    """
    y = np.concatenate([np.asarray(space, np.float32), (c0 * potentials - 0.5 * sq)[:, None].astype(np.float32)], 1)
    norms = (y * y).sum(1)
    extra = np.sqrt(np.maximum(norms.max() - norms, 0.0))[:, None].astype(np.float32)
    return np.concatenate([y, extra], 1)


def serialize(indexes: dict[str, Any]) -> bytes:
    """FAISS indexes by space name → one byte string (``np.savez`` of their serialisations)."""
    import io

    import faiss

    buf = io.BytesIO()
    np.savez(buf, **{name: faiss.serialize_index(ix) for name, ix in indexes.items()})
    return buf.getvalue()


def deserialize(blob: bytes | np.ndarray | Path) -> dict[str, Any]:
    """Inverse of :func:`serialize`; a path is read graph by graph (no copy of the whole file in memory)."""
    import io

    import faiss

    with np.load(blob if isinstance(blob, Path) else io.BytesIO(bytes(blob))) as data:
        return {name: faiss.deserialize_index(data[name]) for name in data.files}


class Searcher:
    """Top-k search of an :class:`IndexData` in the three modes, exact or through its ANN graphs.

    ``factor`` is ``L`` of the model's metric (None: no metric or ``M = I``); ``has_metric`` says
    whether the model has a ground metric at all (transport costs are then metric distances, else
    1 − cosine); ``eps`` the model's ε.
    """

    def __init__(self, data: IndexData, factor: torch.Tensor | None, has_metric: bool, eps: float,
                 ann: dict[str, Any] | None = None) -> None:
        self.data = data
        self.factor = factor
        self.has_metric = has_metric
        self.eps = float(eps)
        self.ann = ann or {}
        self._norms: dict[int, np.ndarray] = {}
        for ix in self.ann.values():
            ix.hnsw.efSearch = int(data.header["ann"].get("efSearch", EF_SEARCH))

    # -- spaces ---------------------------------------------------------------------------------
    def _space(self, mode: str) -> np.ndarray:
        """Rows searched in ``mode``: E, or E Lᵀ for metric costs when the metric is not I."""
        if mode == "cosine" or (mode == "transport" and not self.has_metric) or self.data.metric_rows is None:
            return self.data.embeddings
        return self.data.metric_rows

    def _query(self, queries: torch.Tensor, mode: str) -> np.ndarray:
        q = queries.float()
        if self._space(mode) is self.data.metric_rows and self.factor is not None:
            q = q @ self.factor.T
        return q.numpy().astype(np.float32)

    def squared_norms(self, space: np.ndarray) -> np.ndarray:
        """(m,) ‖row‖² of a search space, computed once per space (in blocks) and kept."""
        key = id(space)
        if key not in self._norms:
            self._norms[key] = np.concatenate([
                np.einsum("ij,ij->i", b, b) for b in
                (np.asarray(space[s : s + BLOCK], dtype=np.float32) for s in range(0, len(space), BLOCK))
            ]) if len(space) else np.zeros(0, np.float32)
        return self._norms[key]

    def _raw(self, q: np.ndarray, rows: np.ndarray, mode: str, sq: np.ndarray | None = None) -> np.ndarray:
        """(n, d) queries × (r, d) rows → (n, r) scores before transport: ⟨q, x⟩ or −cost.

        ``sq`` (r,) are the rows' squared norms when known (metric costs need them).
        """
        rows = np.asarray(rows, dtype=np.float32)
        dots = q @ rows.T
        if mode == "cosine":
            return dots
        if not self.has_metric:  # transport with the cosine cost
            return dots - 1.0
        sq = np.einsum("ij,ij->i", rows, rows) if sq is None else sq
        d2 = (q * q).sum(1, keepdims=True) + sq[None, :] - 2.0 * dots
        return -np.sqrt(np.maximum(d2, 0.0))

    def _finish(self, raw: np.ndarray, ids: np.ndarray | None, mode: str) -> np.ndarray:
        """Transport: softmax((g − C)/ε) over the scored rows; other modes unchanged."""
        if mode != "transport":
            return raw
        if self.data.potentials is None:
            raise ConfigError(f"index {self.data.folder} has no transport potentials: rebuild it with "
                              "--transport, or use --mode cosine/metric")
        g = self.data.potentials if ids is None else self.data.potentials[ids]
        costs = torch.from_numpy(-raw)
        pot = torch.from_numpy(np.array(g, dtype=np.float32))
        if pot.ndim == 1:
            return potential_scores(costs, pot, self.eps).numpy()
        return torch.softmax((pot - costs) / self.eps, dim=1).numpy()

    # -- search ---------------------------------------------------------------------------------
    def exact(self, queries: torch.Tensor, k: int, mode: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k: (n, k) scores and (n, k) row ids, best first; rows scored in blocks."""
        self._check(mode)
        q = self._query(queries, mode)
        rows = self._space(mode)
        sq = self.squared_norms(rows) if mode != "cosine" and self.has_metric else None
        raw = np.concatenate([self._raw(q, rows[s : s + BLOCK], mode, None if sq is None else sq[s : s + BLOCK])
                              for s in range(0, len(rows), BLOCK)], axis=1)
        scores = self._finish(raw, None, mode)
        return _top(scores, k)

    def ann_search(self, queries: torch.Tensor, k: int, mode: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
        """HNSW shortlist of the mode's space, re-ranked exactly (exact search when there is no graph).

        Transport mode takes its shortlist from the transport graph, or, in an index built without
        one, :data:`TRANSPORT_CANDIDATES` nearest rows of its cost space's graph (cosine or metric).
        """
        self._check(mode)
        space = "metric" if self._space(mode) is self.data.metric_rows and self.data.metric_rows is not None \
            else "cosine"
        if mode == "transport" and "transport" in self.ann:
            space = "transport"
        if space not in self.ann:
            return self.exact(queries, k, mode)
        q = self._query(queries, mode)
        settings = self.data.header.get("ann", {})
        wanted = int(settings.get("transport_candidates", TRANSPORT_CANDIDATES)) if mode == "transport" \
            else int(settings.get("candidates", CANDIDATES))
        probe = q
        if space == "transport":  # [u, 0] with u = [Lq, 1]: see transport_rows
            probe = np.concatenate([q, np.ones((len(q), 1), np.float32), np.zeros((len(q), 1), np.float32)], 1)
        _, cand = self.ann[space].search(probe, max(k, wanted))
        rows = self._space(mode)
        out_s, out_i = [], []
        for qi, ids in zip(q, cand, strict=True):
            ids = np.unique(ids[ids >= 0])
            raw = self._raw(qi[None, :], rows[ids], mode)
            scores, pos = _top(self._finish(raw, ids, mode), k)
            out_s.append(scores[0])
            out_i.append(ids[pos[0]])
        return np.stack(out_s), np.stack(out_i)

    def search(self, queries: torch.Tensor, k: int, mode: str = "cosine",
               method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """``method``: ``"exact"``, ``"ann"``, or ``"auto"`` (ANN when the index has a graph)."""
        if method == "exact" or (method == "auto" and not self.ann):
            return self.exact(queries, k, mode)
        return self.ann_search(queries, k, mode)

    def _check(self, mode: str) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown scoring mode {mode!r}; choose one of {MODES}")


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of (n, m) scores, best first (argpartition, then a sort of the k)."""
    k = max(1, min(int(k), scores.shape[1]))
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(part, order, axis=1)
