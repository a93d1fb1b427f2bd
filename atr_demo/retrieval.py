"""Score matrices between queries and a gallery: cosine, ground metric, and transport plan.

All scorers take L2-normalised embeddings ``queries`` (n, d) and ``gallery`` (m, d) and return
an (n, m) float tensor where larger is better.

* ``cosine``: s_ij = ⟨q_i, g_j⟩.
* ``metric``: s_ij = −c(q_i, g_j) with the learned Mahalanobis ground metric
  c(x, y) = sqrt((x − y)ᵀ M (x − y)).
* ``transport``: the paper's test-time scoring. Solve entropic OT between *all* queries and the
  gallery with uniform marginals, π = argmin ⟨π, C⟩ − ε H(π), and score each query by its row
  of the plan, normalised to sum 1: s_ij = π_ij / Σ_k π_ik (the plan's conditional probability
  of gallery item j given query i). Because every gallery item must receive the same mass, an
  item that is close to *every* query (a hub) cannot take all of them: this is the hubness
  correction. With a single query the column marginals force its row to be uniform (1/m for
  every item): the plan carries no information. A lone query is therefore batched with ``anchors``: other
  plausible queries (for example the gallery's reference captions or the zero-shot label
  prompts) that compete for the gallery mass; only the real queries' rows are returned.
"""

from __future__ import annotations

import torch

from atr_demo.errors import ConfigError
from atr_demo.metric import MahalanobisMetric
from atr_demo.ot import partial_sinkhorn_log, sinkhorn_log

MODES = ("cosine", "metric", "transport")


def cost_matrix(queries: torch.Tensor, gallery: torch.Tensor, metric: MahalanobisMetric | None) -> torch.Tensor:
    """(n, d), (m, d) → (n, m) ground costs: the metric's distance, or 1 − cosine without one."""
    if metric is None:
        return 1.0 - queries @ gallery.T
    return metric(queries, gallery)


def transport_plan(
    cost: torch.Tensor, eps: float, mass: float = 1.0, max_iter: int = 2000, tol: float = 1e-7
) -> torch.Tensor:
    """Entropic OT plan (n, m) with uniform marginals for ``cost`` (n, m), in float64.

    ``mass < 1`` gives the entropic partial plan that moves only that much mass.
    """
    cost64 = cost.detach().to(torch.float64)
    if mass >= 1.0:
        return sinkhorn_log(cost64, eps, max_iter=max_iter, tol=tol)
    return partial_sinkhorn_log(cost64, eps, mass, max_iter=max_iter, tol=tol)


def transport_scores(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    metric: MahalanobisMetric | None,
    eps: float,
    anchors: torch.Tensor | None = None,
    mass: float = 1.0,
) -> torch.Tensor:
    """Row-normalised transport plan between ``queries`` (+ ``anchors``) and ``gallery``.

    Args:
        queries: (n, d) embeddings of the queries to score.
        gallery: (m, d) embeddings of the gallery items.
        metric: ground metric for the cost (``None``: 1 − cosine).
        eps: entropic regularisation ε.
        anchors: optional (k, d) extra queries solved jointly with ``queries``; needed when n
            is small (see the module docstring).
        mass: transported mass s (partial OT when < 1).

    Returns:
        (n, m) float32 scores, each row a probability vector over the gallery.
    """
    stacked = queries if anchors is None or len(anchors) == 0 else torch.cat([queries, anchors.to(queries)])
    with torch.no_grad():
        plan = transport_plan(cost_matrix(stacked, gallery, metric), eps, mass)[: len(queries)]
    rows = plan.sum(dim=1, keepdim=True).clamp_min(torch.finfo(plan.dtype).tiny)
    return (plan / rows).to(torch.float32)


def score_matrix(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    mode: str = "cosine",
    metric: MahalanobisMetric | None = None,
    eps: float = 0.05,
    anchors: torch.Tensor | None = None,
    mass: float = 1.0,
) -> torch.Tensor:
    """(n, d) queries × (m, d) gallery → (n, m) scores, larger is better (see module docstring)."""
    if mode not in MODES:
        raise ConfigError(f"unknown scoring mode {mode!r}; choose one of {MODES}")
    with torch.no_grad():
        if mode == "cosine":
            return queries @ gallery.T
        if mode == "metric":
            return -cost_matrix(queries, gallery, metric)
        return transport_scores(queries, gallery, metric, eps, anchors=anchors, mass=mass)


def scores_to_probabilities(scores: torch.Tensor, mode: str, eps: float) -> torch.Tensor:
    """Turn (n, m) scores into per-row probabilities for display.

    cosine: softmax((s − 1) / ε) = softmax(−(1 − cos) / ε); metric: softmax(−c / ε), i.e. the
    Gibbs kernel of the same ε the plan uses; transport scores already are probabilities.
    """
    if mode == "transport":
        return scores
    return torch.softmax(scores / eps, dim=-1)


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``k`` per row of (n, m) scores → (values (n, k'), indices (n, k')), k' = min(k, m)."""
    k = max(1, min(int(k), scores.shape[1]))
    return torch.topk(scores, k, dim=1)
