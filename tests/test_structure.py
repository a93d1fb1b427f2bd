"""Embedding-space structure metrics: k-NN graph similarity, its chance level, and linear CKA."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from atr_demo.errors import ConfigError
from atr_demo.metric import MahalanobisMetric

from training.analysis.structure import (
    DISTANCES,
    chance_knn_overlap,
    knn_indices,
    knn_overlap,
    linear_cka,
    pairwise_distances,
    plot_knn_overlap,
    structure_report,
)


def _randn(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(_randn(d, d, seed))
    return q * torch.sign(torch.diagonal(r))  # a Haar-random rotation/reflection


def _hsic_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """CKA from linear-kernel Gram matrices: tr(KHLH) / sqrt(tr(KHKH) tr(LHLH))."""
    n = a.shape[0]
    gram_a, gram_b = a @ a.T, b @ b.T
    h = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    hsic = lambda x, y: torch.trace(x @ h @ y @ h)  # noqa: E731
    return float(hsic(gram_a, gram_b) / torch.sqrt(hsic(gram_a, gram_a) * hsic(gram_b, gram_b)))


def test_identical_spaces_are_fully_similar() -> None:
    x = _randn(40, 12, 0)
    for distance in ("cosine", "euclidean"):
        for k in (1, 5, 39):
            assert knn_overlap(x, x, k, distance) == 1.0
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x.float(), x.float()) == pytest.approx(1.0, abs=1e-12)  # promoted to float64


def test_cka_matches_gram_hsic_and_is_invariant() -> None:
    a = _randn(60, 10, 1)
    b = a @ _randn(10, 7, 2) + 0.8 * _randn(60, 7, 3)  # related but not identical, other width
    cka = linear_cka(a, b)
    assert 0.1 < cka < 0.99
    assert cka == pytest.approx(_hsic_cka(a, b), rel=1e-10)
    assert linear_cka(b, a) == pytest.approx(cka, rel=1e-12)  # symmetric
    # invariant to orthogonal transforms, isotropic scaling and translation of either space
    assert linear_cka(3.7 * a @ _orthogonal(10, 4), b) == pytest.approx(cka, rel=1e-10)
    assert linear_cka(a, 0.01 * b @ _orthogonal(7, 5) + 5.0) == pytest.approx(cka, rel=1e-10)
    # but not to an anisotropic rescaling of the features
    assert linear_cka(a * torch.linspace(0.1, 10.0, 10, dtype=torch.float64), b) != pytest.approx(cka, rel=1e-3)
    # unrelated random spaces: low CKA, still equal to the Gram formula
    c = _randn(60, 5, 6)
    assert linear_cka(a, c) == pytest.approx(_hsic_cka(a, c), rel=1e-10)
    assert linear_cka(a, c) < cka


def test_knn_overlap_invariant_to_rotation_and_scaling() -> None:
    a = _randn(80, 16, 7)
    q = _orthogonal(16, 8)
    moved = 2.5 * a @ q + 3.0  # a similarity transform: euclidean neighbourhoods unchanged
    rescaled_rows = (a @ q) * torch.linspace(0.2, 5.0, 80, dtype=torch.float64).unsqueeze(1)  # cosine: row norms free
    for k in (1, 5, 20):
        assert knn_overlap(a, moved, k, "euclidean") == pytest.approx(1.0)
        assert knn_overlap(a, rescaled_rows, k, "cosine") == pytest.approx(1.0)
        assert torch.equal(knn_indices(a, k, "euclidean"), knn_indices(moved, k, "euclidean"))
    # a row rescaling changes euclidean neighbourhoods, and a translation changes cosine ones
    assert knn_overlap(a, rescaled_rows, 5, "euclidean") < 0.9
    assert knn_overlap(a, a + 3.0, 5, "cosine") < 0.9


def test_random_spaces_sit_at_chance() -> None:
    n, k = 200, 10
    chance = chance_knn_overlap(n, k)
    overlaps = [knn_overlap(_randn(n, 16, 100 + s), _randn(n, 16, 200 + s), k, "euclidean") for s in range(5)]
    # For independent spaces N_A(i), N_B(i) are independent uniform k-subsets, so the expectation
    # is exactly `chance` (≈ 0.027). Measured over 40 seeds the per-seed standard deviation of the
    # mean Jaccard at n = 200, k = 10 is ≈ 0.0034, so the mean of 5 seeds has SE ≈ 0.0015;
    # 0.006 is 4 SE (and still far below any real structure, e.g. 1.0 for identical spaces).
    assert abs(np.mean(overlaps) - chance) < 0.006
    # two different distances on the same data are far above chance
    x = _randn(n, 16, 300)
    assert knn_overlap(x, x, k, "cosine", distance_b="euclidean") > 10 * chance


def test_chance_overlap_is_exact() -> None:
    assert chance_knn_overlap(10, 9) == 1.0  # both sets are all the others
    # n = 4, k = 1: the two single neighbours among 3 coincide with probability 1/3
    assert chance_knn_overlap(4, 1) == pytest.approx(1 / 3)
    # n = 5, k = 2 (m = 4): |∩| ∈ {0, 1, 2} w.p. 1/6, 4/6, 1/6 → (4/6)(1/3) + (1/6)(1) = 7/18
    assert chance_knn_overlap(5, 2) == pytest.approx(7 / 18)
    # Monte-Carlo: the mean Jaccard of independent random k-subsets of the n − 1 others
    rng = np.random.default_rng(0)
    for n, k in ((30, 5), (200, 20)):
        draws = 20000
        a = np.argsort(rng.random((draws, n - 1)), axis=1)[:, :k]
        b = np.argsort(rng.random((draws, n - 1)), axis=1)[:, :k]
        inter = np.array([len(np.intersect1d(x, y, assume_unique=True)) for x, y in zip(a, b, strict=True)])
        jac = inter / (2 * k - inter)
        se = jac.std(ddof=1) / math.sqrt(draws)
        assert abs(jac.mean() - chance_knn_overlap(n, k)) < 4 * se


def test_metric_distance_is_the_ground_metric() -> None:
    x = _randn(30, 6, 9)
    metric = MahalanobisMetric(6)  # M = I: the Euclidean distance
    eu = pairwise_distances(x, "euclidean")
    assert eu.dtype == torch.float64 and eu.shape == (30, 30)
    assert torch.allclose(pairwise_distances(x, "metric", metric), eu, atol=1e-6)
    assert torch.equal(knn_indices(x, 5, "metric", metric), knn_indices(x, 5, "euclidean"))
    assert knn_overlap(x, x, 5, "metric", "euclidean", metric=metric) == 1.0
    # a diagonal M = diag(s) is the Euclidean distance of x · sqrt(s)
    s = torch.tensor([0.1, 4.0, 1.0, 2.0, 0.5, 9.0])
    with torch.no_grad():
        metric.M.copy_(torch.diag(s))
    expected = pairwise_distances(x * s.double().sqrt(), "euclidean")
    assert torch.allclose(pairwise_distances(x, "metric", metric), expected, atol=1e-6)
    # cosine is 1 − cos: 0 for a parallel row, 1 orthogonal, 2 opposite
    y = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    assert torch.allclose(pairwise_distances(y, "cosine")[0], torch.tensor([0.0, 0.0, 1.0, 2.0], dtype=torch.float64))


def test_knn_indices_excludes_self_and_breaks_ties_by_index() -> None:
    # rows 1, 2 and 4 are the same point; row 0 is equidistant from 1, 2, 4
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [5.0, 5.0], [1.0, 0.0], [0.9, 0.1]])
    for distance in ("euclidean", "cosine"):
        idx = knn_indices(x[1:] if distance == "cosine" else x, 3, distance)  # cosine: no zero row
        assert idx.dtype == torch.int64
        assert not (idx == torch.arange(idx.shape[0]).unsqueeze(1)).any()  # never itself
    idx = knn_indices(x, 3, "euclidean")
    assert idx[0].tolist() == [5, 1, 2]  # 5 is closest; then the tie 1 = 2 = 4 goes to the lower indices
    assert idx[1].tolist() == [2, 4, 5]  # its duplicates (distance 0) in index order, self left out
    assert idx[4].tolist() == [1, 2, 5]
    assert torch.equal(idx, knn_indices(x, 3, "euclidean"))  # deterministic
    assert knn_indices(x, 5, "euclidean").shape == (6, 5)


def test_errors() -> None:
    x = _randn(10, 4, 10)
    with pytest.raises(ConfigError, match="between 1 and n - 1 = 9"):
        knn_indices(x, 10, "cosine")
    with pytest.raises(ConfigError, match="between 1"):
        knn_indices(x, 0, "cosine")
    with pytest.raises(ConfigError, match="between 1"):
        chance_knn_overlap(10, 10)
    with pytest.raises(ConfigError, match="same number of rows"):
        knn_overlap(x, x[:9], 3)
    with pytest.raises(ConfigError, match="same number of rows"):
        linear_cka(x, x[:9])
    with pytest.raises(ConfigError, match="ground metric"):
        pairwise_distances(x, "metric")
    with pytest.raises(ConfigError, match="4 columns"):
        pairwise_distances(x, "metric", MahalanobisMetric(8))
    with pytest.raises(ConfigError, match="unknown distance 'manhattan'"):
        knn_overlap(x, x, 3, "manhattan")
    with pytest.raises(ConfigError, match="constant space"):
        linear_cka(x, torch.ones(10, 3))
    with pytest.raises(ConfigError, match=r"\(n, d\)"):
        pairwise_distances(torch.zeros(5), "cosine")
    with pytest.raises(ConfigError, match="ground metric"):
        knn_overlap(x, x, 3, "cosine", distance_b="metric")


def test_structure_report(caplog: pytest.LogCaptureFixture) -> None:
    a = _randn(12, 8, 11)
    b = a @ _orthogonal(8, 12)
    with caplog.at_level(logging.WARNING, logger="training.analysis.structure"):
        report = structure_report(a, b, ks=(5, 1, 20, 12), distances=DISTANCES, metric=MahalanobisMetric(8))
    assert "skipping k = 12, 20" in caplog.text
    assert set(report) == {"n", "cka", "chance", "knn"} and report["n"] == 12
    assert list(report["chance"]) == ["1", "5"] and report["chance"]["5"] == chance_knn_overlap(12, 5)
    assert set(report["knn"]) == set(DISTANCES)
    assert all(v == pytest.approx(1.0) for d in report["knn"].values() for v in d.values())  # a rotation
    assert report["cka"] == pytest.approx(1.0)
    # the per-k values agree with knn_overlap
    c = _randn(12, 3, 13)
    report = structure_report(a, c, ks=(1, 5))
    assert report["knn"]["cosine"]["5"] == knn_overlap(a, c, 5, "cosine")
    assert report["knn"]["euclidean"]["1"] == knn_overlap(a, c, 1, "euclidean")
    assert report["cka"] == linear_cka(a, c)
    with pytest.raises(ConfigError, match="3 columns"):
        structure_report(a, c, distances=("metric",), metric=MahalanobisMetric(8))
    with pytest.raises(ConfigError, match="no k left"):
        structure_report(a, b, ks=(12, 50))
    with pytest.raises(ConfigError, match="same number of rows"):
        structure_report(a, b[:11])


def test_plot_knn_overlap() -> None:
    a = _randn(30, 8, 14)
    reports = {"same": structure_report(a, a, ks=(1, 5, 10)),
               "random": structure_report(a, _randn(30, 8, 15), ks=(1, 5, 10))}
    fig = plot_knn_overlap(reports, "test plot")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert len(ax.lines) == 2 * 2 + 1  # (label, distance) lines plus one chance line
    assert "chance" in labels and any(lbl.startswith("same: cosine") for lbl in labels)
    chance = next(line for line in ax.lines if line.get_label() == "chance")
    assert chance.get_linestyle() == "--"
    assert list(chance.get_xdata()) == [1, 5, 10]
    assert list(chance.get_ydata()) == [chance_knn_overlap(30, k) for k in (1, 5, 10)]
    assert ax.get_title() == "test plot"
    assert len(plot_knn_overlap(reports["same"]).axes[0].lines) == 3  # a single report, no label


def test_owner_means_normalises_the_mean_of_each_owners_rows() -> None:
    from training.analysis.structure import owner_means

    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    out = owner_means(rows, torch.tensor([0, 0, 1]), 3)
    assert torch.allclose(out[0], torch.tensor([2 ** -0.5, 2 ** -0.5]))
    assert torch.allclose(out[1], torch.tensor([0.6, 0.8])) and torch.equal(out[2], torch.zeros(2))
