"""Retrieval metrics on hand-checked score matrices, modality gap, top-k accuracy."""

from __future__ import annotations

import pytest
import torch

from atr_demo.evaluation import (
    audio_to_text_metrics,
    modality_gap,
    retrieval_metrics,
    text_to_audio_metrics,
    topk_accuracy,
)


def test_perfect_scores_give_perfect_metrics() -> None:
    text_to_audio = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = torch.full((6, 3), -1.0)
    scores[torch.arange(6), text_to_audio] = 1.0
    m = retrieval_metrics(scores, text_to_audio)
    for direction in ("text_to_audio", "audio_to_text"):
        assert m[direction]["R@1"] == 1.0
        assert m[direction]["mAP@10"] == pytest.approx(1.0)
        assert m[direction]["median_rank"] == 1.0


def test_text_to_audio_by_hand() -> None:
    # 3 captions, 4 clips; correct clips 0, 1, 2 land at ranks 1, 2, 4
    scores = torch.tensor([[0.9, 0.1, 0.2, 0.3], [0.8, 0.5, 0.1, 0.0], [0.9, 0.8, 0.1, 0.7]])
    m = text_to_audio_metrics(scores, torch.tensor([0, 1, 2]))
    assert m["R@1"] == pytest.approx(1 / 3)
    assert m["R@5"] == 1.0
    assert m["mAP@10"] == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)
    assert m["median_rank"] == 2.0


def test_audio_to_text_counts_any_relevant_caption() -> None:
    # 2 clips with 2 captions each; clip 0 ranks captions [2, 0, 3, 1]: first relevant at rank 2
    text_to_audio = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([[0.5, 0.0], [0.1, 0.9], [0.9, 0.8], [0.4, 0.7]])
    m = audio_to_text_metrics(scores, text_to_audio)
    # clip 0 order: t2 (0.9), t0 (0.5), t3 (0.4), t1 (0.1) → relevant at ranks 2 and 4
    ap0 = (1 / 2 + 2 / 4) / 2
    # clip 1 order: t1 (0.9), t2 (0.8), t3 (0.7), t0 → relevant (t2, t3) at ranks 2 and 3
    ap1 = (1 / 2 + 2 / 3) / 2
    assert m["R@1"] == 0.0
    assert m["R@5"] == 1.0
    assert m["mAP@10"] == pytest.approx((ap0 + ap1) / 2)
    assert m["median_rank"] == 2.0


def test_ties_are_counted_pessimistically() -> None:
    scores = torch.zeros(2, 5)
    m = text_to_audio_metrics(scores, torch.tensor([0, 3]))
    assert m["R@1"] == 0.0 and m["median_rank"] == 5.0


def test_topk_accuracy_and_gap() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3]])
    acc = topk_accuracy(scores, torch.tensor([1, 2]), ks=(1, 2))
    assert acc == {"top1": 0.5, "top2": 1.0}
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert modality_gap(a, t) == pytest.approx(2 ** 0.5)
    assert modality_gap(a, a) == 0.0
