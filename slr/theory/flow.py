"""The Riemannian gradient flow of the population risk, written as an ODE in the five overlaps (docs/dynamics.md).

``dk/dt = -P_k grad_k R``, ``dv/dt = -P_v grad_v R`` on the product of unit spheres. Both gradients lie in
``span{k, v, k*, v*}`` (``grad_k R = R_kappa k* + R_eta v* + R_rho v``, ``grad_v R = R_nu v* + R_theta k* + R_rho k``),
so the overlaps ``o = (kappa, nu, theta, eta, rho)`` obey a closed ODE at every ``d``:

    do/dt = -P(o) G(o),    G = (R_kappa, R_nu, R_theta, R_eta, R_rho),

with ``P(o) = C(o) - u_a u_a^T - u_b u_b^T`` symmetric and positive semi-definite (the metric the spheres induce on
the overlaps), ``u_a = (kappa, 0, 0, eta, rho)``, ``u_b = (0, nu, theta, 0, rho)`` and ``C(o)`` the matrix of the
inner products ``<k*, v*, v>`` x ``<v*, k*, k>`` written out in :data:`_C_CONST` and :data:`_C_LINEAR`. The squared
Riemannian gradient norm is ``G^T P G``. The Jacobian is exact (from the risk's Hessian in the overlaps).
"""
from __future__ import annotations

import numpy as np

from slr.theory.closed_forms import ErfRiskJet, signal_norm

# C(o) = _C_CONST + sum_j o_j _C_LINEAR[:, :, j]; rows are (kappa, nu, theta, eta, rho):
#   (C G)_kappa = R_kappa + theta R_rho         (C G)_eta   = R_eta + nu R_rho
#   (C G)_nu    = R_nu + eta R_rho              (C G)_theta = R_theta + kappa R_rho
#   (C G)_rho   = theta R_kappa + nu R_eta + eta R_nu + kappa R_theta + 2 R_rho
_K, _N, _T, _E, _R = range(5)
_C_CONST = np.eye(5)
_C_CONST[_R, _R] = 2.0
_C_LINEAR = np.zeros((5, 5, 5))
for _row, _col, _var in [(_K, _R, _T), (_N, _R, _E), (_T, _R, _K), (_E, _R, _N)]:
    _C_LINEAR[_row, _col, _var] = 1.0  # symmetric: the rho row carries the transposed entries
    _C_LINEAR[_col, _row, _var] = 1.0
_U_A = np.diag([1.0, 0.0, 0.0, 1.0, 1.0])  # u_a = _U_A o = (kappa, 0, 0, eta, rho): <k, grad_k R> = u_a . G
_U_B = np.diag([0.0, 1.0, 1.0, 0.0, 1.0])  # u_b = _U_B o = (0, nu, theta, 0, rho):  <v, grad_v R> = u_b . G


def overlap_metric(o: np.ndarray) -> np.ndarray:
    """``P(o)`` of shape (..., 5, 5): the flow is ``do/dt = -P(o) grad R`` (docs/dynamics.md)."""
    o = np.asarray(o, dtype=float)
    C = _C_CONST + np.einsum("abj,...j->...ab", _C_LINEAR, o)
    ua, ub = o * np.diag(_U_A), o * np.diag(_U_B)
    return C - ua[..., :, None] * ua[..., None, :] - ub[..., :, None] * ub[..., None, :]


def _jet(lam: float, *, d: float, L: int, gamma: float, signal: float | None) -> ErfRiskJet:
    return ErfRiskJet(float(lam), M=signal_norm(d, signal), L=L, gamma=gamma)


def drift_from_gradient(o: np.ndarray, G: np.ndarray) -> np.ndarray:
    """``-P(o) G`` for a gradient ``G`` in the overlaps, both (..., 5)."""
    return -np.einsum("...ab,...b->...a", overlap_metric(o), G)


def jacobian_from_jet(o: np.ndarray, G: np.ndarray, H: np.ndarray) -> np.ndarray:
    """``d(-P(o) G(o))/do`` of shape (..., 5, 5), from the gradient ``G`` (..., 5) and Hessian ``H`` (..., 5, 5).

    ``-C H - [C_j G]_j + u_a (U_a G + H u_a)^T + a U_a + u_b (U_b G + H u_b)^T + b U_b`` with ``a = u_a . G``,
    ``b = u_b . G`` and ``C_j = dC/do_j`` (docs/dynamics.md); its part ``-P H`` is symmetric-times-symmetric."""
    o, G, H = (np.asarray(x, dtype=float) for x in (o, G, H))
    C = _C_CONST + np.einsum("abj,...j->...ab", _C_LINEAR, o)
    ua, ub = o * np.diag(_U_A), o * np.diag(_U_B)
    a, b = (ua * G).sum(-1), (ub * G).sum(-1)
    J = -np.einsum("...ab,...bc->...ac", C, H)
    J -= np.einsum("abj,...b->...aj", _C_LINEAR, G)
    for u, U, s in ((ua, _U_A, a), (ub, _U_B, b)):
        w = G * np.diag(U) + np.einsum("...ab,...b->...a", H, u)
        J += u[..., :, None] * w[..., None, :] + s[..., None, None] * U
    return J


def overlap_drift(o, lam: float, *, d: float, L: int, gamma: float, signal: float | None = None) -> np.ndarray:
    """``do/dt`` of the Riemannian gradient flow at overlaps ``o`` (..., 5) ordered (kappa, nu, theta, eta, rho)."""
    o = np.asarray(o, dtype=float)
    G, _ = _jet(lam, d=d, L=L, gamma=gamma, signal=signal).derivatives(*np.moveaxis(o, -1, 0), hessian=False)
    return drift_from_gradient(o, G)


def overlap_jacobian(o, lam: float, *, d: float, L: int, gamma: float, signal: float | None = None) -> np.ndarray:
    """``d(do/dt)/do`` of shape (..., 5, 5) (rows: the derivative of each overlap's rate)."""
    return overlap_drift_and_jacobian(o, lam, d=d, L=L, gamma=gamma, signal=signal)[1]


def overlap_drift_and_jacobian(o, lam: float, *, d: float, L: int, gamma: float, signal: float | None = None):
    """``(drift, jacobian)`` from one evaluation of the risk's jet."""
    o = np.asarray(o, dtype=float)
    G, H = _jet(lam, d=d, L=L, gamma=gamma, signal=signal).derivatives(*np.moveaxis(o, -1, 0))
    return drift_from_gradient(o, G), jacobian_from_jet(o, G, H)


def riemannian_grad_norm(o, G) -> np.ndarray:
    """``sqrt(|P_k grad_k R|^2 + |P_v grad_v R|^2) = sqrt(G^T P(o) G)`` (..., )."""
    o, G = np.asarray(o, dtype=float), np.asarray(G, dtype=float)
    sq = np.einsum("...a,...ab,...b->...", G, overlap_metric(o), G)
    return np.sqrt(np.maximum(sq, 0.0))


def canonical_coordinates(o) -> np.ndarray:
    """Unit ``(k, v)`` (..., 2, 4) on ``(k*, v*, e1, e2)`` with these overlaps, ``k = (kappa, eta, a, 0)``,
    ``v = (theta, nu, b, c)``; overlaps slightly outside the set of valid Gram matrices (integration error) are
    projected onto it: ``a``, ``c`` clipped at 0, then ``k``, ``v`` renormalised."""
    o = np.asarray(o, dtype=float)
    kappa, nu, theta, eta, rho = np.moveaxis(o, -1, 0)
    a = np.sqrt(np.maximum(1.0 - kappa**2 - eta**2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(a > 1e-300, (rho - kappa * theta - eta * nu) / a, 0.0)
    c = np.sqrt(np.maximum(1.0 - theta**2 - nu**2 - b**2, 0.0))
    z = np.zeros_like(a)
    KV = np.stack([np.stack([kappa, eta, a, z], -1), np.stack([theta, nu, b, c], -1)], -2)
    return KV / np.sqrt((KV * KV).sum(-1, keepdims=True))


def overlaps_of(KV) -> np.ndarray:
    """``(kappa, nu, theta, eta, rho)`` (..., 5) of ``(k, v)`` (..., 2, 4) on ``(k*, v*, e1, e2)``."""
    k, v = KV[..., 0, :], KV[..., 1, :]
    return np.stack([k[..., 0], v[..., 1], v[..., 0], k[..., 1], (k * v).sum(-1)], -1)
