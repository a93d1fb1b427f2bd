r"""Structure of paired embedding spaces: k-NN graph similarity and linear CKA.

Two spaces ``A`` (n, d_a) and ``B`` (n, d_b) are *paired*: row i of each describes the same item
(clip i's audio embedding and the mean embedding of its captions; or clip i under two
checkpoints). Two complementary similarities are measured:

* **k-NN graph similarity** (local structure). :math:`N_A(i)` is the set of the k nearest
  *other* rows of row i in A (self excluded, ties broken by the lower index), likewise
  :math:`N_B(i)`; the similarity is the mean Jaccard index

  .. math::
      \operatorname{knn}_k(A, B) = \frac1n \sum_i \frac{|N_A(i) \cap N_B(i)|}{|N_A(i) \cup N_B(i)|}
      = \frac1n \sum_i \frac{|N_A(i) \cap N_B(i)|}{2k - |N_A(i) \cap N_B(i)|} .

  It is 1 when both spaces have the same neighbourhoods, and close to
  :func:`chance_knn_overlap` (n, k) when they are unrelated.

* **Linear CKA** (global structure; Kornblith et al., 2019). With column-centred A and B,

  .. math::
      \operatorname{CKA}(A, B) = \frac{\|B^\top A\|_F^2}{\|A^\top A\|_F \, \|B^\top B\|_F}
      \in [0, 1],

  invariant to orthogonal transforms and isotropic scaling of either space (not to arbitrary
  invertible linear maps).

Distances (:data:`DISTANCES`): ``cosine`` (1 − cos), ``euclidean`` (‖x_i − x_j‖₂) and
``metric``, the model's learned Mahalanobis ground metric
:math:`\sqrt{(x_i - x_j)^\top M (x_i - x_j)}` — meaningful only inside the joint space it was
learnt for. Everything is computed in float64.

Reports (:func:`structure_report`) key their per-k values by ``str(k)`` (``"1"``, ``"5"``, ...)
so that they are JSON-serialisable as they are.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from atr_demo.errors import ConfigError
from atr_demo.metric import MahalanobisMetric

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DISTANCES",
    "chance_knn_overlap",
    "knn_indices",
    "knn_overlap",
    "linear_cka",
    "pairwise_distances",
    "plot_knn_overlap",
    "structure_report",
]

logger = logging.getLogger(__name__)

#: Distances understood by :func:`pairwise_distances`.
DISTANCES = ("cosine", "euclidean", "metric")


def _matrix(x: Tensor, name: str = "x") -> Tensor:
    """``x`` as a finite float64 (n, d) matrix on the CPU, detached."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.dim() != 2:
        raise ConfigError(f"{name} must be an (n, d) matrix of embeddings, got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ConfigError(f"{name} holds NaN or infinite values")
    return x


def _check_distance(distance: str, dim: int, metric: MahalanobisMetric | None, name: str = "x") -> None:
    if distance not in DISTANCES:
        raise ConfigError(f"unknown distance {distance!r}; choose from {', '.join(DISTANCES)}")
    if distance != "metric":
        return
    if metric is None:
        raise ConfigError("the 'metric' distance needs the model's ground metric (a MahalanobisMetric); none was given")
    if not isinstance(metric, MahalanobisMetric):
        raise ConfigError(f"the 'metric' distance needs a MahalanobisMetric, got {type(metric).__name__}")
    if metric.dim != dim:
        raise ConfigError(
            f"the ground metric is {metric.dim}-dimensional but {name} has {dim} columns: the 'metric' distance "
            "only applies to embeddings in the joint space it was learnt for"
        )


def pairwise_distances(x: Tensor, distance: str = "cosine", metric: MahalanobisMetric | None = None) -> Tensor:
    r"""All pairwise distances (n, n), float64, between the rows of ``x`` (n, d).

    * ``cosine``: :math:`1 - \langle x_i, x_j\rangle / (\|x_i\| \|x_j\|)` in [0, 2] (a zero row
      has cosine 0 to everything);
    * ``euclidean``: :math:`\|x_i - x_j\|_2`, from the differences (no Gram-matrix cancellation);
    * ``metric``: :math:`\sqrt{(x_i - x_j)^\top M (x_i - x_j)}` via ``metric(x, x)``; needs a
      :class:`~atr_demo.metric.MahalanobisMetric` with ``metric.dim == d``.

    The diagonal is exactly 0.

    Raises:
        ConfigError: unknown distance, ``x`` not 2-D or not finite, or a missing / mismatched metric.
    """
    x = _matrix(x)
    _check_distance(distance, x.shape[1], metric)
    if distance == "cosine":
        unit = F.normalize(x, dim=1)
        dist = (1.0 - unit @ unit.T).clamp_(0.0, 2.0)
    elif distance == "euclidean":
        dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    else:
        assert metric is not None
        with torch.no_grad():
            dist = metric(x, x).detach().to(torch.float64)
    dist.fill_diagonal_(0.0)
    return dist


def _neighbour_order(x: Tensor, distance: str, metric: MahalanobisMetric | None) -> Tensor:
    """(n, n − 1) indices of the other rows of ``x`` sorted by distance, ties by lower index."""
    dist = pairwise_distances(x, distance, metric)
    n = dist.shape[0]
    dist.fill_diagonal_(math.inf)
    # a stable sort keeps equal distances in index order: ties go to the lower index
    order = torch.sort(dist, dim=1, stable=True).indices
    return order[:, : n - 1]


def _check_k(k: int, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 or k > n - 1:
        raise ConfigError(f"k must be an integer between 1 and n - 1 = {n - 1} (the other items), got {k!r}")


def knn_indices(x: Tensor, k: int, distance: str = "cosine", metric: MahalanobisMetric | None = None) -> Tensor:
    """Indices (n, k), int64, of the k nearest *other* rows of each row of ``x`` (n, d), nearest first.

    Self is excluded even when a duplicate row is at distance 0; equal distances are broken by
    the lower index, so the result is deterministic.

    Raises:
        ConfigError: ``k < 1`` or ``k > n − 1``, or a bad distance / metric (see :func:`pairwise_distances`).
    """
    n = _matrix(x).shape[0]
    _check_k(k, n)
    return _neighbour_order(x, distance, metric)[:, : int(k)].contiguous()


def _jaccard(na: Tensor, nb: Tensor) -> float:
    """Mean Jaccard index of the rows of two (n, k) neighbour-index matrices over n items."""
    n, k = na.shape
    member_a = torch.zeros(n, n, dtype=torch.bool).scatter_(1, na, True)
    member_b = torch.zeros(n, n, dtype=torch.bool).scatter_(1, nb, True)
    inter = (member_a & member_b).sum(dim=1).to(torch.float64)
    return float((inter / (2 * k - inter)).mean())


def knn_overlap(
    a: Tensor,
    b: Tensor,
    k: int,
    distance: str = "cosine",
    distance_b: str | None = None,
    metric: MahalanobisMetric | None = None,
    metric_b: MahalanobisMetric | None = None,
) -> float:
    r"""Mean Jaccard similarity of the k-NN sets of paired spaces ``a`` (n, d_a) and ``b`` (n, d_b).

    .. math:: \frac1n \sum_i |N_A(i) \cap N_B(i)| \,/\, |N_A(i) \cup N_B(i)| \in [0, 1]

    ``distance`` / ``metric`` apply to ``a``; ``distance_b`` / ``metric_b`` to ``b`` and default
    to ``distance`` / ``metric``.

    Raises:
        ConfigError: the row counts differ, k is out of range, or a bad distance / metric.
    """
    a, b = _matrix(a, "a"), _matrix(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ConfigError(f"paired spaces need the same number of rows, got {a.shape[0]} and {b.shape[0]}")
    _check_k(k, a.shape[0])
    distance_b = distance if distance_b is None else distance_b
    metric_b = metric if metric_b is None else metric_b
    _check_distance(distance, a.shape[1], metric, "a")
    _check_distance(distance_b, b.shape[1], metric_b, "b")
    return _jaccard(knn_indices(a, k, distance, metric), knn_indices(b, k, distance_b, metric_b))


def chance_knn_overlap(n: int, k: int) -> float:
    r"""Expected Jaccard index of two independent uniformly random k-subsets of the n − 1 others.

    The intersection size J is hypergeometric (population m = n − 1, k marked, k drawn):

    .. math::
        P(J = j) = \binom{k}{j}\binom{m - k}{k - j} \Big/ \binom{m}{k}, \qquad
        \mathbb E\Big[\frac{J}{2k - J}\Big] = \sum_{j} P(J = j)\, \frac{j}{2k - j} .

    Exact (integer binomials); this is the k-NN similarity of two unrelated spaces.

    Raises:
        ConfigError: ``n < 2``, or ``k`` outside 1 … n − 1.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
        raise ConfigError(f"chance overlap needs n >= 2 items, got {n!r}")
    _check_k(k, n)
    n, k = int(n), int(k)
    m = n - 1
    total = math.comb(m, k)
    expected = 0.0
    for j in range(max(1, 2 * k - m), k + 1):
        expected += math.comb(k, j) * math.comb(m - k, k - j) / total * j / (2 * k - j)
    return float(expected)


def linear_cka(a: Tensor, b: Tensor) -> float:
    r"""Linear CKA of paired spaces ``a`` (n, d_a) and ``b`` (n, d_b), in float64.

    With :math:`\bar A, \bar B` the column-centred matrices,

    .. math::
        \operatorname{CKA} = \frac{\|\bar B^\top \bar A\|_F^2}{\|\bar A^\top \bar A\|_F \, \|\bar B^\top \bar B\|_F}
        = \frac{\operatorname{HSIC}(K, L)}{\sqrt{\operatorname{HSIC}(K, K)\operatorname{HSIC}(L, L)}},
        \quad K = AA^\top,\ L = BB^\top,

    clamped to [0, 1] against rounding.

    Raises:
        ConfigError: the row counts differ, n < 2, or a space is constant (CKA is undefined).
    """
    a, b = _matrix(a, "a"), _matrix(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ConfigError(f"paired spaces need the same number of rows, got {a.shape[0]} and {b.shape[0]}")
    if a.shape[0] < 2:
        raise ConfigError(f"linear CKA needs at least 2 items, got {a.shape[0]}")
    a = a - a.mean(dim=0, keepdim=True)
    b = b - b.mean(dim=0, keepdim=True)
    cross = torch.linalg.matrix_norm(b.T @ a) ** 2
    norm_a = torch.linalg.matrix_norm(a.T @ a)
    norm_b = torch.linalg.matrix_norm(b.T @ b)
    if norm_a == 0 or norm_b == 0:
        raise ConfigError("linear CKA is undefined for a constant space (every row identical)")
    return float(min(1.0, max(0.0, float(cross / (norm_a * norm_b)))))


def owner_means(rows: Tensor, owner: Tensor, n: int) -> Tensor:
    """(n, d) unit rows: the L2-normalised mean of the rows (m, d) that belong to each of n owners.

    ``owner`` (m,) maps row j to its owner in ``[0, n)`` — e.g. caption j to its clip, so that a
    clip's text side is normalize(mean of its captions' embeddings). An owner without rows gets
    a zero row.
    """
    if rows.dim() != 2 or tuple(owner.shape) != (rows.shape[0],):
        raise ConfigError(f"rows must be (m, d) and owner (m,), got {tuple(rows.shape)} and {tuple(owner.shape)}")
    sums = torch.zeros(n, rows.shape[1], dtype=rows.dtype).index_add_(0, owner.long(), rows)
    counts = torch.bincount(owner.long(), minlength=n).clamp_min(1).unsqueeze(1).to(rows.dtype)
    return torch.nn.functional.normalize(sums / counts, dim=-1)


def structure_report(
    a: Tensor,
    b: Tensor,
    ks: Sequence[int] = (1, 5, 10, 20),
    distances: Sequence[str] = ("cosine", "euclidean"),
    metric: MahalanobisMetric | None = None,
) -> dict[str, Any]:
    """Linear CKA and k-NN similarity of paired spaces ``a`` (n, d_a), ``b`` (n, d_b) for several k.

    Returns a JSON-able dict, per-k values keyed by ``str(k)`` in increasing k::

        {"n": n, "cka": float,
         "chance": {"1": float, "5": float, ...},             # chance_knn_overlap(n, k)
         "knn": {distance: {"1": float, "5": float, ...}}}     # knn_overlap(a, b, k, distance)

    ``ks`` ≥ n are skipped with a logged warning. The ``metric`` distance applies ``metric`` to
    both spaces, so it is only valid when both live in the same joint space (``metric.dim`` equal
    to both widths).

    Raises:
        ConfigError: mismatched rows, an unknown distance, a k < 1, no k < n left, or a
            missing / mismatched metric.
    """
    a, b = _matrix(a, "a"), _matrix(b, "b")
    n = a.shape[0]
    if b.shape[0] != n:
        raise ConfigError(f"paired spaces need the same number of rows, got {n} and {b.shape[0]}")
    for distance in distances:
        _check_distance(distance, a.shape[1], metric, "a")
        _check_distance(distance, b.shape[1], metric, "b")
    wanted = sorted(set(int(k) for k in ks))
    if any(k < 1 for k in wanted):
        raise ConfigError(f"every k must be >= 1, got {list(ks)}")
    kept = [k for k in wanted if k < n]
    if len(kept) < len(wanted):
        logger.warning("skipping k = %s: only %d items (k must be at most n - 1 = %d)",
                       ", ".join(str(k) for k in wanted if k >= n), n, n - 1)
    if not kept:
        raise ConfigError(f"no k left: every k in {wanted} needs more than the {n} items given")
    knn: dict[str, dict[str, float]] = {}
    for distance in distances:
        order_a = _neighbour_order(a, distance, metric)
        order_b = _neighbour_order(b, distance, metric)
        knn[distance] = {str(k): _jaccard(order_a[:, :k], order_b[:, :k]) for k in kept}
    return {
        "n": n,
        "cka": linear_cka(a, b),
        "chance": {str(k): chance_knn_overlap(n, k) for k in kept},
        "knn": knn,
    }


def plot_knn_overlap(reports: Mapping[str, Any], title: str = "k-NN graph similarity") -> Figure:
    """k-NN similarity against k: one line per (label, distance), a dashed chance line.

    Args:
        reports: ``{label: report}`` of :func:`structure_report` results, or one report (no label).
        title: the axes title.

    The x axis is logarithmic with a tick at each k; the legend gives each comparison's linear
    CKA. Built on :class:`matplotlib.figure.Figure` (no pyplot, no backend change): save it with
    ``fig.savefig(path)``.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    if "knn" in reports and "chance" in reports:
        reports = {"": reports}
    if not reports:
        raise ConfigError("nothing to plot: no structure report given")
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.subplots()
    markers = "osD^vP*X"
    all_ks: set[int] = set()
    for r, (label, report) in enumerate(reports.items()):
        for d, (distance, values) in enumerate(report["knn"].items()):
            ks = [int(k) for k in values]
            all_ks.update(ks)
            name = f"{label}: {distance}" if label else distance
            ax.plot(ks, list(values.values()), marker=markers[d % len(markers)], color=f"C{r % 10}",
                    linestyle=("-", "-.", ":")[d % 3], label=f"{name} (CKA {report['cka']:.3f})")
    chance_by_n: dict[int, dict[str, float]] = {}
    for report in reports.values():
        chance_by_n.setdefault(int(report["n"]), {}).update(report["chance"])
    for n, chance in sorted(chance_by_n.items()):
        ks = sorted(int(k) for k in chance)
        all_ks.update(ks)
        ax.plot(ks, [chance[str(k)] for k in ks], linestyle="--", color="0.45",
                label=f"chance (n = {n})" if len(chance_by_n) > 1 else "chance")
    ticks = sorted(all_ks)
    if len(ticks) > 1:
        ax.set_xscale("log")
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("k (nearest neighbours)")
    ax.set_ylabel("mean Jaccard of k-NN sets")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, loc="best")
    return fig
