"""The Mahalanobis ground metric of m-LTM and its projection onto the PSD cone.

c(x, y) = sqrt((x − y)ᵀ M (x − y)), with M symmetric positive semi-definite. M = I gives the
Euclidean distance. M is learned by projected gradient descent: after each optimiser step,
:meth:`MahalanobisMetric.project_psd_` replaces M by its projection onto
{M : M = Mᵀ, λ_min(M) ≥ floor}.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def project_psd(M: Tensor, floor: float = 0.0) -> Tensor:
    """Nearest (Frobenius) symmetric matrix with eigenvalues ≥ ``floor``.

    M (d, d) → S = (M + Mᵀ)/2 = V diag(λ) Vᵀ (``torch.linalg.eigh``) → V diag(max(λ, floor)) Vᵀ.
    Clamping the singular values of an SVD instead would be a no-op (they are ≥ 0 already).
    """
    sym = 0.5 * (M + M.transpose(-1, -2))
    eigvals, eigvecs = torch.linalg.eigh(sym)
    rebuilt = (eigvecs * eigvals.clamp_min(floor).unsqueeze(-2)) @ eigvecs.transpose(-1, -2)
    return 0.5 * (rebuilt + rebuilt.transpose(-1, -2))


class MahalanobisMetric(nn.Module):
    """Pairwise Mahalanobis distances between rows of x (n, d) and y (m, d) → (n, m).

    Args:
        dim: embedding width d.
        learnable: ``True``: M is a parameter initialised to I; ``False``: M = I is a fixed
            buffer (the Euclidean distance).
        eig_floor: smallest eigenvalue kept by :meth:`project_psd_`.
    """

    def __init__(self, dim: int, learnable: bool = True, eig_floor: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.learnable = learnable
        self.eig_floor = eig_floor
        eye = torch.eye(dim)
        if learnable:
            self.M = nn.Parameter(eye)
        else:
            self.register_buffer("M", eye)

    def squared(self, x: Tensor, y: Tensor) -> Tensor:
        """(x_i − y_j)ᵀ M (x_i − y_j) = x_iᵀMx_i + y_jᵀMy_j − 2 x_iᵀMy_j, clamped at 0 → (n, m).

        Expanded form: O(nd² + md² + nmd) work, no (n, m, d) intermediate.
        """
        M = 0.5 * (self.M + self.M.T)
        xm = x @ M
        ym = y @ M
        xx = (xm * x).sum(-1, keepdim=True)
        yy = (ym * y).sum(-1).unsqueeze(0)
        return (xx + yy - 2.0 * xm @ y.T).clamp_min(0.0)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """sqrt of :meth:`squared` with a finite gradient at 0 (sqrt(q + 1e-12) − 1e-6)."""
        return torch.sqrt(self.squared(x, y) + 1e-12) - 1e-6

    @torch.no_grad()
    def project_psd_(self) -> None:
        """In place: M ← project_psd(M, eig_floor) (no-op for the fixed Euclidean metric)."""
        if self.learnable:
            self.M.copy_(project_psd(self.M, self.eig_floor))
