r"""Learnable Mahalanobis ground metric :math:`c(x, y) = \sqrt{(x - y)^\top M (x - y)}`.

``M`` is kept symmetric positive semi-definite by projected gradient descent: after each
optimiser step call :meth:`MahalanobisMetric.project_psd_`, the Euclidean (Frobenius) projection
onto :math:`\{M = M^\top,\ \lambda_{\min}(M) \ge \text{floor}\}` — symmetrise, eigendecompose,
clamp the eigenvalues, rebuild. (Clamping the *singular values* of an SVD would be a no-op, since
they are already non-negative, and would not project an indefinite matrix.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MahalanobisMetric", "project_psd"]


def project_psd(m: Tensor, floor: float = 0.0) -> Tensor:
    r"""Frobenius projection of ``m`` (..., d, d) onto symmetric matrices with eigenvalues ≥ floor.

    .. math::
        S = (M + M^\top)/2 = Q \Lambda Q^\top,\qquad
        \Pi(M) = Q \max(\Lambda, \text{floor}) Q^\top .

    Computed in float64 (``torch.linalg.eigh``) and returned in ``m``'s dtype, exactly symmetric.
    """
    if m.shape[-1] != m.shape[-2]:
        raise ValueError(f"project_psd needs square matrices, got {tuple(m.shape)}")
    sym = 0.5 * (m.double() + m.double().transpose(-1, -2))
    evals, evecs = torch.linalg.eigh(sym)
    evals = evals.clamp_min(float(floor))
    out = (evecs * evals.unsqueeze(-2)) @ evecs.transpose(-1, -2)
    out = 0.5 * (out + out.transpose(-1, -2))
    return out.to(m.dtype)


class _SafeSqrt(torch.autograd.Function):
    """sqrt whose gradient is 0 (instead of inf/NaN) where the input is 0."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        y = x.clamp_min(0).sqrt()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return torch.where(y > 0, grad / (2 * y.clamp_min(torch.finfo(y.dtype).tiny)), 0.0)


class MahalanobisMetric(nn.Module):
    r"""Mahalanobis distance with a learnable PSD matrix ``M`` (dim, dim), initialised to ``I``.

    Parameters
    ----------
    dim : int
        Embedding dimension ``d``.
    learnable : bool
        ``M`` is an ``nn.Parameter`` when True; otherwise a buffer equal to ``I`` (Euclidean).
    eig_floor : float
        Lower bound on the eigenvalues of ``M`` enforced by :meth:`project_psd_`.
    """

    def __init__(self, dim: int, learnable: bool = True, eig_floor: float = 0.0) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if eig_floor < 0:
            raise ValueError(f"eig_floor must be >= 0, got {eig_floor}")
        self.dim = int(dim)
        self.learnable = bool(learnable)
        self.eig_floor = float(eig_floor)
        eye = torch.eye(self.dim)
        if self.learnable:
            self.M = nn.Parameter(eye)
        else:
            self.register_buffer("M", eye)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, learnable={self.learnable}, eig_floor={self.eig_floor}"

    def squared(self, x: Tensor, y: Tensor) -> Tensor:
        r"""Squared distances (n, m): :math:`x_i^\top M x_i + y_j^\top M y_j - 2 x_i^\top M y_j`.

        ``x`` (n, d), ``y`` (m, d). Uses the symmetric part of ``M`` (equal to ``M`` after
        projection) and two matrix products, never an (n, m, d) tensor; clamped at 0 against
        rounding.
        """
        m = 0.5 * (self.M + self.M.transpose(0, 1))
        m = m.to(x.dtype)
        xm = x @ m  # (n, d)
        ym = y @ m  # (m, d)
        xx = (xm * x).sum(-1)  # (n,)
        yy = (ym * y).sum(-1)  # (m,)
        d2 = xx.unsqueeze(-1) + yy.unsqueeze(-2) - 2.0 * (xm @ y.transpose(-1, -2))
        return d2.clamp_min(0)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Distances (n, m) = sqrt(squared(x, y)), with a zero (not NaN) gradient at distance 0."""
        return _SafeSqrt.apply(self.squared(x, y))

    @torch.no_grad()
    def project_psd_(self) -> None:
        """Project ``M`` in place onto the PSD cone with eigenvalues ≥ ``eig_floor`` (no-op if fixed)."""
        if not self.learnable:
            return
        self.M.copy_(project_psd(self.M, self.eig_floor))
