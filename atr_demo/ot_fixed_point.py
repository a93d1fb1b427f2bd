r"""Fixed points of the OT solvers: one convergence loop, its report, and implicit differentiation.

Every iteration of :mod:`atr_demo.ot` — the balanced, partial and unbalanced solvers, and the
adjoint iteration of their implicit gradients — runs through :func:`converge`, which returns the
final state with an :class:`OTInfo` (iterations, final residual, converged). A solver that stops at
``max_iter`` above its tolerance warns once per solver and process (:func:`warn_once`,
:class:`OTConvergenceWarning`); it is not an error.

:class:`FixedPointImplicit` differentiates the readout of a generic fixed point
``s* = step(s*, C)`` with respect to ``C`` by solving the adjoint fixed-point equation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

__all__ = ["CHECK_EVERY", "FixedPointImplicit", "OTConvergenceWarning", "OTInfo", "converge", "warn_once"]

#: Check the stopping criterion every ``CHECK_EVERY`` iterations (each check synchronises).
CHECK_EVERY = 10

State = tuple[Tensor, ...]
StepFn = Callable[[State, Tensor], State]
ReadoutFn = Callable[[State, Tensor], Tensor]
S = TypeVar("S")

_WARNED: set[str] = set()  # solvers that already warned about non-convergence in this process


@dataclass(frozen=True)
class OTInfo:
    """How a solver stopped (returned by the solvers with ``return_info=True``).

    ``iterations``: iterations run (``<= max_iter``). ``error``: the stopping residual at the
    last check, as documented with each solver's ``tol`` (the L1 row-marginal violation for
    ``sinkhorn_log``, the marginal KKT residual for ``partial_sinkhorn_log``, the largest change
    of the potentials for ``unbalanced_sinkhorn_log``). ``converged``: the loop stopped before
    ``max_iter`` ran out, because ``error < tol`` or because the residual stopped decreasing at
    the dtype's rounding level (see :func:`stalled`; then ``error`` may exceed a too-small ``tol``).
    """

    iterations: int
    error: float
    converged: bool


class OTConvergenceWarning(UserWarning):
    """An OT solver stopped at ``max_iter`` above its tolerance (warned once per solver and process)."""


def stalled(err: float, prev_err: float, dtype: torch.dtype) -> bool:
    """True when a residual has stopped decreasing at rounding level (``< sqrt(machine eps)``).

    In float32 the reachable residual of a ``b x b`` problem can sit just above a tolerance such
    as 1e-6: the iterate is then a floating-point fixed point and further iterations are wasted.
    """
    return err >= 0.99 * prev_err and err < math.sqrt(torch.finfo(dtype).eps)


def converge(
    state: S,
    advance: Callable[[S, int], tuple[S, int]],
    error: Callable[[S], float],
    max_iter: int,
    tol: float,
    dtype: torch.dtype,
    *,
    done: int = 0,
    every: int = CHECK_EVERY,
) -> tuple[S, OTInfo]:
    """The convergence loop of every solver: advance by blocks, check the residual after each.

    ``advance(state, k)`` runs ``k <= every`` iterations and returns the new state and how many
    it ran (it may run fewer, see ``atr_demo.ot._sinkhorn_solve``); ``error(state)`` is the
    residual (a float: each check synchronises). Stops when the residual is ``< tol`` or
    :func:`stalled` for ``dtype``, or when ``max_iter`` iterations have run in total (``done`` of
    them before the call). With blocks of ``every`` iterations the checks fall at every multiple
    of ``every`` and at ``max_iter``.
    """
    err = math.inf
    while done < max_iter:
        state, steps = advance(state, min(every, max_iter - done))
        done += steps
        prev_err, err = err, error(state)
        if err < tol or stalled(err, prev_err, dtype):
            return state, OTInfo(done, err, True)
    return state, OTInfo(done, err, False)


def warn_once(solver: str, info: OTInfo, tol: float, eps: float, stacklevel: int = 2) -> None:
    """Warn with the numbers when ``info`` did not converge, once per ``solver`` name and process.

    ``stacklevel`` is :func:`warnings.warn`'s, counted from this function.
    """
    if info.converged or solver in _WARNED:
        return
    _WARNED.add(solver)
    warnings.warn(
        f"{solver}: no convergence in {info.iterations} iterations (error {info.error:.3e}, tol {tol:.3g}, "
        f"eps {eps:g}); raise max_iter or eps, or loosen tol (warned once per process)",
        OTConvergenceWarning,
        stacklevel=stacklevel,
    )


def no_autocast(t: Tensor) -> torch.autocast:
    """A context that disables autocast on ``t``'s device (the solvers always run in full precision)."""
    return torch.autocast(device_type=t.device.type, enabled=False)


_Adjoint = tuple[list[Tensor], list[Tensor]]  # (w, w of the previous iteration)


class FixedPointImplicit(torch.autograd.Function):
    r"""``readout(s*, C)`` where ``s* = step(s*, C)``, differentiated implicitly.

    .. math::
        \frac{dL}{dC} = h_C^\top \Gamma + \Phi_C^\top w,\qquad
        w = h_s^\top \Gamma + \Phi_s^\top w,

    the adjoint equation being solved by fixed-point iteration with vector-Jacobian products of
    one differentiable step (it contracts at the rate of the forward iteration), stopping when
    the change of ``w`` relative to ``|w_0|_1`` is at most ``tol`` or stalls at rounding level
    (checked every iteration; ``solver``/``eps`` only name the warning on non-convergence).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        cost: Tensor,
        state: State,
        step: StepFn,
        readout: ReadoutFn,
        max_iter: int,
        tol: float,
        solver: str,
        eps: float,
    ) -> Tensor:
        ctx.step, ctx.readout, ctx.max_iter, ctx.tol = step, readout, max_iter, tol
        ctx.solver, ctx.eps = solver, eps
        ctx.save_for_backward(cost.detach(), *[s.detach() for s in state])
        with torch.no_grad():
            return readout(state, cost.detach())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        cost, *state = ctx.saved_tensors
        with torch.enable_grad(), no_autocast(cost):
            c_req = cost.detach().requires_grad_(True)
            s_req = [s.detach().requires_grad_(True) for s in state]
            out = ctx.readout(tuple(s_req), c_req)
            g = torch.autograd.grad(out, [*s_req, c_req], grad_out, allow_unused=True)
            w0 = [torch.zeros_like(s) if gi is None else gi for s, gi in zip(s_req, g[:-1], strict=True)]
            grad_cost = torch.zeros_like(cost) if g[-1] is None else g[-1]
            s_next = ctx.step(tuple(s_req), c_req)
            scale = max(sum(float(t.abs().sum()) for t in w0), 1e-30)

            def advance(ws: _Adjoint, k: int) -> tuple[_Adjoint, int]:  # k == 1 (every=1)
                w = ws[0]
                vjp = torch.autograd.grad(s_next, s_req, w, retain_graph=True, allow_unused=True)
                return ([w0i + (0 if v is None else v) for w0i, v in zip(w0, vjp, strict=True)], w), 1

            def error(ws: _Adjoint) -> float:
                return sum(float((wn - wo).abs().sum()) for wn, wo in zip(*ws, strict=True)) / scale

            # stop when delta <= tol, i.e. delta < nextafter(tol, inf)
            tol_le = math.nextafter(ctx.tol, math.inf)
            (w, _), info = converge((list(w0), list(w0)), advance, error, ctx.max_iter, tol_le, cost.dtype, every=1)
            warn_once(f"{ctx.solver} (implicit gradient)", info, ctx.tol, ctx.eps)
            gc = torch.autograd.grad(s_next, c_req, w, allow_unused=True)[0]
        if gc is not None:
            grad_cost = grad_cost + gc
        return grad_cost, None, None, None, None, None, None, None
