"""Index search maths: the factored metric, exact search against score_matrix, IVF recall, and the
precomputed transport potentials against the joint solve (small random galleries)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from atr_demo.index.ann import Searcher, ann_params, build_ivf, ivf_cells, ivf_probes, load_ann
from atr_demo.index.store import COLUMNS, IndexData, ann_path, write_index
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
    meta.update(root=[0] * n, path=[f"c{i}.wav" for i in range(n)], digest=[f"{i:064x}" for i in range(n)],
                size=[0] * n, mtime_ns=[0] * n)
    return IndexData(folder=Path("."), header={"ann": {"type": "ivf"}}, embeddings=emb.numpy(),
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


@pytest.mark.parametrize("fp16", [False, True])
@pytest.mark.parametrize("with_metric", [False, True])
def test_ivf_recall_and_round_trip(with_metric: bool, fp16: bool, tmp_path: Path) -> None:
    metric = _metric(16) if with_metric else None
    factor = metric_factor(metric)
    emb, q = _unit(4000, 16, 5), _unit(30, 16, 6)
    data = _data(emb, factor)
    if fp16:  # an fp16 index: the IVF's codes are exactly the stored rows
        data.embeddings = data.embeddings.astype(np.float16)
        data.metric_rows = None if data.metric_rows is None else data.metric_rows.astype(np.float16)
    indexes = {"cosine": build_ivf(data.embeddings, inner_product=True, fp16=fp16)}
    if data.metric_rows is not None:
        indexes["metric"] = build_ivf(data.metric_rows, inner_product=False, fp16=fp16)
    plain = Searcher(data, factor, metric is not None, 0.1)  # no IVF: blocks of rows
    data.folder = tmp_path / "index"
    write_index(data, indexes)
    assert ann_path(data.folder, "metric").is_file() == with_metric
    searcher = Searcher(data, factor, metric is not None, 0.1, load_ann(data.folder))  # memory-mapped
    assert searcher.probes["cosine"] == ivf_probes(ivf_cells(4000)) < searcher.ann["cosine"].nlist
    for mode in ("cosine", "metric"):
        ref_scores, exact = plain.exact(q, 10, mode)
        ivf_scores, ivf_exact = searcher.exact(q, 10, mode)  # every cell scanned: the same top 10
        assert np.array_equal(ivf_exact, exact)
        np.testing.assert_allclose(ivf_scores, ref_scores, atol=1e-4)
        scores, approx = searcher.search(q, 10, mode)  # auto: the IVF, nprobe cells
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)])
        assert 0.9 <= recall
        assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
        found = approx == exact
        np.testing.assert_allclose(scores[found], ref_scores[found], atol=1e-4)  # exact scores of what it finds


def test_ann_params_scale_with_the_library() -> None:
    assert ann_params(49_999)["type"] == "exact"
    one_m = ann_params(1_000_000)
    assert one_m["type"] == "ivf" and one_m["nlist"] == 4096 and one_m["nprobe"] == 128
    assert ann_params(50_000)["nlist"] == 1024 and ann_params(50_000)["nprobe"] == 32
    assert ivf_cells(100) == 2 and ivf_probes(2) == 2  # tiny: ≥ 39 rows per cell, never more probes than cells


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


def test_transport_shortlist_from_the_cosine_ivf() -> None:
    """Transport mode scores the cosine IVF's nearest rows with the potentials."""
    emb, anchors, q = _unit(2000, 16, 10), _unit(40, 16, 11), _unit(20, 16, 12)
    eps = 0.1
    g = anchor_potentials(cost_matrix(anchors, emb, None), eps).numpy()
    data = _data(emb, None, g)
    searcher = Searcher(data, None, False, eps, {"cosine": build_ivf(data.embeddings, True, fp16=False)})
    _, exact = searcher.exact(q, 10, "transport")
    scores, approx = searcher.search(q, 10, "transport")
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)])
    assert recall >= 0.95 and np.all(np.diff(scores, axis=1) <= 1e-6)


def test_an_opened_index_written_again_keeps_its_data(tmp_path: Path) -> None:
    """A memory-mapped IVF written to another folder holds its cells, not a reference to the first file."""
    emb, q = _unit(3000, 16, 13), _unit(5, 16, 14)
    data = _data(emb, None)
    data.folder = tmp_path / "a"
    write_index(data, {"cosine": build_ivf(data.embeddings, inner_product=True, fp16=False)})
    opened = load_ann(data.folder)
    expected = Searcher(data, None, False, 0.1, opened).search(q, 10)[1]
    data.folder = tmp_path / "b"
    write_index(data, opened)
    size = ann_path(data.folder, "cosine").stat().st_size
    assert size == ann_path(tmp_path / "a", "cosine").stat().st_size
    shutil.rmtree(tmp_path / "a")
    assert np.array_equal(Searcher(data, None, False, 0.1, load_ann(data.folder)).search(q, 10)[1], expected)
