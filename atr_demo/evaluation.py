"""Retrieval metrics (Clotho protocol), zero-shot accuracy, and the modality gap.

Conventions: ``scores`` is an (n_text, n_audio) matrix, larger is better; ``text_to_audio``
(n_text,) gives the index of the audio each caption describes (several captions may share one
audio, as the 5 captions of a Clotho clip do).

* text→audio: each caption is a query with exactly one relevant audio; rank r (1-based) of that
  audio. R@k = mean[r ≤ k]; mAP@10 = mean[1/r if r ≤ 10 else 0]; median rank = median r.
* audio→text: each audio is a query; its relevant captions are those mapped to it. R@k = a hit
  if any relevant caption is in the top k; rank = rank of the first relevant caption;
  AP@10 = (1 / min(n_rel, 10)) · Σ_{relevant at rank r ≤ 10} precision@r (DCASE's mAP@10).
"""

from __future__ import annotations

import torch

KS = (1, 5, 10)


def _ranks_of(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``relevant`` (n,) items in each row of ``scores`` (n, m); ties pessimistic."""
    target = scores.gather(1, relevant.view(-1, 1))
    return (scores > target).sum(dim=1) + (scores == target).sum(dim=1)


def text_to_audio_metrics(
    scores: torch.Tensor, text_to_audio: torch.Tensor, ks: tuple[int, ...] = KS
) -> dict[str, float]:
    """Caption → audio retrieval metrics from (n_text, n_audio) scores."""
    ranks = _ranks_of(scores.float(), text_to_audio.long()).float()
    out = {f"R@{k}": float((ranks <= k).float().mean()) for k in ks}
    out["mAP@10"] = float(torch.where(ranks <= 10, 1.0 / ranks, torch.zeros_like(ranks)).mean())
    out["median_rank"] = float(ranks.median())
    out["mean_rank"] = float(ranks.mean())
    return out


def relevance_metrics(
    scores: torch.Tensor, relevant: torch.Tensor, ks: tuple[int, ...] = KS
) -> dict[str, torch.Tensor]:
    """Per-query retrieval metrics when a query may have any number of relevant items (also none).

    Args:
        scores: (n_query, n_item), larger is better; items are ranked by a stable sort (ties keep
            index order).
        relevant: (n_query, n_item) bool, which items each query should find.

    Returns:
        ``{"R@k": (n_query,) 1.0 when a relevant item is in the top k else 0.0, "AP@10": (n_query,)
        (1 / min(n_rel, 10)) · Σ_{relevant at rank r ≤ 10} precision@r (DCASE's AP@10), "first":
        (n_query,) rank of the first relevant item (n_item + 1 when none), "has_relevant": (n_query,)
        bool}``; a query without a relevant item has R@k = AP@10 = 0.
    """
    n_query, n_item = scores.shape
    order = torch.argsort(scores.float(), dim=1, descending=True, stable=True)
    hits = relevant.bool().gather(1, order)  # (n_query, n_item) relevance in rank order
    has_rel = hits.any(dim=1)
    first = torch.where(has_rel, hits.float().argmax(dim=1) + 1, torch.full((n_query,), n_item + 1))
    out = {f"R@{k}": ((first <= k) & has_rel).float() for k in ks}
    top = hits[:, :10].float()
    precision = top.cumsum(dim=1) / torch.arange(1, top.shape[1] + 1)
    n_rel = relevant.bool().sum(dim=1).clamp(min=1, max=10).float()
    out["AP@10"] = (precision * top).sum(dim=1) / n_rel
    out["first"] = first
    out["has_relevant"] = has_rel
    return out


def audio_to_text_metrics(
    scores: torch.Tensor, text_to_audio: torch.Tensor, ks: tuple[int, ...] = KS
) -> dict[str, float]:
    """Audio → caption retrieval metrics from the same (n_text, n_audio) scores (averaged over the
    audio clips that carry a caption, :func:`relevance_metrics`)."""
    n_text, n_audio = scores.shape
    relevant = torch.zeros(n_audio, n_text, dtype=torch.bool)
    relevant[text_to_audio.long(), torch.arange(n_text)] = True
    per = relevance_metrics(scores.T, relevant, ks)  # audio clips are the queries
    has_rel = per["has_relevant"]
    first = per["first"][has_rel].float()
    out = {f"R@{k}": float(per[f"R@{k}"][has_rel].mean()) for k in ks}
    out["mAP@10"] = float(per["AP@10"][has_rel].mean())
    out["median_rank"] = float(first.median())
    out["mean_rank"] = float(first.mean())
    return out


def retrieval_metrics(scores: torch.Tensor, text_to_audio: torch.Tensor) -> dict[str, dict[str, float]]:
    """Both directions: ``{"text_to_audio": {...}, "audio_to_text": {...}}``."""
    return {
        "text_to_audio": text_to_audio_metrics(scores, text_to_audio),
        "audio_to_text": audio_to_text_metrics(scores, text_to_audio),
    }


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Classification accuracy from (n, n_classes) scores and (n,) true class indices."""
    ranks = _ranks_of(scores.float(), labels.long())
    return {f"top{k}": float((ranks <= k).float().mean()) for k in ks}


def modality_gap(audio: torch.Tensor, text: torch.Tensor) -> float:
    """‖mean f(x) − mean g(y)‖₂ over (n, d) audio and (m, d) text embeddings (lower is better)."""
    return float(torch.linalg.vector_norm(audio.float().mean(dim=0) - text.float().mean(dim=0)))


def paired_ranks(scores: torch.Tensor) -> torch.Tensor:
    """1-based rank of item i in row i of a square (n, n) score matrix (query i ↔ item i);
    ties pessimistic, as in the retrieval metrics."""
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"paired_ranks needs a square (n, n) score matrix, got {tuple(scores.shape)}")
    return _ranks_of(scores.float(), torch.arange(scores.shape[0]))


def mean_rank_variance(ranks: torch.Tensor) -> float:
    r"""Cross-language consistency: MRV = mean over items of the variance of its rank across
    languages (lower is better; 0 when every language ranks the correct item equally).

    .. math:: \mathrm{MRV} = \frac1n \sum_{i=1}^{n} \frac1K \sum_{k=1}^{K} (r_{ki} - \bar r_i)^2

    Args:
        ranks: (K, n) rank of the correct item of query i in language k (population variance
            over the K languages, ddof = 0).
    """
    if ranks.dim() != 2 or ranks.shape[0] < 2:
        raise ValueError(f"ranks must be (K, n) with K >= 2 languages, got {tuple(ranks.shape)}")
    return float(ranks.double().var(dim=0, unbiased=False).mean())
