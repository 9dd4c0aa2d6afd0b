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

import functools
import math
from typing import NamedTuple

import numpy as np
from scipy.special import erf

from slr.theory.closed_forms import TWO_OVER_SQRT_PI, ErfRiskJet, erf_excess
from slr.theory.flow import drift_from_gradient, overlap_drift
from slr.theory.gaussian_polynomials import Algebra, contract, evaluate, gaussian_expectation, quadrature_sums, term_table

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights for ``E f(Z)``, ``Z ~ N(0, 1)`` (probabilists' weight ``exp(-x^2/2)``)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / _SQRT_2PI


# The outer quadrature, over the projection z_k on k (the inner integrals given z_k are exact: _token_tables)
PIECE_NODES = 15  # Gauss-Legendre nodes on each piece of [-Z_MAX, Z_MAX] (see _outer_rule)
Z_MAX = 8.5  # the standard normal beyond +-Z_MAX weighs < 1e-16: the outer integral is over [-Z_MAX, Z_MAX]
STEP_HALF_WIDTH = 4.5  # the bend of erf(x) lies in |x| < 4.5 (erfc(4.5) < 2e-10): each half of it is one piece
# ... unless erf(slope z) is gentle: Gauss-Hermite with as few nodes as the slope allows, (largest slope, nodes);
# each tier is accurate to <= 1e-9 relative at its largest slope up to 0.5, 1e-6 at 1 (tests/test_sgd_limit.py)
HERMITE_TIERS = ((0.1, 12), (0.25, 24), (0.5, 48), (1.0, 64))
HERMITE_MAX_SLOPE = HERMITE_TIERS[-1][0]
_GL, _GLW = np.polynomial.legendre.leggauss(PIECE_NODES)
_HERMITE_RULES = {n: _hermite(n) for _, n in HERMITE_TIERS}


def _outer_rule(centre: np.ndarray, slope: float, zero_cut: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (n, pieces PIECE_NODES) for ``E f(Z)``, ``Z ~ N(0, 1)``, where ``f`` holds ``erf(slope (Z -
    centre))`` and its derivatives: a step of width ``1/slope`` (and bumps ``erf'``, ``erf'^2`` of width down to
    ``1/(2 slope)``) that Gauss-Hermite over ``Z`` cannot resolve once ``slope`` exceeds about 1.
    Up to ``HERMITE_MAX_SLOPE``, Gauss-Hermite (``HERMITE_TIERS``: fewer nodes for gentler slopes) is accurate and
    cheaper; beyond it
    ``[-Z_MAX, Z_MAX]`` is cut at the step's centre, at ``centre +- STEP_HALF_WIDTH/slope`` (clipped) and, if
    ``zero_cut``, at 0, and each piece gets Gauss-Legendre nodes: each half of the step is its own piece, the others
    see ``f``'s polynomial part times the normal density over at most ``Z_MAX`` (a piece of length 0 weighs 0)."""
    for top, nodes in HERMITE_TIERS:
        if slope <= top:
            z, w = _HERMITE_RULES[nodes]
            return np.broadcast_to(z, (len(centre), nodes)), np.broadcast_to(w, (len(centre), nodes))
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
    step of ``erf(lam a)`` at ``z_k = -M kappa / gamma``), then over ``(z_v, z_w)`` given ``z_k`` (inner: exact
    Gaussian moments of the integrands, polynomials in them, :func:`_token_tables`). Noise token: ``a = z_k``, ``b = rho a + sqrt(1 - rho^2) y``
    (outer rule around ``z_k = 0``). The residual ``r`` couples the tokens only additively, so ``E r^2 phi(token)``
    splits into one token's moments times the first two moments of the others' sum (and of the label noise ``eps``)."""
    kappa, nu, theta, eta, rho = np.broadcast_arrays(*(np.asarray(o, dtype=float) for o in (kappa, nu, theta, eta, rho)))
    shape = kappa.shape
    lam_ = float(lam)
    outer = _outer_rule(-M * kappa.reshape(-1) / gamma, lam_ * gamma)
    P = _informative_sums(lam_, kappa, nu, theta, eta, rho, M=M, gamma=gamma, outer=outer)
    Pn = _noise_contract(_noise_quadrature_at(lam_), rho)  # the noise token's step is at 0 already
    return SampleMoments(*(x.reshape(shape) for x in _combine(P, Pn, gamma=gamma, L=L, eps=eps)))


def _token_tables():
    """The per-token integrands as polynomials in the inner Gaussian variables, their expectations taken exactly
    (:mod:`slr.theory.gaussian_polynomials`), flattened for :func:`token_sums`.

    Informative token, given ``z_k``: ``b = b0 + b1 z_k + U`` (``b0 = M theta``, ``b1 = gamma rho``), ``w = w1 z_k + V``
    (``w1 = gamma eta``), ``(U, V)`` Gaussian of covariances ``gamma^2 (1 - rho^2, nu - rho eta, 1 - eta^2)``; ``e``, ``e1``
    stand for ``erf(lam a)``, ``lam erf'(lam a)``. Noise token: ``b = rho z + U``, ``Var U = 1 - rho^2``."""
    A = Algebra(("e", "e1", "z", "b0", "b1", "w1", "U", "V"))
    e, e1, z, b0, b1, w1, U, V = (A.var(x) for x in A.names)
    b, w = A.add(b0, A.mul(b1, z), U), A.add(A.mul(w1, z), V)
    eb, e1b, ee = A.mul(e, b), A.mul(e1, b), A.mul(e, e)
    r0 = A.add(eb, A.scale(w, -1.0))
    fs = (e1b, e, A.mul(e1b, e1b), A.mul(e1b, e), ee, eb, A.mul(eb, w), A.mul(eb, eb), A.mul(ee, ee))
    covs = {("U", "U"): "Suu", ("U", "V"): "Suv", ("V", "V"): "Svv"}
    informative = [gaussian_expectation(A.mul(f, A.pow(r0, m)), A.names, ("U", "V"), covs)[0]
                   for f in fs for m in range(3)]
    A = Algebra(("e", "e1", "z", "rho", "U"))
    e, e1, z, rho, U = (A.var(x) for x in A.names)
    b = A.add(A.mul(rho, z), U)
    e1b, r0 = A.mul(e1, b), A.mul(e, b)
    fs = (A.mul(e1b, e1b), A.mul(e1b, e), A.mul(e, e), A.const(1.0))
    noise = [gaussian_expectation(A.mul(f, A.pow(r0, m)), A.names, ("U",), {("U", "U"): "Snn"})[0]
             for f in fs for m in range(3)]
    return term_table(informative, 2), term_table(noise, 2)


_INFORMATIVE, _NOISE = _token_tables()


def token_sums(lam: float, kappa, nu, theta, eta, rho, *, M: float, gamma: float, outer, outer_noise):
    """The per-token integrals behind :func:`sample_moments` on given outer nodes and weights ``(z, w)`` (n, K) for
    the informative token and (n or 1, K) for a noise token: ``P`` (9, n, 3), sums of ``f w``, ``f r0 w``, ``f r0^2 w``
    (``r0`` the token's own residual) for ``f`` in ``lam erf' b, erf, (lam erf' b)^2, lam erf' b erf, erf^2, erf b,
    erf b w, (erf b)^2, erf^4``, and ``Pn`` (4, n, 3) for a noise token's ``(lam erf' b)^2, lam erf' b erf, erf^2, 1``.
    The integrals over the projections on ``v`` and ``v*`` given ``z_k`` are exact (Gaussian moments of polynomials,
    :func:`_token_tables`); a quadrature over ``z_k`` of one's choosing plugs in here (the tests use an adaptive one)."""
    o = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (kappa, nu, theta, eta, rho)))
    P = _informative_sums(lam, *o, M=M, gamma=gamma, outer=outer)
    return P, _noise_contract(_noise_quadrature(lam, *outer_noise), o[4])


def _informative_sums(lam: float, kappa, nu, theta, eta, rho, *, M: float, gamma: float, outer) -> np.ndarray:
    """``P`` (9, n, 3) of :func:`token_sums`, for overlaps of one shape (n points once flattened)."""
    kappa, nu, theta, eta, rho = (np.asarray(x, dtype=float).reshape(-1) for x in (kappa, nu, theta, eta, rho))
    n, g2 = len(kappa), gamma * gamma
    # the conditional law of (z_v, z_w) given z_k: its Cholesky factor, clipped for an invalid Gram matrix
    l11 = np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
    l21 = np.where(l11 > 1e-12, (nu - rho * eta) / np.maximum(l11, 1e-12), 0.0)
    l22 = np.sqrt(np.maximum(1.0 - eta * eta - l21 * l21, 0.0))
    zo, wo = outer
    a = M * kappa[:, None] + gamma * zo  # (n, K)
    e, e1 = erf(lam * a), lam * TWO_OVER_SQRT_PI * np.exp(-(lam * a) ** 2)
    scalars = np.stack([M * theta, gamma * rho, gamma * eta, g2 * l11 * l11, g2 * l11 * l21,
                        g2 * (l21 * l21 + l22 * l22)], axis=-1)  # (n, 6)
    return evaluate(_INFORMATIVE, [e, e1], zo, wo, scalars).reshape(n, 9, 3).transpose(1, 0, 2)


def _noise_quadrature(lam: float, zn: np.ndarray, wn: np.ndarray) -> np.ndarray:
    """A noise token's quadrature sums over ``z_k`` (1 or n, F, r): they depend on ``lam`` and the nodes only."""
    en, e1n = erf(lam * zn), lam * TWO_OVER_SQRT_PI * np.exp(-(lam * zn) ** 2)  # a = z: the step at 0
    return quadrature_sums(_NOISE, [en, e1n], zn, wn)


@functools.lru_cache(maxsize=4)
def _noise_quadrature_at(lam: float) -> np.ndarray:
    """:func:`_noise_quadrature` on :func:`_outer_rule`'s nodes, kept for the last few ``lam`` (a stiff solver
    evaluates the right-hand side several times at one time, so at one ``lam``)."""
    Y = _noise_quadrature(lam, *_outer_rule(np.zeros(1), lam, zero_cut=False))
    Y.flags.writeable = False
    return Y


def _noise_contract(Y: np.ndarray, rho) -> np.ndarray:
    """``Pn`` (4, n, 3) of :func:`token_sums` from the noise token's quadrature sums."""
    rho = np.asarray(rho, dtype=float).reshape(-1)
    scalars = np.stack([rho, np.maximum(1.0 - rho * rho, 0.0)], axis=-1)  # b = rho z + U, Var U = 1 - rho^2
    return contract(_NOISE, Y, scalars).reshape(len(rho), 4, 3).transpose(1, 0, 2)


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


@functools.lru_cache(maxsize=4)
def _jet_at(lam: float, M: float, L: int, gamma: float) -> ErfRiskJet:
    """The risk's jet at ``lam``, kept for the last few ``lam`` (see :func:`_noise_quadrature_at`)."""
    return ErfRiskJet(lam, M=M, L=L, gamma=gamma)


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
    # the flow's drift at the points; they share kappa, so its functions are evaluated once per run
    G, _ = _jet_at(float(lam), p.M, p.L, p.gamma).derivatives(o[:, 0], *np.moveaxis(pts[..., 1:], -1, 0), hessian=False)
    F = drift_from_gradient(pts, G)
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
    pts = sigma_points(y, M)  # the mean too only where some V < 0 (sigma_mean's continuation)
    if (y[..., 5] < 0).any():
        pts = np.concatenate([pts, y[None, ..., :5]])
    R = erf_excess(lam, *np.moveaxis(pts, -1, 0), d=d, L=L, gamma=gamma, signal=M)
    return sigma_mean(R[:2], R[2] if len(R) == 3 else R[0], y[..., 5])
