"""Tests of the entropic OT solvers against POT and their invariants."""

from __future__ import annotations

import math

import numpy as np
import ot as pot
import pytest
import torch
import torch.nn.functional as F

from atr_demo import ot_fixed_point
from atr_demo.ot import OTConvergenceWarning, OTInfo, partial_sinkhorn_log, sinkhorn_log, unbalanced_sinkhorn_log


def _cost(n: int, m: int, d: int = 8, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    """Euclidean distances between random unit vectors: costs in [0, 2]."""
    gen = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, d, generator=gen, dtype=dtype), dim=-1)
    y = F.normalize(torch.randn(m, d, generator=gen, dtype=dtype), dim=-1)
    return torch.cdist(x, y)


def _unif(k: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.full((k,), 1.0 / k, dtype=dtype)


@pytest.mark.parametrize("eps", [0.5, 0.05, 0.01])
def test_sinkhorn_matches_pot(eps: float) -> None:
    cost = _cost(30, 20)
    plan = sinkhorn_log(cost, eps, max_iter=20000, tol=1e-11)
    ref = pot.sinkhorn(_unif(30), _unif(20), cost, eps, method="sinkhorn_log",
                       numItermax=20000, stopThr=1e-12)
    assert torch.allclose(plan, ref, atol=1e-5, rtol=0)
    assert (plan - ref).abs().max() < 1e-8


def test_sinkhorn_non_uniform_marginals() -> None:
    cost = _cost(12, 9)
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(12, generator=gen, dtype=torch.float64) + 0.1
    b = torch.rand(9, generator=gen, dtype=torch.float64) + 0.1
    a, b = a / a.sum(), b / b.sum()
    plan = sinkhorn_log(cost, 0.1, a, b, max_iter=5000, tol=1e-12)
    ref = pot.sinkhorn(a, b, cost, 0.1, method="sinkhorn_log", numItermax=5000, stopThr=1e-13)
    assert (plan - ref).abs().max() < 1e-10
    assert torch.allclose(plan.sum(1), a, atol=1e-11)
    assert torch.allclose(plan.sum(0), b, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sinkhorn_marginals_and_tolerance(dtype: torch.dtype) -> None:
    cost = _cost(40, 40, d=64, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    plan = sinkhorn_log(cost, 0.03, tol=tol, max_iter=20000)
    assert plan.dtype == dtype
    assert (plan.sum(1) - 1 / 40).abs().sum() < tol
    assert (plan.sum(0) - 1 / 40).abs().sum() < max(tol, 1e-6)


def test_sinkhorn_small_eps_is_finite_where_pot_is_not() -> None:
    cost = _cost(32, 32) * 1.0  # in [0, 2]
    plan = sinkhorn_log(cost.float(), 0.01, max_iter=3000, tol=1e-5)
    assert torch.isfinite(plan).all()
    assert (plan.sum(0) - 1 / 32).abs().sum() < 1e-5
    # documentation: POT's multiplicative solver under/overflows here (float32 kernel exp(-C/eps)).
    with pytest.warns(UserWarning):
        ref = pot.sinkhorn(_unif(32, torch.float32), _unif(32, torch.float32), cost.float(), 0.01,
                           numItermax=1000)
    assert not torch.isfinite(ref).all() or (ref.sum(0) - 1 / 32).abs().sum() > 1e-3


def test_sinkhorn_batched_equals_looped() -> None:
    costs = torch.stack([_cost(10, 7, seed=s) for s in range(3)])
    batched = sinkhorn_log(costs, 0.05, max_iter=5000, tol=1e-12)
    looped = torch.stack([sinkhorn_log(c, 0.05, max_iter=5000, tol=1e-12) for c in costs])
    assert batched.shape == (3, 10, 7)
    assert (batched - looped).abs().max() < 1e-12


def test_sinkhorn_log_plan_output() -> None:
    cost = _cost(6, 5)
    log_plan = sinkhorn_log(cost, 0.1, tol=1e-12, log_plan=True)
    assert torch.allclose(log_plan.exp(), sinkhorn_log(cost, 0.1, tol=1e-12))


@pytest.mark.parametrize("shape", [(5, 4), (4, 6), (2, 4, 3)])
def test_sinkhorn_gradcheck(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(3)
    cost = torch.rand(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(*shape, generator=gen, dtype=torch.float64)

    def fn(c: torch.Tensor) -> torch.Tensor:
        return (sinkhorn_log(c, 0.2, max_iter=10000, tol=1e-14) * weights).sum()

    assert torch.autograd.gradcheck(fn, (cost,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_sinkhorn_implicit_gradient_matches_unrolled() -> None:
    """The implicit gradient equals back-propagation through many unrolled iterations."""
    cost = _cost(8, 8).requires_grad_(True)
    eps = 0.1
    (sinkhorn_log(cost, eps, tol=1e-13, log_plan=True).diagonal().sum()).backward()
    implicit = cost.grad.clone()
    c2 = cost.detach().clone().requires_grad_(True)
    log_k = -c2 / eps
    f = torch.zeros(8, dtype=torch.float64)
    g = torch.zeros(8, dtype=torch.float64)
    log_u = math.log(1 / 8)
    for _ in range(2000):
        f = log_u - torch.logsumexp(log_k + g[None, :], dim=1)
        g = log_u - torch.logsumexp(log_k + f[:, None], dim=0)
    (log_k + f[:, None] + g[None, :]).diagonal().sum().backward()
    assert torch.allclose(implicit, c2.grad, atol=1e-8)


@pytest.mark.parametrize("eps", [0.5, 0.1, 0.05])
def test_partial_matches_pot(eps: float) -> None:
    cost = _cost(16, 12)
    plan = partial_sinkhorn_log(cost, eps, 0.8, max_iter=20000, tol=1e-12)
    ref = pot.partial.entropic_partial_wasserstein(_unif(16), _unif(12), cost, eps, m=0.8,
                                                   numItermax=3000)
    assert (plan - ref).abs().max() < 1e-5
    assert (plan - ref).abs().max() < 1e-9


def test_partial_constraints_mass_and_small_eps() -> None:
    cost = _cost(24, 24, dtype=torch.float32)
    plan = partial_sinkhorn_log(cost, 0.01, 0.9, max_iter=5000, tol=1e-6)
    assert torch.isfinite(plan).all()
    assert abs(plan.sum().item() - 0.9) < 1e-5
    assert (plan.sum(1) <= 1 / 24 + 1e-6).all()
    assert (plan.sum(0) <= 1 / 24 + 1e-6).all()
    # POT's multiplicative solver at the same eps: NaN (documented in ot.partial as well)
    with np.errstate(all="ignore"):
        ref = pot.partial.entropic_partial_wasserstein(
            np.full(24, 1 / 24, dtype=np.float32), np.full(24, 1 / 24, dtype=np.float32),
            cost.numpy(), 0.01, m=0.9, numItermax=50)
    assert not np.isfinite(ref).all()


def test_partial_batched_equals_looped() -> None:
    costs = torch.stack([_cost(9, 7, seed=s) for s in range(3)])
    batched = partial_sinkhorn_log(costs, 0.1, 0.7, tol=1e-12, max_iter=10000)
    looped = torch.stack([partial_sinkhorn_log(c, 0.1, 0.7, tol=1e-12, max_iter=10000) for c in costs])
    assert (batched - looped).abs().max() < 1e-11


def test_partial_gradcheck() -> None:
    gen = torch.Generator().manual_seed(4)
    cost = torch.rand(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(5, 4, generator=gen, dtype=torch.float64)

    def fn(c: torch.Tensor) -> torch.Tensor:
        return (partial_sinkhorn_log(c, 0.2, 0.6, max_iter=20000, tol=1e-14) * weights).sum()

    assert torch.autograd.gradcheck(fn, (cost,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_partial_rejects_infeasible_mass() -> None:
    with pytest.raises(ValueError, match="mass"):
        partial_sinkhorn_log(_cost(4, 4), 0.1, 1.5)


def test_unbalanced_matches_pot_and_limits() -> None:
    cost = _cost(12, 10)
    a, b = _unif(12), _unif(10)
    plan = unbalanced_sinkhorn_log(cost, 0.05, 1.0, 0.5, max_iter=20000, tol=1e-13)
    ref = pot.unbalanced.sinkhorn_unbalanced(a, b, cost, 0.05, (1.0, 0.5), reg_type="entropy",
                                             numItermax=20000, stopThr=1e-14)
    assert (plan - ref).abs().max() < 1e-9
    # reg_a = inf: the rows are a hard constraint
    half = unbalanced_sinkhorn_log(cost, 0.05, math.inf, 0.5, max_iter=20000, tol=1e-13)
    assert torch.allclose(half.sum(1), a, atol=1e-12)
    # both infinite: balanced OT
    both = unbalanced_sinkhorn_log(cost, 0.05, math.inf, math.inf, tol=1e-12, max_iter=5000)
    assert (both - sinkhorn_log(cost, 0.05, tol=1e-12, max_iter=5000)).abs().max() < 1e-14


def test_unbalanced_single_query_is_tempered_softmax() -> None:
    """Documented semantics: one query, hard query mass, relaxed gallery -> softmax(-C/(rho+eps))."""
    cost = _cost(1, 15)
    eps, rho = 0.05, 0.2
    row = unbalanced_sinkhorn_log(cost, eps, math.inf, rho, tol=1e-14, max_iter=5000)[0]
    expected = torch.softmax(-cost[0] / (rho + eps), dim=0)
    assert torch.allclose(row, expected, atol=1e-12)
    assert not torch.allclose(row, torch.full_like(row, 1 / 15), atol=1e-3)


def test_unbalanced_gradcheck() -> None:
    gen = torch.Generator().manual_seed(5)
    cost = torch.rand(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(4, 5, generator=gen, dtype=torch.float64)

    def fn(c: torch.Tensor) -> torch.Tensor:
        return (unbalanced_sinkhorn_log(c, 0.2, 1.0, 0.5, max_iter=20000, tol=1e-14) * weights).sum()

    assert torch.autograd.gradcheck(fn, (cost,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        sinkhorn_log(torch.rand(3), 0.1)
    with pytest.raises(ValueError):
        sinkhorn_log(torch.rand(3, 3), 0.0)
    with pytest.raises(ValueError):
        unbalanced_sinkhorn_log(torch.rand(3, 3), 0.1, 0.0, 1.0)


SOLVERS = {
    "sinkhorn_log": lambda c, **kw: sinkhorn_log(c, 0.1, **kw),
    "partial_sinkhorn_log": lambda c, **kw: partial_sinkhorn_log(c, 0.1, 0.8, **kw),
    "unbalanced_sinkhorn_log": lambda c, **kw: unbalanced_sinkhorn_log(c, 0.1, 1.0, 0.5, **kw),
}


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_return_info(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ot_fixed_point, "_WARNED", set())
    solve = SOLVERS[name]
    cost = _cost(10, 8)
    plan = solve(cost, max_iter=3000, tol=1e-10)
    out, info = solve(cost, max_iter=3000, tol=1e-10, return_info=True)
    assert isinstance(info, OTInfo) and torch.equal(out, plan)  # same plan as without the flag
    assert info.converged and 0 < info.iterations < 3000 and info.error < 1e-10
    if name == "sinkhorn_log":  # its error is the L1 row-marginal violation
        assert info.error == pytest.approx((out.sum(1) - 1 / 10).abs().sum().item(), rel=1e-6, abs=1e-16)
    # the checks fall every 10 iterations and at max_iter: a loosened tol stops at an earlier check
    _, loose = solve(cost, max_iter=3000, tol=1e-4, return_info=True)
    assert loose.iterations < info.iterations and loose.error < 1e-4
    with pytest.warns(OTConvergenceWarning, match=f"^{name}: no convergence in 13 iterations"):
        _, capped = solve(cost, max_iter=13, tol=1e-10, return_info=True)
    assert capped == OTInfo(13, capped.error, False) and capped.error >= 1e-10


def test_non_convergence_warns_once_with_the_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ot_fixed_point, "_WARNED", set())
    cost = _cost(10, 8)
    with pytest.warns(OTConvergenceWarning) as record:
        _, info = sinkhorn_log(cost, 0.05, max_iter=7, tol=1e-9, return_info=True)
        sinkhorn_log(cost, 0.05, max_iter=7, tol=1e-9)  # the same solver again: no second warning
        partial_sinkhorn_log(cost, 0.05, 0.8, max_iter=5, tol=1e-9)  # another solver warns once too
    messages = [str(w.message) for w in record if issubclass(w.category, OTConvergenceWarning)]
    assert len(messages) == 2
    assert messages[0].startswith("sinkhorn_log: no convergence in 7 iterations")
    assert f"error {info.error:.3e}" in messages[0] and "tol 1e-09" in messages[0] and "eps 0.05" in messages[0]
    assert record[0].filename == __file__  # points at the caller
    assert messages[1].startswith("partial_sinkhorn_log: no convergence in 5 iterations")


def test_implicit_gradient_non_convergence_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ot_fixed_point, "_WARNED", {"unbalanced_sinkhorn_log"})  # forward already warned
    cost = _cost(6, 5).requires_grad_(True)
    message = r"unbalanced_sinkhorn_log \(implicit gradient\): no convergence in 3 iterations"
    with pytest.warns(OTConvergenceWarning, match=message):
        unbalanced_sinkhorn_log(cost, 0.05, 1.0, 0.5, max_iter=3, tol=1e-12).sum().backward()
    assert torch.isfinite(cost.grad).all()


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solvers_run_in_float32_under_autocast(name: str) -> None:
    """Under bfloat16 autocast: a float32 cost gives the plan it gives without autocast (no
    bfloat16 matmul inside), and a bfloat16 cost is solved in float32, with gradients."""
    solve = SOLVERS[name]
    cost32 = _cost(16, 12, dtype=torch.float32)
    ref = solve(cost32, tol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = solve(cost32, tol=1e-5)
        cost16 = cost32.to(torch.bfloat16).requires_grad_(True)
        plan16 = solve(cost16, tol=1e-5)
    assert under.dtype == torch.float32 and torch.equal(under, ref)
    assert plan16.dtype == torch.float32 and torch.equal(plan16, solve(cost16.detach().float(), tol=1e-5))
    (plan16 * torch.linspace(-1, 1, 12)).sum().backward()
    assert cost16.grad.dtype == torch.bfloat16 and torch.isfinite(cost16.grad.float()).all()
