"""Tests of the Mahalanobis ground metric and the PSD projection."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from atr_demo.metric import MahalanobisMetric, project_psd


def test_identity_is_euclidean() -> None:
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    for learnable in (True, False):
        metric = MahalanobisMetric(5, learnable=learnable).double()
        assert torch.allclose(metric(x, y), torch.cdist(x, y), atol=1e-10)
    assert isinstance(MahalanobisMetric(5).M, torch.nn.Parameter)
    assert "M" in dict(MahalanobisMetric(5, learnable=False).named_buffers())


def test_squared_matches_naive_mahalanobis() -> None:
    metric = MahalanobisMetric(4).double()
    a = torch.randn(4, 4, dtype=torch.float64)
    with torch.no_grad():
        metric.M.copy_(a @ a.T)
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    diff = x[:, None, :] - y[None, :, :]
    naive = torch.einsum("nmd,de,nme->nm", diff, metric.M, diff)
    assert torch.allclose(metric.squared(x, y), naive, atol=1e-10)


def test_gradient_is_finite_at_zero_distance() -> None:
    metric = MahalanobisMetric(3)
    x = torch.randn(2, 3, requires_grad=True)
    metric(x, x.detach().clone()).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.isfinite(metric.M.grad).all()


def test_adam_steps_then_projection_keep_psd() -> None:
    metric = MahalanobisMetric(6, eig_floor=1e-3)
    opt = torch.optim.Adam(metric.parameters(), lr=0.5)
    x = F.normalize(torch.randn(16, 6), dim=-1)
    y = F.normalize(torch.randn(16, 6), dim=-1)
    for _ in range(5):
        opt.zero_grad()
        # push M towards an indefinite matrix: reward large off-diagonal distances
        loss = metric.squared(x, y).diagonal().mean() - metric.squared(x, y).mean() * 3
        loss.backward()
        opt.step()
        metric.project_psd_()
        m = metric.M.detach()
        assert torch.equal(m, m.T)
        assert torch.linalg.eigvalsh(m.double()).min() >= 1e-3 - 1e-6
    assert not torch.allclose(metric.M.detach(), torch.eye(6))


def test_indefinite_matrix_projection_matches_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    m = a + a.T - 2 * np.eye(5)  # symmetric, indefinite
    assert np.linalg.eigvalsh(m).min() < 0
    nonsym = m + np.triu(rng.standard_normal((5, 5)), 1)  # projection symmetrises first
    sym = 0.5 * (nonsym + nonsym.T)
    w, v = np.linalg.eigh(sym)
    for floor in (0.0, 0.1):
        ref = (v * np.maximum(w, floor)) @ v.T
        out = project_psd(torch.from_numpy(nonsym), floor).numpy()
        assert np.allclose(out, ref, atol=1e-10)
        assert np.linalg.eigvalsh(out).min() >= floor - 1e-10
    # SVD clamping (the reference-code mistake) would not change the matrix: we do.
    u, s, vt = np.linalg.svd(sym)
    assert np.allclose((u * np.maximum(s, 0)) @ vt, sym)
    assert not np.allclose(project_psd(torch.from_numpy(sym)).numpy(), sym)


def test_in_place_projection_of_module() -> None:
    metric = MahalanobisMetric(3, eig_floor=0.05)
    with torch.no_grad():
        metric.M.copy_(torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 0.5]]))
    metric.project_psd_()
    evals = torch.linalg.eigvalsh(metric.M.detach())
    assert evals.min() >= 0.05 - 1e-6
    fixed = MahalanobisMetric(3, learnable=False)
    fixed.project_psd_()
    assert torch.equal(fixed.M, torch.eye(3))
