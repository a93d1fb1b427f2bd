r"""Hubness corrections of query × gallery score matrices, calibrated on a bank of other queries.

A *hub* is a gallery item that is close to many queries and so appears in many top-k lists,
right or wrong. The corrections here rescale each gallery item's scores by how strongly it
attracts the queries of a *bank* — queries of the same kind as the real ones (training captions
for text→audio, training clips for audio→text and zero-shot) drawn from data other than the
evaluated data (a bank from the evaluated distribution is a leak).

Shapes: ``scores`` (n, m) holds s_ij between n queries and m gallery items (larger is better,
cosine similarities of unit vectors in this project); ``bank_scores`` (b, m) holds s_bj between
b bank queries and the same gallery. Every function returns (n, m) scores, larger is better,
ranked per row (per query); scores of different rows are not made comparable.

* :func:`inverted_softmax` — QB-Norm's inverted softmax (Bogolin et al., CVPR 2022):
  :math:`\exp(\beta s_{ij}) / \sum_b \exp(\beta s_{bj})`, returned as its logarithm
  :math:`\beta s_{ij} - \log\sum_b \exp(\beta s_{bj})` (the same ranking, without overflow).
* :func:`dynamic_inverted_softmax` — QB-Norm with the *dynamic* inverted softmax: only the rows
  whose top-1 item is in the activation set (items that are some bank query's top-k) are
  normalised; the others keep their raw scores.
* :func:`csls` — cross-domain similarity local scaling (Conneau et al., ICLR 2018):
  :math:`2 s_{ij} - r_G(i) - r_B(j)` with k-NN mean similarities.
* :func:`class_prior`, :func:`prior_corrected` — zero-shot class-prior calibration: the prior the
  model assigns to each label over unlabelled bank clips, divided out of its probabilities.
* :func:`centred` — every gallery column minus its mean over the bank.
* :func:`k_occurrence`, :func:`skewness` — the hubness measure: how often each gallery item is in
  a query's top-k, and the skewness of those counts (0 for a symmetric spread, large when few
  items are in most lists).
"""

from __future__ import annotations

import math

import torch

from atr_demo.errors import ConfigError

#: QB-Norm's default inverse temperature β (Bogolin et al. use 20 for most benchmarks).
QB_BETA = 20.0
#: CSLS neighbourhood size k (Conneau et al. use 10).
CSLS_K = 10


def _check(scores: torch.Tensor, bank_scores: torch.Tensor) -> None:
    if scores.dim() != 2 or bank_scores.dim() != 2 or scores.shape[1] != bank_scores.shape[1]:
        raise ConfigError(f"scores {tuple(scores.shape)} and bank scores {tuple(bank_scores.shape)} must be "
                          "(n, m) and (b, m) matrices over the same gallery of m items")


def inverted_softmax(scores: torch.Tensor, bank_scores: torch.Tensor, beta: float = QB_BETA) -> torch.Tensor:
    r"""QB-Norm's inverted softmax in log form, (n, m) → (n, m).

    .. math::
        \tilde s_{ij} = \beta s_{ij} - \log \sum_{b} \exp(\beta s_{bj})

    the log of :math:`\exp(\beta s_{ij}) / \sum_b \exp(\beta s_{bj})`: a gallery item that many bank
    queries score highly gets a large normaliser and is demoted. An empty bank returns ``scores``.
    Computed in float64; returned in the dtype of ``scores``.
    """
    _check(scores, bank_scores)
    if len(bank_scores) == 0:
        return scores
    norm = torch.logsumexp(beta * bank_scores.double(), dim=0)
    return (beta * scores.double() - norm.unsqueeze(0)).to(scores.dtype)


def activation_set(bank_scores: torch.Tensor, k: int = 1) -> torch.Tensor:
    """(m,) bool: the gallery items in the top-``k`` of at least one bank query ((b, m) scores)."""
    active = torch.zeros(bank_scores.shape[1], dtype=torch.bool)
    if len(bank_scores) and bank_scores.shape[1]:
        top = bank_scores.topk(min(k, bank_scores.shape[1]), dim=1).indices
        active[top.reshape(-1)] = True
    return active


def dynamic_inverted_softmax(
    scores: torch.Tensor, bank_scores: torch.Tensor, beta: float = QB_BETA, k: int = 1
) -> torch.Tensor:
    r"""QB-Norm with the dynamic inverted softmax (Bogolin et al., CVPR 2022, §3.3), (n, m) → (n, m).

    Let A be the activation set, the gallery items in some bank query's top-``k``
    (:func:`activation_set`; the paper uses k = 1). A query whose top-1 item
    :math:`\arg\max_j s_{ij}` is in A — it is retrieving a potential hub — has its row replaced by
    :func:`inverted_softmax`; any other row keeps its raw scores (the inverted softmax would only
    add noise there). Ranking within each row is what matters; rows stay on different scales.
    """
    _check(scores, bank_scores)
    if len(bank_scores) == 0 or scores.numel() == 0:
        return scores
    active = activation_set(bank_scores, k)
    rows = active[scores.argmax(dim=1)]
    out = scores.clone()
    if bool(rows.any()):
        out[rows] = inverted_softmax(scores[rows], bank_scores, beta)
    return out


def _mean_top_k(scores: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Mean of the ``k`` largest entries along ``dim`` (k clipped to the size; 0 when it is empty)."""
    size = scores.shape[dim]
    if size == 0:
        shape = list(scores.shape)
        del shape[dim]
        return torch.zeros(shape, dtype=scores.dtype)
    return scores.topk(min(k, size), dim=dim).values.mean(dim=dim)


def csls(scores: torch.Tensor, bank_scores: torch.Tensor, k: int = CSLS_K) -> torch.Tensor:
    r"""Cross-domain similarity local scaling, (n, m) → (n, m).

    .. math::
        \mathrm{CSLS}_{ij} = 2 s_{ij} - r_G(i) - r_B(j),\quad
        r_G(i) = \tfrac1k \sum_{j' \in N_k^G(i)} s_{ij'},\quad
        r_B(j) = \tfrac1k \sum_{b \in N_k^B(j)} s_{bj}

    where :math:`N_k^G(i)` are the query's k most similar gallery items and :math:`N_k^B(j)` the
    gallery item's k most similar bank queries (k clipped to the sizes). :math:`r_G(i)` is constant
    in a row and does not change the ranking; :math:`r_B(j)` demotes items dense in the bank's view.
    An empty bank leaves :math:`r_B = 0`.
    """
    _check(scores, bank_scores)
    r_gallery = _mean_top_k(scores, k, dim=1)
    r_bank = _mean_top_k(bank_scores.to(scores.dtype), k, dim=0)
    return 2.0 * scores - r_gallery.unsqueeze(1) - r_bank.unsqueeze(0)


def class_prior(bank_scores: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""(L,) class prior the model assigns over an unlabelled bank of b clips, from (b, L) scores.

    :math:`\pi_y = \tfrac1b \sum_b \mathrm{softmax}_y(s_{by} / T)`, the mean predicted distribution.
    An empty bank gives the uniform prior.
    """
    n_labels = bank_scores.shape[1]
    if len(bank_scores) == 0:
        return torch.full((n_labels,), 1.0 / n_labels, dtype=torch.float64)
    return torch.softmax(bank_scores.double() / temperature, dim=1).mean(dim=0)


def prior_corrected(scores: torch.Tensor, prior: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Zero-shot log-probabilities with the class prior divided out, (n, L) → (n, L).

    :math:`\tilde s_{iy} = s_{iy} / T - \log \pi_y`, the log of
    :math:`\mathrm{softmax}_y(s_{iy}/T) / \pi_y` up to a per-row constant (Bayes' rule with the
    model's implicit prior replaced by a uniform one). A uniform prior leaves the ranking as is.
    """
    if prior.shape != (scores.shape[1],):
        raise ConfigError(f"prior of shape {tuple(prior.shape)} for scores of {scores.shape[1]} labels")
    log_prior = torch.log(prior.double().clamp_min(torch.finfo(torch.float64).tiny))
    return (scores.double() / temperature - log_prior.unsqueeze(0)).to(scores.dtype)


def centred(scores: torch.Tensor, bank_scores: torch.Tensor) -> torch.Tensor:
    r"""Scores minus each gallery column's bank mean, (n, m) → (n, m): :math:`s_{ij} - \tfrac1b\sum_b s_{bj}`.

    CSLS with k equal to the bank size, without the factor 2. An empty bank returns ``scores``.

    With cosine scores of unit vectors, :math:`s_{ij} = \langle q_i, g_j\rangle` and
    :math:`s_{bj} = \langle q_b, g_j\rangle`, this is :math:`\langle q_i - \mu, g_j\rangle` with
    :math:`\mu` the mean bank query: one (d,) vector stored with a model is the whole bank.
    """
    _check(scores, bank_scores)
    if len(bank_scores) == 0:
        return scores
    return scores - bank_scores.to(scores.dtype).mean(dim=0, keepdim=True)


def k_occurrence(scores: torch.Tensor, k: int = 10) -> torch.Tensor:
    """(m,) int: N_k(j), how many of the n queries ((n, m) scores) have item j in their top-``k``."""
    counts = torch.zeros(scores.shape[1], dtype=torch.long)
    if scores.numel():
        top = scores.topk(min(k, scores.shape[1]), dim=1).indices.reshape(-1)
        counts += torch.bincount(top, minlength=scores.shape[1])
    return counts


def skewness(values: torch.Tensor) -> float:
    r"""Sample skewness :math:`E[(x-\mu)^3] / \sigma^3` (population moments); NaN when σ = 0.

    Of :func:`k_occurrence` counts it is the usual hubness measure (Radovanović et al., 2010).
    """
    x = values.double()
    if x.numel() == 0:
        return math.nan
    centred_x = x - x.mean()
    sigma = float(centred_x.pow(2).mean().sqrt())
    if sigma == 0.0:
        return math.nan
    return float(centred_x.pow(3).mean()) / sigma**3
