"""The deterministic limit of online projected SGD of erf attention at step ``lr = delta/d`` (``docs/dynamics.md``,
section "Online SGD: the high-dimensional limit").

Time is ``t = step/d``. The state of one run is the mean of the five overlaps and ``V``, the variance of the fast
variable ``m = M theta`` (``M <v, k*>``), which fluctuates by O(1) from step to step at every ``d``:

    d o/dt = delta E F(o) + delta^2 C(o)     (E: over the two sigma points o +- sqrt(V)/M (0,0,1,0,kappa); C at the mean)
    dV/dt  = d [((1 - dm a1)^2 + dm^2 Var(A)/B - 1) V + dm^2 Var(beta_J0)/B],     dm = delta (M^2/d) (1 - theta^2)

``F`` is the gradient flow's overlap drift (:func:`slr.theory.flow.overlap_drift`), ``C`` the second-order term of the normalisation ``1/|k - lr g|`` (the
gradient noise), and the ``V`` equation the exact second-moment recursion of ``m``, an AR(1) process with random
coefficient ``A = 2 erf(lam <X_J0, k>)^2`` (batch mean) and noise ``beta_J0``. Every expectation over the tokens is a
deterministic quadrature over a token's two or three Gaussian projections (:func:`sample_moments`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import erf

from slr.theory.closed_forms import TWO_OVER_SQRT_PI, erf_excess
from slr.theory.flow import overlap_drift

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights for ``E f(Z)``, ``Z ~ N(0, 1)`` (probabilists' weight ``exp(-x^2/2)``)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / _SQRT_2PI


PIECE_NODES = 15  # Gauss-Legendre nodes on each piece of the projection on k (see _outer_rule)
INNER_NODES = 3  # over the projections on v and v* given it (polynomials of degree <= 5 in them: exact)
Z_MAX = 8.5  # the standard normal beyond +-Z_MAX weighs < 1e-16: the outer integral is over [-Z_MAX, Z_MAX]
STEP_HALF_WIDTH = 4.5  # the bend of erf(x) lies in |x| < 4.5 (erfc(4.5) < 2e-10): each half of it is one piece
# the tensor rule over the informative token's (outer, inner_v, inner_w): the integrands are polynomials of degree <= 4
# in the first inner variable and <= 2 in the second (which enters through <X_J0, v*> only, at most squared), so 3 and
# 2 nodes are exact
HERMITE_NODES = 64  # ... unless erf(slope z) is gentle: slope <= HERMITE_MAX_SLOPE
HERMITE_MAX_SLOPE = 1.0
_GL, _GLW = np.polynomial.legendre.leggauss(PIECE_NODES)
_ZH, _WH = _hermite(HERMITE_NODES)
_ZI, _WI = _hermite(INNER_NODES)
_ZI2, _WI2 = _hermite(2)
_WIN = _WI[:, None] * _WI2[None, :]  # (inner_v, inner_w)


def _outer_rule(centre: np.ndarray, slope: float, zero_cut: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (n, pieces PIECE_NODES) for ``E f(Z)``, ``Z ~ N(0, 1)``, where ``f`` holds ``erf(slope (Z -
    centre))`` and its derivatives: a step of width ``1/slope`` (and bumps ``erf'``, ``erf'^2`` of width down to
    ``1/(2 slope)``) that Gauss-Hermite over ``Z`` cannot resolve once ``slope`` exceeds about 1.
    Up to ``HERMITE_MAX_SLOPE``, Gauss-Hermite (``HERMITE_NODES``) is accurate and cheaper; beyond it
    ``[-Z_MAX, Z_MAX]`` is cut at the step's centre, at ``centre +- STEP_HALF_WIDTH/slope`` (clipped) and, if
    ``zero_cut``, at 0, and each piece gets Gauss-Legendre nodes: each half of the step is its own piece, the others
    see ``f``'s polynomial part times the normal density over at most ``Z_MAX`` (a piece of length 0 weighs 0)."""
    if slope <= HERMITE_MAX_SLOPE:
        return np.broadcast_to(_ZH, (len(centre), len(_ZH))), np.broadcast_to(_WH, (len(centre), len(_WH)))
    h = STEP_HALF_WIDTH / slope
    c = np.clip(centre, -Z_MAX, Z_MAX)
    ends = [np.full_like(c, -Z_MAX), np.clip(centre - h, -Z_MAX, Z_MAX), c, np.clip(centre + h, -Z_MAX, Z_MAX),
            np.full_like(c, Z_MAX)] + ([np.zeros_like(c)] if zero_cut else [])
    cuts = np.sort(np.stack(ends, -1), -1)
    lo, hi = cuts[:, :-1, None], cuts[:, 1:, None]  # (n, pieces, 1)
    half = 0.5 * (hi - lo)
    z = lo + half * (_GL + 1.0)
    w = half * _GLW * np.exp(-0.5 * z * z) / _SQRT_2PI
    return z.reshape(len(centre), -1), w.reshape(len(centre), -1)


class SampleMoments(NamedTuple):
    """Expectations over one sequence of the per-sample gradient coefficients ``alpha_l = 2 r lam erf'(lam a_l) b_l``
    and ``beta_l = 2 r erf(lam a_l)`` (``a_l = <X_l, k>``, ``b_l = <X_l, v>``, ``r = T(X) - Y``): the moments of erf
    attention (checks against the closed forms), the out-of-span sums ``E sum_l s_l^2 alpha_l^2`` (``s`` = gamma at
    ``J0``, else 1), the informative token's ``alpha``, ``beta`` and ``A = 2 erf(lam a_J0)^2``."""

    EA: np.ndarray  # E erf(lam a_J0) b_J0
    EAW: np.ndarray
    EA2: np.ndarray
    EB: np.ndarray  # E erf(lam a) b, a noise token
    EB2: np.ndarray
    S_aa: np.ndarray  # E sum_l s_l^2 alpha_l^2
    S_ab: np.ndarray
    S_bb: np.ndarray
    alpha: np.ndarray  # E alpha_J0
    beta: np.ndarray  # E beta_J0
    alpha2: np.ndarray  # E alpha_J0^2
    alphabeta: np.ndarray
    beta2: np.ndarray
    A1: np.ndarray  # E A = 2 E erf(lam a_J0)^2
    A2: np.ndarray  # E A^2


def sample_moments(lam, kappa, nu, theta, eta, rho, *, M: float, gamma: float, L: int, eps: float) -> SampleMoments:
    """Per-sequence expectations by deterministic quadrature, broadcasting over the overlaps.

    Informative token: ``a = M kappa + gamma z_k``, ``b = M theta + gamma z_v``, ``w = gamma z_w`` with ``(z_k, z_v, z_w)``
    standard normal of correlations ``(rho, eta, nu)``; quadrature over ``z_k`` (outer, :func:`_outer_rule` around the
    step of ``erf(lam a)`` at ``z_k = -M kappa / gamma``), then over ``(z_v, z_w)`` given ``z_k`` (inner, Gauss-Hermite
    tensor rule on the conditional Cholesky factor). Noise token: ``a = z_k``, ``b = rho a + sqrt(1 - rho^2) y``
    (outer rule around ``z_k = 0``). The residual ``r`` couples the tokens only additively, so ``E r^2 phi(token)``
    splits into one token's moments times the first two moments of the others' sum (and of the label noise ``eps``)."""
    kappa, nu, theta, eta, rho = np.broadcast_arrays(*(np.asarray(o, dtype=float) for o in (kappa, nu, theta, eta, rho)))
    shape = kappa.shape
    lam_ = float(lam)
    zo, wo = _outer_rule(-M * kappa.reshape(-1) / gamma, lam_ * gamma)
    zn, wn = _outer_rule(np.zeros(1), lam_, zero_cut=False)  # the step is at 0 already
    P, Pn = token_sums(lam_, kappa, nu, theta, eta, rho, M=M, gamma=gamma, outer=(zo, wo), outer_noise=(zn, wn))
    return SampleMoments(*(x.reshape(shape) for x in _combine(P, Pn, gamma=gamma, L=L, eps=eps)))


def token_sums(lam: float, kappa, nu, theta, eta, rho, *, M: float, gamma: float, outer, outer_noise):
    """The per-token integrals behind :func:`sample_moments` on given outer nodes and weights ``(z, w)`` (n, K) for
    the informative token and (n or 1, K) for a noise token: ``P`` (9, n, 3), sums of ``f w``, ``f r0 w``, ``f r0^2 w``
    (``r0`` the token's own residual) for ``f`` in ``lam erf' b, erf, (lam erf' b)^2, lam erf' b erf, erf^2, erf b,
    erf b w, (erf b)^2, erf^4``, and ``Pn`` (4, n, 3) for a noise token's ``(lam erf' b)^2, lam erf' b erf, erf^2, 1``.
    The inner rule is exact; a quadrature over ``z_k`` of one's choosing plugs in here (the tests use an adaptive one)."""
    kappa, nu, theta, eta, rho = (np.asarray(x, dtype=float).reshape(-1, 1, 1, 1) for x in (kappa, nu, theta, eta, rho))
    n = len(kappa)  # axes (n, outer, inner, inner)

    def E(fs, r0, w):  # sums over the nodes of f w, f r0 w and f r0^2 w for each f: (K, n, 3)
        shape = np.broadcast_shapes(w.shape, r0.shape)
        W = np.empty(shape + (3,))
        W[..., 0] = w
        np.multiply(W[..., 0], r0, out=W[..., 1])
        np.multiply(W[..., 1], r0, out=W[..., 2])
        W = W.reshape(n, -1, 3)
        out = np.empty((len(fs), n, 3))
        for i, f in enumerate(fs):
            out[i] = np.matmul(np.broadcast_to(f, shape).reshape(n, 1, -1), W)[:, 0]
        return out

    # informative token: axes (n, outer, inner_v, inner_w)
    zo, wo = outer
    z, W3 = zo[:, :, None, None], wo[:, :, None, None] * _WIN
    y1, y2 = _ZI[None, :, None], _ZI2[None, None, :]
    l11 = np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
    l21 = np.where(l11 > 1e-12, (nu - rho * eta) / np.maximum(l11, 1e-12), 0.0)
    l22 = np.sqrt(np.maximum(1.0 - eta * eta - l21 * l21, 0.0))
    zv = rho * z + l11 * y1
    zw = eta * z + l21 * y1 + l22 * y2
    a = M * kappa + gamma * z
    b = M * theta + gamma * zv
    w = gamma * zw
    e = erf(lam * a)
    e1 = lam * TWO_OVER_SQRT_PI * np.exp(-(lam * a) ** 2)  # d erf(lam a)/da
    eb, e1b, ee = e * b, e1 * b, e * e
    # alpha, beta (first moments), alpha^2, alpha beta, beta^2; then moments of erf attention and of A
    P = E((e1b, e, e1b * e1b, e1b * e, ee, eb, eb * w, eb * eb, ee * ee), eb - w, W3)
    # noise token: a = z, b = rho z + sqrt(1 - rho^2) y; axes (n, outer, inner, 1)
    zn, wn = outer_noise
    z, WN = zn[:, :, None, None], wn[:, :, None, None] * _WI[:, None]
    bn = rho * z + l11 * _ZI[None, :, None]
    en = erf(lam * z)
    e1n = lam * TWO_OVER_SQRT_PI * np.exp(-(lam * z) ** 2)
    Pn = E(((e1n * bn) ** 2, e1n * bn * en, en * en, 1.0), en * bn, WN)  # alpha^2, alpha beta, beta^2; 1
    return P, Pn


def _combine(P: np.ndarray, Pn: np.ndarray, *, gamma: float, L: int, eps: float) -> SampleMoments:
    """The moments of one sequence from the per-token integrals of :func:`token_sums` (flat over the points)."""
    Ephi, Er0phi, Er02phi = P[:5, :, 0], P[:5, :, 1], P[:5, :, 2]
    EA, EAW, EA2, Eee, Ee4 = P[5, :, 0], P[6, :, 0], P[7, :, 0], P[4, :, 0], P[8, :, 0]
    EB, EB2 = Pn[3, :, 1], Pn[3, :, 2]  # E erf(lam a) b and its square
    # the rest of the residual: for J0, the noise tokens' sum minus the label noise; for a noise token, the others
    n1 = (L - 1) * EB
    n2 = (L - 1) * EB2 + (L - 1) * (L - 2) * EB**2 + eps**2
    c1 = EA + (L - 2) * EB
    c2 = (EA2 - 2.0 * EAW + gamma**2) + 2.0 * (L - 2) * EA * EB + (L - 2) * EB2 + (L - 2) * (L - 3) * EB**2 + eps**2
    # E r phi = E r0 phi + m1 E phi;  E r^2 phi = E r0^2 phi + 2 m1 E r0 phi + m2 E phi  (r = r0 + the rest)
    alpha = 2.0 * (Er0phi[0] + n1 * Ephi[0])
    beta = 2.0 * (Er0phi[1] + n1 * Ephi[1])
    alpha2, alphabeta, beta2 = (4.0 * (Er02phi[i] + 2.0 * n1 * Er0phi[i] + n2 * Ephi[i]) for i in (2, 3, 4))
    alpha2n, alphabetan, beta2n = (4.0 * (Pn[i, :, 2] + 2.0 * c1 * Pn[i, :, 1] + c2 * Pn[i, :, 0]) for i in range(3))
    g2 = gamma**2
    return SampleMoments(EA, EAW, EA2, EB, EB2,
                         S_aa=g2 * alpha2 + (L - 1) * alpha2n, S_ab=g2 * alphabeta + (L - 1) * alphabetan,
                         S_bb=g2 * beta2 + (L - 1) * beta2n, alpha=alpha, beta=beta, alpha2=alpha2,
                         alphabeta=alphabeta, beta2=beta2, A1=2.0 * Eee, A2=4.0 * Ee4)


def second_order(o: np.ndarray, mo: SampleMoments, *, d: int, M: float, B: int) -> np.ndarray:
    """``C(o)``: the O(delta^2) drift of the overlaps from normalising ``k - lr g_k`` and ``v - lr g_v``, per unit
    ``t`` and per ``delta^2``: ``C_kappa = -S_k kappa / 2`` (``eta`` alike), ``C_nu = -S_v nu / 2`` (``theta`` alike),
    ``C_rho = S_kv - (S_k + S_v) rho / 2``, with ``S_k = E |P_k g_k|^2 / d``: the out-of-span part
    ``(d-4)/(d B) E sum s_l^2 alpha_l^2`` plus the informative token's mean ``M k*`` seen through ``alpha_J0``,
    ``(M^2/d) |P_k k*|^2 (Var alpha_J0 / B + (E alpha_J0)^2)``; ``S_v``, ``S_kv`` likewise."""
    kappa, nu, theta, eta, rho = np.moveaxis(o, -1, 0)
    f, q = (d - 4.0) / (d * B), M * M / d
    S_k = f * mo.S_aa + q * (1.0 - kappa**2) * ((mo.alpha2 - mo.alpha**2) / B + mo.alpha**2)
    S_v = f * mo.S_bb + q * (1.0 - theta**2) * ((mo.beta2 - mo.beta**2) / B + mo.beta**2)
    S_kv = f * mo.S_ab + q * (1.0 - kappa**2 - theta**2 + kappa * theta * rho) * (
        (mo.alphabeta - mo.alpha * mo.beta) / B + mo.alpha * mo.beta)
    return np.stack([-0.5 * S_k * kappa, -0.5 * S_v * nu, -0.5 * S_v * theta, -0.5 * S_k * eta,
                     S_kv - 0.5 * (S_k + S_v) * rho], axis=-1)


def sigma_points(y: np.ndarray, M: float) -> np.ndarray:
    """The two points (2, ..., 5) ``o +- sqrt(|V|)/M (0, 0, 1, 0, kappa)``: ``theta`` and the part ``kappa theta`` of
    ``rho`` that follows it (both move with ``v``'s step along ``k*``), at the variance ``V`` of ``m = M theta``.
    Averages over them are ``f(o) + c V`` for the cubic polynomials in ``theta`` they are used on; see
    :func:`sigma_mean` for ``V < 0`` (a solver's trial step)."""
    o, V = y[..., :5], np.abs(y[..., 5])
    u = np.zeros_like(o)
    u[..., 2], u[..., 4] = 1.0, o[..., 0]
    s = (np.sqrt(V) / M)[..., None] * u
    return np.stack([o + s, o - s])


def sigma_mean(values: np.ndarray, centre: np.ndarray, V: np.ndarray) -> np.ndarray:
    """``E f`` from ``f`` at the two sigma points (``values``, (2, ...)) and at the mean (``centre``): their average,
    which is ``f(o) + c V``; for ``V < 0`` (points at ``sqrt(-V)``) the same line continued, ``2 f(o) - average``,
    so that the right-hand side is smooth in ``V`` through 0 as the solver's Jacobian assumes."""
    avg = values.mean(0)
    neg = (V < 0).reshape(V.shape + (1,) * (avg.ndim - V.ndim))
    return np.where(neg, 2.0 * centre - avg, avg)


class LimitModel(NamedTuple):
    """Settings of the limit ODE: task ``(d, M, L, gamma, eps)``, step ``delta = lr d``, batch ``B``; ``correction``
    False gives the plain flow at step ``delta`` (no second-order term, ``V`` stays 0)."""

    d: int
    M: float
    L: int
    gamma: float
    eps: float
    delta: float
    B: int
    correction: bool = True


def limit_rhs(y: np.ndarray, lam: float, p: LimitModel) -> np.ndarray:
    """``dy/dt`` (R, 6) of the state ``y = (kappa, nu, theta, eta, rho, V)`` (R, 6) at ``lam``."""
    if not p.correction:
        out = np.zeros_like(y)
        out[:, :5] = p.delta * overlap_drift(y[:, :5], lam, d=p.d, L=p.L, gamma=p.gamma, signal=p.M)
        return out
    V, o = y[:, 5], y[:, :5]
    pts = sigma_points(y, p.M)  # (2, R, 5); the mean too (for V < 0) only if some V < 0: (3, R, 5)
    if (V < 0).any():
        pts = np.concatenate([pts, o[None]])
    F = overlap_drift(pts, lam, d=p.d, L=p.L, gamma=p.gamma, signal=p.M)
    if len(F) == 2:
        F = np.concatenate([F, F[:1]])  # not used: sigma_mean takes the centre where V < 0 only
    mo = sample_moments(lam, *o.T, M=p.M, gamma=p.gamma, L=p.L, eps=p.eps)  # (R,): at the mean
    out = np.empty_like(y)
    out[:, :5] = p.delta * sigma_mean(F[:2], F[2], V) + p.delta**2 * second_order(o, mo, d=p.d, M=p.M, B=p.B)
    theta = y[:, 2]
    dm = p.delta * (p.M**2 / p.d) * (1.0 - theta**2)
    a1, varA, varb = mo.A1, (mo.A2 - mo.A1**2) / p.B, (mo.beta2 - mo.beta**2) / p.B
    out[:, 5] = p.d * (((1.0 - dm * a1) ** 2 + dm**2 * varA - 1.0) * V + dm**2 * varb)
    return out


def expected_excess(lam: float, y: np.ndarray, *, d: int, L: int, gamma: float, M: float) -> np.ndarray:
    """``E R`` over the fluctuation of ``m``: the mean of the excess at the two sigma points (exact: ``R`` is a
    quadratic polynomial in ``theta`` and ``rho``)."""
    pts = np.concatenate([sigma_points(y, M), y[None, ..., :5]])
    R = erf_excess(lam, *np.moveaxis(pts, -1, 0), d=d, L=L, gamma=gamma, signal=M)
    return sigma_mean(R[:2], R[2], y[..., 5])
