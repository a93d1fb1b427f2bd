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


# -- precomputed scoring for large galleries (used by atr_demo.index) ------------------------------


def metric_factor(metric: MahalanobisMetric | None, atol: float = 1e-6) -> torch.Tensor | None:
    r"""``L`` (d, d) with :math:`M = L^\top L`, or ``None`` when there is no metric or ``M = I``.

    From the eigendecomposition of the symmetric part, :math:`M = Q \Lambda Q^\top`,
    :math:`L = \Lambda^{1/2} Q^\top` (eigenvalues clamped at 0, float64, returned float32). Then
    :math:`c(x, y) = \sqrt{(x-y)^\top M (x-y)} = \lVert Lx - Ly \rVert`, so metric search is
    Euclidean search over the transformed rows :math:`x L^\top`, computed once per gallery: a query
    costs one matrix-vector product, what cosine costs, and the same ANN structure (L2) applies.
    """
    if metric is None:
        return None
    m = metric.M.detach().double()
    m = 0.5 * (m + m.T)
    if torch.allclose(m, torch.eye(len(m), dtype=m.dtype), atol=atol):
        return None
    evals, evecs = torch.linalg.eigh(m)
    return (evals.clamp_min(0).sqrt().unsqueeze(1) * evecs.T).float()


def transform_rows(x: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
    """(n, d) rows → (n, d) rows ``x Lᵀ`` in the metric's Euclidean space (``x`` itself when ``L`` is None)."""
    return x if factor is None else x @ factor.T.to(x.dtype)


def factored_costs(queries: torch.Tensor, gallery_t: torch.Tensor, factor: torch.Tensor | None,
                   gallery_sq: torch.Tensor | None = None) -> torch.Tensor:
    r"""(n, d) queries × (m, d) *transformed* gallery → (n, m) metric costs :math:`\lVert Lq - z_j \rVert`.

    :math:`\lVert Lq - z\rVert^2 = \lVert Lq\rVert^2 + \lVert z\rVert^2 - 2\,Lq\cdot z`, with
    ``gallery_sq`` (m,) = :math:`\lVert z_j\rVert^2` precomputed when given; clamped at 0. Equal to
    ``metric(queries, gallery)`` up to rounding.
    """
    q = transform_rows(queries.float(), factor)
    z = gallery_t.float()
    zz = (z * z).sum(-1) if gallery_sq is None else gallery_sq.float()
    d2 = (q * q).sum(-1, keepdim=True) + zz.unsqueeze(0) - 2.0 * (q @ z.T)
    return d2.clamp_min(0).sqrt()


def anchor_potentials(
    anchor_costs: torch.Tensor, eps: float, max_iter: int = 2000, tol: float = 1e-5
) -> torch.Tensor:
    r"""Gallery-side dual potential ``g`` (m,) of entropic OT between anchors and the gallery.

    ``anchor_costs`` (k, m) holds :math:`C_{ij}` between k anchor queries and m gallery items;
    marginals are uniform, :math:`a = 1/k`, :math:`b = 1/m`. Log-domain Sinkhorn in float32:

    .. math::
        f_i = \varepsilon\log a_i - \varepsilon\,\mathrm{LSE}_j\big((g_j - C_{ij})/\varepsilon\big),\quad
        g_j = \varepsilon\log b_j - \varepsilon\,\mathrm{LSE}_i\big((f_i - C_{ij})/\varepsilon\big),

    until the row marginals' L1 error is below ``tol`` (checked every 10 iterations). Memory is the
    (k, m) cost matrix and one work matrix of that size.
    """
    c = anchor_costs.float()
    k, m = c.shape
    log_a, log_b = -torch.log(torch.tensor(float(k))), -torch.log(torch.tensor(float(m)))
    f = torch.zeros(k)
    g = torch.zeros(m)
    for it in range(max_iter):
        f = eps * log_a - eps * torch.logsumexp((g.unsqueeze(0) - c) / eps, dim=1)
        g = eps * log_b - eps * torch.logsumexp((f.unsqueeze(1) - c) / eps, dim=0)
        if it % 10 == 9:
            rows = torch.exp((f.unsqueeze(1) + g.unsqueeze(0) - c) / eps).sum(1)
            if float((rows - 1.0 / k).abs().sum()) < tol:
                break
    return g


def potential_scores(costs: torch.Tensor, potentials: torch.Tensor, eps: float) -> torch.Tensor:
    r"""Transport scores of queries from precomputed anchor potentials: (n, m) costs, (m,) ``g`` → (n, m).

    :math:`s_{qj} = \mathrm{softmax}_j\big((g_j - C_{qj})/\varepsilon\big)`: the query's row of the
    plan :math:`\exp((f_q + g_j - C_{qj})/\varepsilon)` normalised to sum 1, where ``g`` solves the
    OT problem between the *anchors* and the gallery (:func:`anchor_potentials`) instead of the
    joint problem (query + anchors) that :func:`transport_scores` solves.

    The approximation: in the joint problem the query holds 1/(k+1) of the mass and shifts the
    gallery potentials by O(1/(k+1)); here that shift is ignored, so ``g`` is computed once per
    gallery and anchor set and a query costs one pass over its costs (or an ANN shortlist's). With
    k ≥ 50 anchors the top-10 agrees with the joint solve on 0.9–1.0 of the results (measured
    in ``benchmarks/search_scale.py``). Balanced OT only (``mass = 1``).
    """
    return torch.softmax((potentials.unsqueeze(0) - costs) / eps, dim=1)
