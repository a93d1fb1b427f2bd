r"""Entropic optimal-transport solvers in pure PyTorch (balanced, partial, unbalanced).

All solvers are pure functions of a cost tensor of shape ``(..., n, m)`` (leading dimensions are
a batch of independent problems) and return the transport plan of the same shape. They follow
POT's conventions: the kernel is :math:`K = \exp(-C/\varepsilon)`, the entropy is
:math:`H(\pi) = -\sum_{ij} \pi_{ij}(\log \pi_{ij} - 1)` and marginals ``a``/``b`` default to
uniform weights :math:`1/n` and :math:`1/m`.

Everything is computed in the log domain on dual potentials, so that no
:math:`\exp(-C/\varepsilon)` is ever formed for small :math:`\varepsilon` (no NaN/inf at
:math:`\varepsilon = 0.01` on costs in :math:`[0, 2]`, where POT's multiplicative solvers
return NaN).

Differentiation. The fixed-point iterations always run under ``torch.no_grad()`` to convergence;
gradients with respect to ``cost`` are then obtained by *implicit differentiation* of the
optimality conditions instead of back-propagating through hundreds of unrolled iterations:

* :func:`sinkhorn_log` solves the (reduced) linear system of the dual Hessian exactly, with one
  Cholesky factorisation of an ``min(n, m) x min(n, m)`` graph Laplacian (see
  :class:`_SinkhornImplicit`);
* :func:`partial_sinkhorn_log` and :func:`unbalanced_sinkhorn_log` solve the adjoint fixed-point
  equation :math:`w = w_0 + J_\Phi^\top w` of their iteration map :math:`\Phi` by iterating
  vector-Jacobian products of one differentiable iteration (see :class:`FixedPointImplicit`).

The marginal weights ``a`` and ``b`` are treated as constants (no gradient flows to them), and
``eps``/``mass``/``reg_*`` are Python floats.

Convergence. Every iteration (the three solvers and the implicit adjoint) runs through one loop,
:func:`atr_demo.ot_fixed_point.converge`; with ``return_info=True`` a solver also returns its
:class:`OTInfo` (iterations, final residual, converged). Stopping at ``max_iter`` above ``tol`` is
not an error: it warns once per solver and process (:class:`OTConvergenceWarning`) with the numbers.

Precision. The solvers run with autocast disabled; a cost below float32 (float16/bfloat16, e.g.
produced under ``torch.autocast``) is solved in float32 and gives a float32 plan. float32 and
float64 costs are solved in their own dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from atr_demo.ot_fixed_point import (
    CHECK_EVERY,
    FixedPointImplicit,
    OTConvergenceWarning,
    OTInfo,
    State,
    StepFn,
    converge,
    no_autocast,
    warn_once,
)

__all__ = ["OTConvergenceWarning", "OTInfo", "sinkhorn_log", "partial_sinkhorn_log", "unbalanced_sinkhorn_log"]

# Largest |log u| + |log v| accepted between two absorptions of the scalings (see _sinkhorn_solve).
_ABSORB_TAU = 40.0


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _fp32(cost: Tensor) -> Tensor:
    """``cost`` in float32 if its dtype is less precise (float16/bfloat16), else unchanged."""
    return cost.float() if torch.finfo(cost.dtype).bits < 32 else cost


def _finish(solver: str, out: Tensor, info: OTInfo, tol: float, eps: float, log_plan: bool,
            return_info: bool) -> Tensor | tuple[Tensor, OTInfo]:
    """Warn on non-convergence; log π → π unless ``log_plan``; attach ``info`` if asked."""
    warn_once(solver, info, tol, eps, stacklevel=4)  # warn_once <- _finish <- solver <- caller
    out = out if log_plan else out.exp()
    return (out, info) if return_info else out


def _check_cost(cost: Tensor, eps: float) -> None:
    if cost.dim() < 2:
        raise ValueError(f"cost must have shape (..., n, m), got {tuple(cost.shape)}")
    if not cost.is_floating_point():
        raise ValueError(f"cost must be a floating-point tensor, got {cost.dtype}")
    if not (isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive finite float, got {eps!r}")


def _marginal(w: Tensor | None, cost: Tensor, dim: int) -> Tensor:
    """Weights of shape ``cost.shape[:-2] + (size,)`` (uniform when ``w`` is None), detached."""
    size = cost.shape[dim]
    batch = cost.shape[:-2]
    if w is None:
        return torch.full((*batch, size), 1.0 / size, dtype=cost.dtype, device=cost.device)
    w = torch.as_tensor(w, dtype=cost.dtype, device=cost.device).detach()
    if w.shape[-1] != size:
        raise ValueError(f"marginal has {w.shape[-1]} entries, cost has {size} along that side")
    if bool((w < 0).any()):
        raise ValueError("marginal weights must be non-negative")
    return w.expand(*batch, size)


def _safe_log(w: Tensor) -> Tensor:
    """log with log(0) = -inf kept finite enough not to create NaN (0 * -inf)."""
    return torch.log(w.clamp_min(torch.finfo(w.dtype).tiny))


def _outer_sum(f: Tensor, g: Tensor) -> Tensor:
    """(..., n), (..., m) -> (..., n, m) with entries f_i + g_j."""
    return f.unsqueeze(-1) + g.unsqueeze(-2)


def _mv(mat: Tensor, vec: Tensor) -> Tensor:
    """Batched matrix-vector product (..., n, m) @ (..., m) -> (..., n)."""
    return torch.matmul(mat, vec.unsqueeze(-1)).squeeze(-1)


def _mtv(mat: Tensor, vec: Tensor) -> Tensor:
    """Batched transposed product (..., n, m)^T @ (..., n) -> (..., m)."""
    return torch.matmul(vec.unsqueeze(-2), mat).squeeze(-2)


# ----------------------------------------------------------------------------------------------
# balanced entropic OT
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def _sinkhorn_solve(
    log_k: Tensor, a: Tensor, b: Tensor, max_iter: int, tol: float
) -> tuple[Tensor, Tensor, OTInfo]:
    r"""Dual potentials ``(f, g)`` (in units of eps) with :math:`\pi = \exp(\log K + f \oplus g)`.

    Stabilised Sinkhorn with absorption (Schmitzer 2019): the current plan
    :math:`P = \exp(\log K + f\oplus g)` is formed once per block of ``CHECK_EVERY`` iterations;
    inside a block the iterations are the cheap scaling updates :math:`u = a/(Pv)`,
    :math:`v = b/(P^\top u)` (two matrix-vector products, no exponential), and at the end of the
    block the scalings are absorbed into the potentials, ``f += log u``, ``g += log v``.

    The first half-iterations are exact log-sum-exp steps, so the plan entering every block is
    normalised along one side; with one iteration per block this is the plain log-domain
    algorithm and provably never under/overflows (row sums stay ``>= a_i min_j b_j``). A block
    whose scalings leave ``[-_ABSORB_TAU, _ABSORB_TAU]`` or become non-finite (possible only far
    from the solution at tiny eps) is discarded and redone with a shorter block.

    The stopping criterion, checked after every block, is the L1 violation of the row marginal
    (columns are exact after the last update): ``max over batch of sum_i |pi 1 - a|_i < tol``,
    or that violation no longer decreasing at rounding level (see
    :func:`atr_demo.ot_fixed_point.stalled`); the first half-iterations count as one iteration.
    """
    log_a, log_b = _safe_log(a), _safe_log(b)
    f = log_a - torch.logsumexp(log_k, dim=-1)
    g = log_b - torch.logsumexp(log_k + f.unsqueeze(-1), dim=-2)
    plan = torch.exp(log_k + _outer_sum(f, g))

    def advance(state: State, k: int) -> tuple[State, int]:
        f, g, plan = state
        block = CHECK_EVERY
        while True:
            steps = min(block, k)
            v = torch.ones_like(g)
            for _ in range(steps):
                u = a / _mv(plan, v)
                v = b / _mtv(plan, u)
            log_u, log_v = torch.log(u), torch.log(v)
            spread = (log_u.abs().amax() + log_v.abs().amax()).item()
            if math.isfinite(spread) and (spread <= _ABSORB_TAU or block == 1):
                break
            block = max(1, block // 2)  # redo this block with fewer iterations between absorptions
        f, g = f + log_u, g + log_v
        torch.add(log_k, _outer_sum(f, g), out=plan)
        plan.exp_()
        return (f, g, plan), steps

    def error(state: State) -> float:
        return (state[2].sum(dim=-1) - a).abs().sum(dim=-1).amax().item()

    (f, g, _), info = converge((f, g, plan), advance, error, max_iter, tol, plan.dtype, done=1)
    return f, g, info


def _laplacian_solve(plan: Tensor, r: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    r"""Solve :math:`H [x; y] = [r; c]` with :math:`H = [[D_r, P], [P^\top, D_c]]`.

    :math:`H` is the Hessian of the entropic dual at the plan ``P`` (``D_r = diag(P1)``,
    ``D_c = diag(P^T 1)``), positive semi-definite with the null vector ``(1, -1)``; the
    right-hand side satisfies ``sum(r) = sum(c)``, so a solution exists and ``x ⊕ y`` is unique.
    Eliminating ``x`` leaves the Schur complement
    :math:`S = D_c - P^\top D_r^{-1} P`, a weighted graph Laplacian (``S 1 = 0``). Its diagonal is
    computed as minus the sum of its off-diagonal entries, which avoids the catastrophic
    cancellation of ``D_c - diag(...)`` when the plan is nearly a permutation, and the gauge is
    fixed by adding :math:`\beta 11^\top` (the solution then has ``sum(y) = 0``). Solved in float64
    with Cholesky (``W`` itself in the plan's dtype, see below); shapes ``plan (B, n, m)`` with
    ``n >= m``, ``r (B, n)``, ``c (B, m)``.
    """
    # W = P^T D_r^-1 P has non-negative terms only: computing it in the plan's dtype keeps every
    # entry to relative precision, and perturbing the edge weights of a graph Laplacian by a
    # relative delta perturbs its eigenvalues by a relative delta. The rest is float64.
    rs_native = plan.sum(dim=-1).clamp_min(torch.finfo(plan.dtype).tiny)
    w = torch.matmul(plan.transpose(-1, -2), plan / rs_native.unsqueeze(-1)).double()  # (B, m, m)
    p = plan.double()
    rs = rs_native.double()  # (B, n)
    m = w.shape[-1]
    eye = torch.eye(m, dtype=w.dtype, device=w.device)
    off = w * (1 - eye)
    schur = torch.diag_embed(off.sum(dim=-1)) - off
    beta = p.sum(dim=(-1, -2)) / (m * m)  # eigenvalue beta*m ≈ mean column mass on the 1 direction
    schur = schur + beta[..., None, None]
    r64, c64 = r.double(), c.double()
    rhs = c64 - _mtv(p, r64 / rs)
    chol, info = torch.linalg.cholesky_ex(schur)
    if bool((info > 0).any()):
        # Numerically singular (plan with isolated blocks): least-squares solution instead.
        y = torch.linalg.lstsq(schur, rhs.unsqueeze(-1)).solution.squeeze(-1)
    else:
        y = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
    x = (r64 - _mv(p, y)) / rs
    return x.to(plan.dtype), y.to(plan.dtype)


class _SinkhornImplicit(torch.autograd.Function):
    r"""log π of balanced entropic OT, differentiated implicitly.

    With :math:`\log\pi = \log K + f\oplus g` (potentials in units of ε) and an upstream gradient
    :math:`\Gamma = \partial L/\partial \log\pi`, differentiating the marginal constraints gives

    .. math::
        \partial L/\partial C = \big(\pi \odot (x \oplus y) - \Gamma\big)/\varepsilon,
        \qquad H [x; y] = [\Gamma 1; \Gamma^\top 1],

    with :math:`H` the dual Hessian (see :func:`_laplacian_solve`). Exact at the fixed point;
    costs one ``min(n,m)^3`` Cholesky instead of back-propagating through the iterations.
    """

    @staticmethod
    def forward(ctx, cost: Tensor, eps: float, f: Tensor, g: Tensor) -> Tensor:  # type: ignore[override]
        """``f, g``: the converged potentials of :func:`_sinkhorn_solve` (constants)."""
        log_plan = cost.detach() / -eps + _outer_sum(f, g)
        ctx.eps = eps
        ctx.save_for_backward(log_plan)
        return log_plan

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_log_plan: Tensor):  # type: ignore[override]
        (log_plan,) = ctx.saved_tensors
        with no_autocast(log_plan):
            plan = log_plan.exp()
            gam = grad_log_plan
            r, c = gam.sum(dim=-1), gam.sum(dim=-2)
            lead = plan.shape[:-2]
            n, m = plan.shape[-2:]
            flat_p = plan.reshape(-1, n, m)
            flat_r, flat_c = r.reshape(-1, n), c.reshape(-1, m)
            if n >= m:
                x, y = _laplacian_solve(flat_p, flat_r, flat_c)
            else:
                y, x = _laplacian_solve(flat_p.transpose(-1, -2), flat_c, flat_r)
            x, y = x.reshape(*lead, n), y.reshape(*lead, m)
            grad_cost = (plan * _outer_sum(x, y) - gam) / ctx.eps
        return grad_cost, None, None, None


def sinkhorn_log(
    cost: Tensor,
    eps: float,
    a: Tensor | None = None,
    b: Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    *,
    log_plan: bool = False,
    return_info: bool = False,
) -> Tensor | tuple[Tensor, OTInfo]:
    r"""Entropic optimal transport plan, solved in the log domain.

    .. math::
        \pi = \mathop{\arg\min}_{\pi \ge 0,\ \pi 1 = a,\ \pi^\top 1 = b}
              \langle \pi, C \rangle - \varepsilon H(\pi),
        \qquad H(\pi) = -\sum_{ij} \pi_{ij} (\log \pi_{ij} - 1),

    i.e. :math:`\pi = \exp((f \oplus g - C)/\varepsilon)` for the optimal dual potentials; the
    same problem as ``ot.sinkhorn(a, b, C, eps, method="sinkhorn_log")``.

    Parameters
    ----------
    cost : Tensor (..., n, m)
        Cost matrices; leading dimensions are independent problems solved together.
    eps : float
        Entropic regularisation ε > 0.
    a, b : Tensor (n,) / (m,) or (..., n) / (..., m), optional
        Marginals with equal total mass; uniform ``1/n``, ``1/m`` when None. Constants (no grad).
    max_iter : int
        Iteration cap.
    tol : float
        Stop when the L1 marginal violation :math:`\|\pi 1 - a\|_1` (the column marginal is exact
        after each iteration) is below ``tol`` for every problem of the batch; checked every 10
        iterations. Not converging within ``max_iter`` is not an error: it warns once per process.
    log_plan : bool, keyword-only
        Return :math:`\log \pi` instead of :math:`\pi` (finite even where π underflows).
    return_info : bool, keyword-only
        Also return an :class:`OTInfo` (``error`` = that L1 row-marginal violation).

    Returns
    -------
    Tensor (..., n, m), or (Tensor, OTInfo) with ``return_info``
        The plan π (or log π), same dtype and device as ``cost`` (float32 for a float16/bfloat16
        cost). Differentiable with respect to ``cost`` by implicit differentiation at the fixed
        point (exact up to ``tol``).
    """
    _check_cost(cost, eps)
    cost, eps = _fp32(cost), float(eps)
    with no_autocast(cost):
        a_ = _marginal(a, cost, -2)
        b_ = _marginal(b, cost, -1)
        f, g, info = _sinkhorn_solve(cost.detach() / -eps, a_, b_, int(max_iter), float(tol))
        out = _SinkhornImplicit.apply(cost, eps, f, g)
        return _finish("sinkhorn_log", out, info, tol, eps, log_plan, return_info)


# ----------------------------------------------------------------------------------------------
# partial entropic OT
# ----------------------------------------------------------------------------------------------


def _partial_step(log_a: Tensor, log_b: Tensor, log_s: float) -> StepFn:
    """One cycle of KL projections (dual block-coordinate ascent) for partial OT, as a function."""

    def step(state: State, log_kernel: Tensor) -> State:
        f, g, h = state
        hh = h.unsqueeze(-1)
        f = torch.clamp_max(log_a - hh - torch.logsumexp(log_kernel + g.unsqueeze(-2), dim=-1), 0.0)
        lse_cols = torch.logsumexp(log_kernel + f.unsqueeze(-1), dim=-2)  # (..., m)
        g = torch.clamp_max(log_b - hh - lse_cols, 0.0)
        h = log_s - torch.logsumexp(g + lse_cols, dim=-1)
        return f, g, h

    return step


def partial_sinkhorn_log(
    cost: Tensor,
    eps: float,
    mass: float,
    a: Tensor | None = None,
    b: Tensor | None = None,
    max_iter: int = 2000,
    tol: float = 1e-6,
    *,
    log_plan: bool = False,
    return_info: bool = False,
) -> Tensor | tuple[Tensor, OTInfo]:
    r"""Entropic *partial* optimal transport plan moving total mass ``s = mass``, in the log domain.

    .. math::
        \pi = \mathop{\arg\min}_{\pi \ge 0} \langle \pi, C\rangle - \varepsilon H(\pi)
        \quad\text{s.t.}\quad \pi 1 \le a,\ \ \pi^\top 1 \le b,\ \ 1^\top \pi 1 = s,

    equivalently the KL projection of :math:`K = \exp(-C/\varepsilon)` onto the intersection of
    the three constraint sets — the problem of ``ot.partial.entropic_partial_wasserstein(a, b, C,
    reg=eps, m=s)`` (Benamou et al. 2015, prop. 5). Solved by iterated Bregman projections with
    Dykstra corrections, written as exact block-coordinate ascent on the dual

    .. math::
        \max_{f \le 0,\ g \le 0,\ h}\ \langle f, a\rangle + \langle g, b\rangle + h s
        - \sum_{ij} K_{ij} e^{f_i + g_j + h},
        \qquad \pi = K \odot e^{f \oplus g + h},

    each block update being a clipped log-sum-exp (``f = min(0, log a - h - LSE_j(log K + g))``,
    same for ``g``, then ``h`` restores the mass), so nothing under/overflows at small ε.

    Parameters
    ----------
    cost : Tensor (..., n, m)
    eps : float
        ε > 0.
    mass : float
        Transported mass ``0 < s <= min(sum a, sum b)``.
    a, b : Tensor (n,) / (m,) or batched, optional
        Upper bounds on the marginals; uniform when None. Constants (no grad).
    max_iter : int
        Iteration cap (one iteration = the three projections).
    tol : float
        Stop when the mass the next row and column projections would move,
        :math:`\sum_i |\min(r_i e^{-f_i}, a_i) - r_i| + \sum_j |\min(c_j e^{-g_j}, b_j) - c_j|` with
        ``r, c`` the current marginals, is below ``tol`` (a KKT residual); checked every 10
        iterations. Not converging within ``max_iter`` warns once per process.
    log_plan : bool, keyword-only
        Return log π instead of π.
    return_info : bool, keyword-only
        Also return an :class:`OTInfo` (``error`` = that KKT residual).

    Returns
    -------
    Tensor (..., n, m), or (Tensor, OTInfo) with ``return_info``
        π (or log π), float32 for a float16/bfloat16 cost; differentiable w.r.t. ``cost`` by
        implicit differentiation of the fixed point of one projection cycle.
    """
    _check_cost(cost, eps)
    cost = _fp32(cost)
    with no_autocast(cost):
        a_ = _marginal(a, cost, -2)
        b_ = _marginal(b, cost, -1)
        max_mass = float(torch.minimum(a_.sum(-1), b_.sum(-1)).min())
        if not (0 < mass <= max_mass * (1 + 1e-6)):
            raise ValueError(f"mass must be in (0, min(sum a, sum b)] = (0, {max_mass:.6g}], got {mass!r}")
        log_k = cost.detach() / -eps
        step = _partial_step(_safe_log(a_), _safe_log(b_), math.log(mass))

        def advance(state: State, k: int) -> tuple[State, int]:
            for _ in range(k):
                state = step(state, log_k)
            return state, k

        def error(state: State) -> float:
            f, g, h = state
            p = torch.exp(log_k + _outer_sum(f, g) + h[..., None, None])
            r, c = p.sum(-1), p.sum(-2)
            err = (torch.minimum(r * torch.exp(-f), a_) - r).abs().sum(-1) + (
                torch.minimum(c * torch.exp(-g), b_) - c
            ).abs().sum(-1)
            return err.amax().item()

        with torch.no_grad():
            h = math.log(mass) - torch.logsumexp(log_k.flatten(-2), dim=-1)
            start: State = (torch.zeros_like(a_), torch.zeros_like(b_), h)
            state, info = converge(start, advance, error, max_iter, tol, cost.dtype)

        def readout(s: State, c: Tensor) -> Tensor:
            f_, g_, h_ = s
            return c / -eps + _outer_sum(f_, g_) + h_[..., None, None]

        def step_c(s: State, c: Tensor) -> State:
            return step(s, c / -eps)

        out = FixedPointImplicit.apply(cost, state, step_c, readout, max_iter, tol, "partial_sinkhorn_log", eps)
        return _finish("partial_sinkhorn_log", out, info, tol, eps, log_plan, return_info)


# ----------------------------------------------------------------------------------------------
# unbalanced entropic OT
# ----------------------------------------------------------------------------------------------


def unbalanced_sinkhorn_log(
    cost: Tensor,
    eps: float,
    reg_a: float,
    reg_b: float,
    a: Tensor | None = None,
    b: Tensor | None = None,
    max_iter: int = 2000,
    tol: float = 1e-6,
    *,
    log_plan: bool = False,
    return_info: bool = False,
) -> Tensor | tuple[Tensor, OTInfo]:
    r"""Unbalanced entropic OT plan (KL-relaxed marginals), in the log domain.

    .. math::
        \pi = \mathop{\arg\min}_{\pi \ge 0} \langle \pi, C\rangle - \varepsilon H(\pi)
        + \rho_a \mathrm{KL}(\pi 1 \,\|\, a) + \rho_b \mathrm{KL}(\pi^\top 1 \,\|\, b),

    with the generalised KL :math:`\mathrm{KL}(p\|q) = \sum p\log(p/q) - p + q`, ``ρ_a = reg_a``,
    ``ρ_b = reg_b``; ``reg = inf`` makes that marginal a hard constraint (both infinite is
    :func:`sinkhorn_log`). This is ``ot.unbalanced.sinkhorn_unbalanced(a, b, C, eps,
    (reg_a, reg_b), reg_type="entropy")``. Solved by the scaling iterations of Chizat et al.
    (2018) in the log domain: :math:`f = \tau_a(\log a - \mathrm{LSE}_j(\log K + g))`,
    :math:`g = \tau_b(\log b - \mathrm{LSE}_i(\log K + f))`, :math:`\tau = \rho/(\rho+\varepsilon)`.

    Semantics for scoring one query. With ``n = 1`` query, ``reg_a = inf`` (the query sends all
    its mass) and uniform ``b``, the balanced plan row would be exactly ``b`` (uniform, no
    information). With a finite ``reg_b`` the gallery marginal may deviate from ``b`` at a KL
    price, and the closed form of the plan row is

    .. math::
        \pi_{1j} \propto b_j^{\tau_b} \exp\!\big(-C_{1j}/(\rho_b + \varepsilon)\big),

    a softmax over the gallery with temperature ``ρ_b + ε`` that sums to 1: a transport score
    whose *ranking equals the ranking by cost*, with a calibrated mass. Batched with other
    queries (e.g. the gallery's reference captions), the gallery items absorbed by many queries
    (hubs) become expensive, which is the hubness correction of the balanced plan, softened by
    ``ρ_b``: small ``ρ_b`` → cost ranking, large ``ρ_b`` → balanced OT.

    Parameters
    ----------
    cost : Tensor (..., n, m)
    eps : float
        ε > 0.
    reg_a, reg_b : float
        Marginal relaxations ρ > 0 (``math.inf`` for a hard constraint).
    a, b : Tensor, optional
        Reference marginals (positive mass, need not be equal); uniform when None. Constants.
    max_iter : int
    tol : float
        Stop when the largest change of the potentials ``f, g`` (in units of ε, i.e. the
        relative change of plan entries) over one iteration is below ``tol``; checked every 10
        iterations. Not converging within ``max_iter`` warns once per process.
    log_plan : bool, keyword-only
        Return log π instead of π.
    return_info : bool, keyword-only
        Also return an :class:`OTInfo` (``error`` = that largest change of the potentials).

    Returns
    -------
    Tensor (..., n, m), or (Tensor, OTInfo) with ``return_info``
        π (or log π), float32 for a float16/bfloat16 cost; differentiable w.r.t. ``cost``
        (implicit differentiation).
    """
    _check_cost(cost, eps)
    for name, reg in (("reg_a", reg_a), ("reg_b", reg_b)):
        if not reg > 0:
            raise ValueError(f"{name} must be > 0 (math.inf for a hard constraint), got {reg!r}")
    if math.isinf(reg_a) and math.isinf(reg_b):
        return sinkhorn_log(cost, eps, a, b, max_iter=max_iter, tol=tol, log_plan=log_plan, return_info=return_info)
    cost = _fp32(cost)
    with no_autocast(cost):
        a_ = _marginal(a, cost, -2)
        b_ = _marginal(b, cost, -1)
        tau_a = 1.0 if math.isinf(reg_a) else reg_a / (reg_a + eps)
        tau_b = 1.0 if math.isinf(reg_b) else reg_b / (reg_b + eps)
        log_a, log_b = _safe_log(a_), _safe_log(b_)

        def step(state: State, c: Tensor) -> State:
            (g,) = state
            log_kernel = c / -eps
            f = tau_a * (log_a - torch.logsumexp(log_kernel + g.unsqueeze(-2), dim=-1))
            g = tau_b * (log_b - torch.logsumexp(log_kernel + f.unsqueeze(-1), dim=-2))
            return (g,)

        def f_of(g: Tensor, c: Tensor) -> Tensor:
            return tau_a * (log_a - torch.logsumexp(c / -eps + g.unsqueeze(-2), dim=-1))

        def readout(state: State, c: Tensor) -> Tensor:
            (g,) = state
            return c / -eps + _outer_sum(f_of(g, c), g)

        c_det = cost.detach()

        def advance(gs: State, k: int) -> tuple[State, int]:
            _, g = gs  # (previous g, g): the residual is the change over the last iteration
            for _ in range(k):
                gs = (g, step((g,), c_det)[0])
                g = gs[1]
            return gs, k

        def error(gs: State) -> float:
            return (gs[1] - gs[0]).abs().amax().item()

        with torch.no_grad():
            g0 = torch.zeros_like(b_)
            (_, g), info = converge((g0, g0), advance, error, max_iter, tol, cost.dtype)
        out = FixedPointImplicit.apply(cost, (g,), step, readout, max_iter, tol, "unbalanced_sinkhorn_log", eps)
        return _finish("unbalanced_sinkhorn_log", out, info, tol, eps, log_plan, return_info)

