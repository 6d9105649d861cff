"""K-FAC's damped eigen-inverse: the Kronecker curvature applied through eigenbases
(docs/algorithm.md 2.1).

Eigendecompositions A = Q_A diag(e_A) Q_A^T, G = Q_G diag(e_G) Q_G^T in float64
(eigenvalues clamped at 0), then any function of the Kronecker curvature acts per block
as fn(F_l) vec(V) = Q_G [(Q_G^T V Q_A) * fn(e_G e_A^T)] Q_A^T. With fn(e) = 1 / (e +
damping) this is (F_l + damping I)^-1: the damping is exact for the Kronecker product,
not split between the factors. The log-std block is exact (LOG_STD_FISHER per dimension).

Owns the eigenbases (`Eigen`), decomposing bias-corrected factors into them, the identity
fallback, and the flat-vector products `apply` (solve) and `mean_quad` (v^T F v of the
mean blocks). The factors themselves are kfac_factors'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from kfcpo.fisher import LOG_STD_FISHER
from kfcpo.preconditioner.kfac_layout import Layer, block, put


@dataclass
class Eigen:
    """Clamped eigendecomposition of one layer's factors."""

    e_a: torch.Tensor
    q_a: torch.Tensor
    e_g: torch.Tensor
    q_g: torch.Tensor

    def to(self, dtype: torch.dtype) -> Eigen:
        """A copy in `dtype` (the products run in the gradient's dtype)."""
        return Eigen(*(t.to(dtype) for t in (self.e_a, self.q_a, self.e_g, self.q_g)))


def sym_eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of the symmetrized matrix, eigenvalues clamped at 0 (factors are PSD;
    round-off can make the smallest slightly negative)."""
    e, q = torch.linalg.eigh(0.5 * (m + m.T))
    return e.clamp_min(0.0), q


def decompose(
    ema: list[tuple[torch.Tensor, torch.Tensor]], decay: float, refreshes: int
) -> list[Eigen] | None:
    """Eigenpairs of the bias-corrected factors; None if eigh fails or is non-finite."""
    scale = 1.0 / (1.0 - decay**refreshes)
    eigen = []
    for a, g in ema:
        try:
            e_a, q_a = sym_eigh(a * scale)
            e_g, q_g = sym_eigh(g * scale)
        except torch.linalg.LinAlgError:
            return None
        if not all(bool(torch.isfinite(t).all()) for t in (e_a, q_a, e_g, q_g)):
            return None
        eigen.append(Eigen(e_a, q_a, e_g, q_g))
    return eigen


def identity(layer: Layer, dtype: torch.dtype) -> Eigen:
    """Unit curvature for `layer` (the fallback while no decomposition succeeded)."""
    out_f, in_f = layer.shape
    kw = {"dtype": dtype, "device": layer.module.weight.device}
    return Eigen(
        torch.ones(in_f, **kw), torch.eye(in_f, **kw), torch.ones(out_f, **kw), torch.eye(out_f, **kw)
    )


def apply(
    g: torch.Tensor,
    layers: list[Layer],
    bases: list[Eigen],
    log_std: slice | None,
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """fn(eigenvalue) applied to the Kronecker curvature: x = Q fn(e) Q^T g per block,
    in g's dtype (the float64 eigendecomposition is where precision matters; applying
    it in float32 halves the cost of the 256-wide products). `bases` in g's dtype;
    `log_std` the log-std's place in the flat vector, None when it is not trained."""
    out = torch.empty_like(g)
    for layer, eig in zip(layers, bases, strict=True):
        rot = eig.q_g.T @ block(g, layer) @ eig.q_a
        x = eig.q_g @ (rot * fn(torch.outer(eig.e_g, eig.e_a))) @ eig.q_a.T
        put(out, layer, x)
    if log_std is not None:
        out[log_std] = g[log_std] * fn(torch.tensor(LOG_STD_FISHER, dtype=g.dtype))
    return out


def mean_quad(v: torch.Tensor, layers: list[Layer], bases: list[Eigen]) -> torch.Tensor:
    """sum_l vec(V_l)^T (G_l (x) A_l) vec(V_l): the mean blocks' undamped Kronecker form."""
    total = torch.zeros((), dtype=v.dtype, device=v.device)
    for layer, eig in zip(layers, bases, strict=True):
        rot = eig.q_g.T @ block(v, layer) @ eig.q_a
        total = total + (torch.outer(eig.e_g, eig.e_a) * rot.square()).sum()
    return total
