"""Searching an index: exact scoring, FAISS IVF (inverted file) search, exact re-ranking where needed.

Spaces. Cosine mode searches the L2-normalised embeddings ``E`` by inner product. Metric mode
searches the rows ``E Lᵀ`` with ``M = LᵀL`` (:func:`atr_demo.retrieval.metric_factor`), where the
metric is Euclidean; when ``M = I`` those are ``E`` itself. Transport mode scores
``softmax_j((g_j − C_qj)/ε)`` with the anchors' precomputed potentials ``g``
(:func:`atr_demo.retrieval.potential_scores`) over the whole gallery (exact) or over a shortlist
(ANN): the cost space's :data:`TRANSPORT_CANDIDATES` nearest rows, re-ranked exactly.

ANN: at :data:`ANN_THRESHOLD` clips or more the index holds one FAISS IVF per space (cosine, by
inner product; metric, by L2, only when M ≠ I): ``nlist`` k-means cells (a power of two near
4√n, at least 39 training rows per cell), and a query scans the ``nprobe`` cells nearest to it
(``max(32, nlist/32)``, about 3 % of the library at 10⁶ clips). The cells store the rows in the
index's own precision (fp16 codes for an fp16 index, fp32 otherwise), so the scores FAISS returns
are the exact scores of the stored rows: cosine mode, and metric mode in its own space, need no
re-ranking and never read the memory-mapped embeddings. Exact search in those modes scans every
cell of the same IVF (FAISS decodes fp16 itself instead of converting blocks to float32). Below
the threshold every search is exact.

Why IVF rather than HNSW: on 10⁶ synthetic clips with real text queries (a query distribution away
from the audio rows the graph was built on), HNSW (M 32, efConstruction 80, built in 367 s) gave
recall@10 0.92 in 4 ms and needed efSearch 2048 (22 ms) for 0.96; IVF 4096 cells trains and fills
in 28 s (133 s under load) and gives recall 0.99–1.0 at nprobe 128 in 2–6 ms
(``benchmarks/search_scale.py``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atr_demo.errors import ConfigError
from atr_demo.index.store import IndexData
from atr_demo.retrieval import MODES, potential_scores

logger = logging.getLogger(__name__)

ANN_THRESHOLD = 50_000
#: Training rows per IVF cell (FAISS warns below 39) and the cap on cells.
ROWS_PER_CELL = 40
MAX_CELLS = 65_536
#: Cells scanned per query: max(NPROBE_MIN, nlist // NPROBE_DIVISOR), at most nlist.
NPROBE_MIN = 32
NPROBE_DIVISOR = 32
#: Candidates re-ranked exactly per query where the IVF's scores are not the mode's scores
#: (metric mode with M = I searched in the cosine space) and in transport mode.
CANDIDATES = 256
TRANSPORT_CANDIDATES = 1024
#: Rows scored per block in exact search without an IVF (bounds the float32 working copy).
BLOCK = 65_536


def ivf_cells(n: int) -> int:
    """IVF cells for ``n`` rows: the power of two nearest 4√n, at most n / 39 and :data:`MAX_CELLS`, at least 1."""
    if n <= 0:
        return 1
    cells = 2 ** round(math.log2(max(4.0 * math.sqrt(n), 1.0)))
    return int(max(1, min(cells, n // (ROWS_PER_CELL - 1), MAX_CELLS)))


def ivf_probes(nlist: int) -> int:
    """Cells scanned per query: ``max(NPROBE_MIN, nlist // NPROBE_DIVISOR)``, at most ``nlist``."""
    return int(min(nlist, max(NPROBE_MIN, nlist // NPROBE_DIVISOR)))


def ann_params(n: int, threshold: int = ANN_THRESHOLD, fp16: bool = True) -> dict[str, Any]:
    """The ANN settings recorded in an index of ``n`` clips: IVF at ``threshold`` or more, else exact."""
    if n < threshold or n == 0:
        return {"type": "exact", "threshold": threshold}
    nlist = ivf_cells(n)
    return {"type": "ivf", "nlist": nlist, "nprobe": ivf_probes(nlist), "storage": "fp16" if fp16 else "fp32",
            "candidates": CANDIDATES, "transport_candidates": TRANSPORT_CANDIDATES, "threshold": threshold}


def build_ivf(vectors: np.ndarray, inner_product: bool, fp16: bool, nlist: int | None = None, seed: int = 0) -> Any:
    """A FAISS IVF over ``vectors`` (n, d): inner product (cosine space) or L2 (metric space).

    Cells are trained by k-means (seeded) on ``ROWS_PER_CELL · nlist`` rows drawn with ``seed``;
    rows are stored as fp16 codes (``IndexIVFScalarQuantizer``) or fp32 (``IndexIVFFlat``) and added
    in blocks of :data:`BLOCK`.
    """
    import faiss

    n, d = vectors.shape
    nlist = ivf_cells(n) if nlist is None else int(nlist)
    metric = faiss.METRIC_INNER_PRODUCT if inner_product else faiss.METRIC_L2
    quantizer = faiss.IndexFlatIP(d) if inner_product else faiss.IndexFlatL2(d)
    if fp16:
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16, metric,
                                              False)  # codes of the rows themselves, not of residuals
    else:
        index = faiss.IndexIVFFlat(quantizer, d, nlist, metric)
    index.cp.seed = seed
    sample = np.sort(np.random.default_rng(seed).choice(n, min(n, ROWS_PER_CELL * nlist), replace=False))
    index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    for start in range(0, n, BLOCK):
        index.add(np.ascontiguousarray(vectors[start : start + BLOCK], dtype=np.float32))
    index.nprobe = ivf_probes(nlist)
    return index


def load_ann(folder: Path) -> dict[str, Any]:
    """The IVF indexes of the index in ``folder`` by space, memory-mapped read-only (``IO_FLAG_MMAP``).

    Opening costs no copy: a query reads only the cells it scans, so resident memory grows with
    what searches touch (at most the codes, n · d · 2 bytes for fp16), shared with the page cache.
    """
    import faiss

    from atr_demo.index.store import ann_paths

    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
    return {space: faiss.read_index(str(path), flags) for space, path in ann_paths(folder).items()}


class Searcher:
    """Top-k search of an :class:`IndexData` in the three modes, exact or through its IVF indexes.

    ``factor`` is ``L`` of the model's metric (None: no metric or ``M = I``); ``has_metric`` says
    whether the model has a ground metric at all (transport costs are then metric distances, else
    1 − cosine); ``eps`` the model's ε; ``ann`` the FAISS indexes by space (``cosine``, ``metric``).
    """

    def __init__(self, data: IndexData, factor: torch.Tensor | None, has_metric: bool, eps: float,
                 ann: dict[str, Any] | None = None) -> None:
        self.data = data
        self.factor = factor
        self.has_metric = has_metric
        self.eps = float(eps)
        self.ann = ann or {}
        settings = data.header.get("ann", {})
        self.candidates = int(settings.get("candidates", CANDIDATES))
        self.transport_candidates = int(settings.get("transport_candidates", TRANSPORT_CANDIDATES))
        self.probes = {name: int(settings.get("nprobe", ivf_probes(ix.nlist))) for name, ix in self.ann.items()}
        self._norms: dict[int, np.ndarray] = {}

    # -- spaces ---------------------------------------------------------------------------------
    def _space(self, mode: str) -> np.ndarray:
        """Rows searched in ``mode``: E, or E Lᵀ for metric costs when the metric is not I."""
        if mode == "cosine" or (mode == "transport" and not self.has_metric) or self.data.metric_rows is None:
            return self.data.embeddings
        return self.data.metric_rows

    def _space_name(self, mode: str) -> str:
        return "metric" if self.data.metric_rows is not None and self._space(mode) is self.data.metric_rows \
            else "cosine"

    def _query(self, queries: torch.Tensor, mode: str) -> np.ndarray:
        q = queries.float()
        if self._space_name(mode) == "metric" and self.factor is not None:
            q = q @ self.factor.T
        return np.ascontiguousarray(q.numpy(), dtype=np.float32)

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

    def _faiss_scores(self, space: str, mode: str) -> bool:
        """Whether a FAISS search of ``space`` gives ``mode``'s :meth:`_raw` scores (:meth:`_raw_from_faiss`).

        Not for metric costs in the cosine space (M = I): they also need ‖x‖², so they are re-ranked
        from the rows.
        """
        return space == "metric" or mode == "cosine" or not self.has_metric

    def _raw_from_faiss(self, space: str, mode: str, distances: np.ndarray) -> np.ndarray:
        """The :meth:`_raw` scores from a FAISS search's distances (where :meth:`_faiss_scores`).

        Inner product (cosine space): ⟨q, x⟩, minus 1 for the cosine cost. Squared L2 (metric space):
        −√d².
        """
        if space == "metric":
            return -np.sqrt(np.maximum(distances, 0.0))
        return distances if mode == "cosine" else distances - 1.0

    def _finish(self, raw: np.ndarray, ids: np.ndarray | None, mode: str) -> np.ndarray:
        """Transport: softmax((g − C)/ε) over the scored rows; other modes unchanged."""
        if mode != "transport":
            return raw
        if self.data.potentials is None:
            raise ConfigError(f"index {self.data.folder} has no transport potentials: rebuild it with "
                              "--transport, or use --mode cosine/metric")
        g = self.data.potentials if ids is None else self.data.potentials[ids]
        costs = torch.from_numpy(np.ascontiguousarray(-raw, dtype=np.float32))
        pot = torch.from_numpy(np.array(g, dtype=np.float32))
        if pot.ndim == 1:
            return potential_scores(costs, pot, self.eps).numpy()
        return torch.softmax((pot - costs) / self.eps, dim=1).numpy()

    def _faiss(self, space: str, q: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        ix = self.ann[space]
        return ix.search(q, min(k, ix.ntotal), params=faiss.SearchParametersIVF(nprobe=min(nprobe, ix.nlist)))

    # -- search ---------------------------------------------------------------------------------
    def exact(self, queries: torch.Tensor, k: int, mode: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k: (n, k) scores and (n, k) row ids, best first.

        Cosine and metric mode with the space's IVF: every cell scanned (exact scores of the stored
        rows); otherwise rows are scored in blocks of :data:`BLOCK`.
        """
        self._check(mode)
        q = self._query(queries, mode)
        space = self._space_name(mode)
        if space in self.ann and mode != "transport" and self._faiss_scores(space, mode):
            dist, ids = self._faiss(space, q, k, self.ann[space].nlist)
            if np.all(ids >= 0):
                return self._raw_from_faiss(space, mode, dist).astype(np.float32), ids.astype(np.int64)
        rows = self._space(mode)
        sq = self.squared_norms(rows) if mode != "cosine" and self.has_metric else None
        raw = np.concatenate([self._raw(q, rows[s : s + BLOCK], mode, None if sq is None else sq[s : s + BLOCK])
                              for s in range(0, len(rows), BLOCK)], axis=1)
        return _top(self._finish(raw, None, mode), k)

    def ann_search(self, queries: torch.Tensor, k: int, mode: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
        """IVF search of the mode's space (exact search when the index has no IVF for it).

        Cosine mode, and metric mode in its own space, take FAISS's top k as they are (exact scores
        of the stored rows). Transport mode scores FAISS's :data:`TRANSPORT_CANDIDATES` nearest rows
        with the potentials; metric costs in the cosine space (M = I) re-rank :data:`CANDIDATES`
        rows read from the index. A query whose cells hold fewer than k rows is searched exactly.
        """
        self._check(mode)
        space = self._space_name(mode)
        if space not in self.ann:
            return self.exact(queries, k, mode)
        q = self._query(queries, mode)
        k = max(1, min(int(k), len(self.data)))
        direct = self._faiss_scores(space, mode)
        wanted = k if direct and mode != "transport" else \
            max(k, self.transport_candidates if mode == "transport" else self.candidates)
        dist, cand = self._faiss(space, q, wanted, self.probes[space])
        rows = self._space(mode)
        out_s, out_i = [], []
        for n, (qi, di, ids) in enumerate(zip(q, dist, cand, strict=True)):
            keep = ids >= 0
            if keep.sum() < k:
                scores, pos = self.exact(queries[n : n + 1], k, mode)
                out_s.append(scores[0])
                out_i.append(pos[0])
                continue
            ids, di = ids[keep], di[keep]
            if direct:
                raw = self._raw_from_faiss(space, mode, di[None, :])
            else:
                ids = np.sort(ids)  # read the rows in file order
                raw = self._raw(qi[None, :], rows[ids], mode)
            scores, pos = _top(self._finish(raw, ids, mode), k)
            out_s.append(scores[0])
            out_i.append(ids[pos[0]])
        return np.stack(out_s).astype(np.float32), np.stack(out_i).astype(np.int64)

    def search(self, queries: torch.Tensor, k: int, mode: str = "cosine",
               method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """``method``: ``"exact"``, ``"ann"``, or ``"auto"`` (ANN when the index has an IVF)."""
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
