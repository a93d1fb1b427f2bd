"""Index search maths: the factored metric, exact search against score_matrix, HNSW recall, and the
precomputed transport potentials against the joint solve (small random galleries)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from atr_demo.index.ann import Searcher, build_hnsw, deserialize, serialize
from atr_demo.index.store import COLUMNS, IndexData
from atr_demo.metric import MahalanobisMetric
from atr_demo.retrieval import (
    anchor_potentials,
    cost_matrix,
    factored_costs,
    metric_factor,
    potential_scores,
    score_matrix,
    transform_rows,
    transport_scores,
)


def _unit(n: int, d: int, seed: int, clusters: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)
    x = centres[torch.randint(0, clusters, (n,), generator=g)] + 0.6 * torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=-1)


def _metric(d: int, seed: int = 0) -> MahalanobisMetric:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g) / d**0.5
    metric = MahalanobisMetric(d)
    with torch.no_grad():
        metric.M.copy_(a @ a.T + 0.1 * torch.eye(d))
    return metric


def _data(emb: torch.Tensor, factor: torch.Tensor | None, potentials: np.ndarray | None = None) -> IndexData:
    n = len(emb)
    meta = {c: [None] * n for c in COLUMNS}
    return IndexData(folder=Path("."), header={"ann": {"type": "hnsw", "efSearch": 256}}, embeddings=emb.numpy(),
                     meta=meta, metric_rows=None if factor is None else transform_rows(emb, factor).numpy(),
                     potentials=potentials)


def test_metric_factor_reproduces_the_mahalanobis_distance() -> None:
    metric = _metric(16)
    factor = metric_factor(metric)
    assert factor is not None
    torch.testing.assert_close(factor.T @ factor, metric.M.detach(), atol=1e-5, rtol=1e-5)
    q, g = _unit(5, 16, 1), _unit(300, 16, 2)
    costs = factored_costs(q, transform_rows(g, factor), factor)
    torch.testing.assert_close(costs, metric(q, g).detach(), atol=1e-4, rtol=1e-4)
    assert metric_factor(MahalanobisMetric(16)) is None and metric_factor(None) is None  # M = I: nothing to do


@pytest.mark.parametrize("with_metric", [False, True])
def test_exact_search_matches_score_matrix(with_metric: bool) -> None:
    metric = _metric(16) if with_metric else None
    factor = metric_factor(metric)
    emb, q = _unit(1500, 16, 3), _unit(4, 16, 4)
    searcher = Searcher(_data(emb, factor), factor, metric is not None, eps=0.1)
    for mode in ("cosine", "metric"):
        ref = score_matrix(q, emb, mode=mode, metric=metric)
        scores, ids = searcher.exact(q, 10, mode)
        assert np.array_equal(ids, torch.topk(ref, 10).indices.numpy())
        np.testing.assert_allclose(scores, torch.topk(ref, 10).values.numpy(), atol=1e-4)


@pytest.mark.parametrize("with_metric", [False, True])
def test_hnsw_recall_and_round_trip(with_metric: bool) -> None:
    metric = _metric(16) if with_metric else None
    factor = metric_factor(metric)
    emb, q = _unit(2000, 16, 5), _unit(30, 16, 6)
    data = _data(emb, factor)
    graphs = {"cosine": build_hnsw(data.embeddings)}
    if data.metric_rows is not None:
        graphs["metric"] = build_hnsw(data.metric_rows)
    searcher = Searcher(data, factor, metric is not None, 0.1, deserialize(serialize(graphs)))
    for mode in ("cosine", "metric"):
        _, exact = searcher.exact(q, 10, mode)
        scores, approx = searcher.search(q, 10, mode)  # auto: the graph
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)])
        assert recall >= 0.95
        assert np.all(np.diff(scores, axis=1) <= 1e-6)  # re-ranked exactly: best first


def test_potential_scores_agree_with_the_joint_solve() -> None:
    gallery, anchors, q = _unit(800, 16, 7), _unit(60, 16, 8), _unit(10, 16, 9)
    eps = 0.1
    g = anchor_potentials(cost_matrix(anchors, gallery, None), eps)
    approx = potential_scores(cost_matrix(q, gallery, None), g, eps)
    assert torch.allclose(approx.sum(1), torch.ones(10), atol=1e-5)
    overlap = []
    for i in range(len(q)):
        joint = transport_scores(q[i : i + 1], gallery, None, eps, anchors=anchors)[0]
        top_joint, top_approx = torch.topk(joint, 10).indices.tolist(), torch.topk(approx[i], 10).indices.tolist()
        overlap.append(len(set(top_joint) & set(top_approx)))
    assert np.mean(overlap) / 10 >= 0.8
    # and the index searcher ranks by the same scores
    searcher = Searcher(_data(gallery, None, g.numpy()), None, False, eps)
    _, ids = searcher.exact(q, 10, "transport")
    assert np.array_equal(ids, torch.topk(approx, 10).indices.numpy())


def test_transport_shortlist_from_the_cosine_graph() -> None:
    """An index without a transport graph re-ranks the cosine graph's nearest rows exactly in transport mode."""
    emb, anchors, q = _unit(2000, 16, 10), _unit(40, 16, 11), _unit(20, 16, 12)
    eps = 0.1
    g = anchor_potentials(cost_matrix(anchors, emb, None), eps).numpy()
    data = _data(emb, None, g)
    searcher = Searcher(data, None, False, eps, {"cosine": build_hnsw(data.embeddings)})
    _, exact = searcher.exact(q, 10, "transport")
    scores, approx = searcher.search(q, 10, "transport")
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)])
    assert recall >= 0.95 and np.all(np.diff(scores, axis=1) <= 1e-6)
