"""Scoring modes: cosine, metric, transport (with anchors for lone queries), top-k."""

from __future__ import annotations

import ot
import torch
import torch.nn.functional as F

from atr_demo.metric import MahalanobisMetric
from atr_demo.retrieval import score_matrix, scores_to_probabilities, top_k, transport_scores


def _emb(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_cosine_and_metric_agree_on_ranking_for_euclidean() -> None:
    q, g = _emb(4), _emb(10, seed=1)
    cos = score_matrix(q, g, "cosine")
    met = score_matrix(q, g, "metric", metric=MahalanobisMetric(8, learnable=False))
    # for unit vectors ‖x − y‖ = sqrt(2 − 2 cos): same order
    assert torch.equal(cos.argsort(dim=1), met.argsort(dim=1))
    assert torch.allclose(met, -torch.sqrt((2 - 2 * cos).clamp_min(0)), atol=1e-5)


def test_transport_rows_are_probabilities_and_match_pot() -> None:
    q, g = _emb(6), _emb(6, seed=1)
    scores = transport_scores(q, g, None, eps=0.1)
    assert torch.allclose(scores.sum(dim=1), torch.ones(6), atol=1e-5)
    cost = (1 - q @ g.T).double().numpy()
    ref = ot.sinkhorn(ot.unif(6), ot.unif(6), cost, 0.1, method="sinkhorn_log", numItermax=10000, stopThr=1e-12)
    assert torch.allclose(scores.double(), torch.from_numpy(ref * 6), atol=1e-4)


def test_single_query_needs_anchors() -> None:
    q, g = _emb(1), _emb(5, seed=1)
    alone = transport_scores(q, g, None, eps=0.05)
    # one row with uniform column marginals: the plan is uniform and says nothing
    assert torch.allclose(alone, torch.full((1, 5), 0.2), atol=1e-4)
    anchored = transport_scores(q, g, None, eps=0.05, anchors=_emb(20, seed=2))
    assert anchored.std() > 0.01
    assert torch.allclose(anchored.sum(), torch.tensor(1.0), atol=1e-5)


def test_transport_demotes_a_hub() -> None:
    # gallery item 0 is the nearest neighbour of every query; the plan spreads the queries out
    g = F.normalize(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=1)
    q = F.normalize(torch.tensor([[1.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0], [1.0, 1.0, 1.05]]), dim=1)
    cos_top = score_matrix(q, g, "cosine").argmax(dim=1)
    plan_top = score_matrix(q, g, "transport", eps=0.02).argmax(dim=1)
    assert (cos_top == 0).sum() == 4
    assert sorted(plan_top.tolist()) == [0, 1, 2, 3]


def test_partial_transport_rows_normalised() -> None:
    q, g = _emb(5), _emb(7, seed=3)
    s = transport_scores(q, g, None, eps=0.05, mass=0.8)
    assert torch.isfinite(s).all()
    assert torch.allclose(s.sum(dim=1), torch.ones(5), atol=1e-5)


def test_probabilities_and_top_k() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.5]])
    p = scores_to_probabilities(scores, "cosine", eps=0.1)
    assert torch.allclose(p.sum(), torch.tensor(1.0))
    assert p.argmax() == 0
    values, idx = top_k(scores, 10)
    assert idx.tolist() == [[0, 2, 1]] and values.shape == (1, 3)


def test_transport_anchors_are_spread_over_the_gallery() -> None:
    from atr_demo.search import MAX_ANCHORS, anchor_picks

    assert anchor_picks(5) == [0, 1, 2, 3, 4]
    picks = anchor_picks(1426)
    assert len(picks) == MAX_ANCHORS and picks[0] == 0 and picks[-1] >= 1426 - 3  # first to last, not a prefix
    assert len(set(picks)) == len(picks) and all(0 <= i < 1426 for i in picks)
    gaps = {b - a for a, b in zip(picks, picks[1:], strict=False)}
    assert gaps <= {2, 3}  # evenly spaced
