"""Closed forms (``docs/closed-forms.md``): zeta, the population risk of erf attention and the baselines' risks.

Everything is numpy, float64 and broadcasts over its array arguments. ``excess`` always means
``risk - eps^2 = E (f(X) - W)^2`` with ``W = <X_J0, v*>``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import erf, owens_t

SQRT_PI = math.sqrt(math.pi)
TWO_OVER_SQRT_PI = 2.0 / SQRT_PI
OVERLAPS = ("kappa", "nu", "theta", "eta", "rho")  # <k,k*>, <v,v*>, <v,k*>, <k,v*>, <k,v> of the unit k, v


def default_signal(d: int) -> float:
    """The paper's signal norm ``M = sqrt(d/2)`` (``docs/task-and-predictors.md`` §1)."""
    return math.sqrt(d / 2.0)


def signal_norm(d: int, signal: float | None) -> float:
    """``M``: the given signal, or ``sqrt(d/2)`` when it is None."""
    return default_signal(d) if signal is None else float(signal)


def erf_derivatives(x, n: int = 3, exp=np.exp) -> list[np.ndarray]:
    """``[erf(x), erf'(x), ..., erf^(n)(x)]``: ``erf^(j) = (-1)^(j-1) H_(j-1)(x) erf'(x)`` with the Hermite polynomials
    ``H_0 = 1``, ``H_1 = 2x``, ``H_(i+1) = 2x H_i - 2i H_(i-1)`` and ``erf' = 2 exp(-x^2)/sqrt(pi)``
    (``docs/closed-forms.md`` §1). The one erf family of the closed forms, their gradient and their jet; ``exp``:
    :func:`libm_exp` where the compiled PGD step must agree bitwise."""
    x = np.asarray(x, dtype=float)
    e1 = TWO_OVER_SQRT_PI * exp(-x * x)
    out = [erf(x), e1]
    h_prev, h = np.ones_like(x), 2.0 * x  # H_0, H_1
    for j in range(2, n + 1):
        out.append((-1.0) ** (j - 1) * h * e1)
        h_prev, h = h, 2.0 * x * h - 2.0 * (j - 1) * h_prev
    return out[: n + 1]


def zeta(t, g):
    """``zeta(t, g) = E erf(t + g Z)^2 = 1 - 8 T(sqrt2 t/p, 1/q)``, ``p = sqrt(1+2g^2)``, ``q = sqrt(1+4g^2)``
    (``docs/closed-forms.md`` §2)."""
    t, g = np.asarray(t, dtype=float), np.asarray(g, dtype=float)
    p, q = np.sqrt(1.0 + 2.0 * g * g), np.sqrt(1.0 + 4.0 * g * g)
    return 1.0 - 8.0 * owens_t(math.sqrt(2.0) * t / p, 1.0 / q)


def zeta_derivatives(t, g, n: int = 3) -> list[np.ndarray]:
    """``[zeta_t, zeta_tt, ..., d^n zeta/dt^n]`` (``1 <= n <= 4``) at ``(t, g)``: the Leibniz rule on
    ``zeta_t = (2/p) erf(a) erf'(b)``, ``a = t/(pq)``, ``b = t/p``, i.e. ``d^n zeta/dt^n = (2/p) sum_j C(n-1, j)
    erf^(j)(a) erf^(n-j)(b) / ((pq)^j p^(n-1-j))``, written out term by term (``docs/closed-forms.md`` §2). The one
    zeta family of the closed forms and their jet (the gradient's compiled twin repeats orders 1-3 inline)."""
    if not 1 <= n <= 4:
        raise ValueError(f"zeta_derivatives computes orders 1 to 4, got n={n}")
    t, g = np.asarray(t, dtype=float), np.asarray(g, dtype=float)
    p, q = np.sqrt(1.0 + 2.0 * g * g), np.sqrt(1.0 + 4.0 * g * g)
    f = erf_derivatives(t / (p * q), n - 1)
    e = erf_derivatives(t / p, n)
    out = [2.0 / p * f[0] * e[1]]
    if n >= 2:
        out.append(2.0 / p * (f[1] * e[1] / (p * q) + f[0] * e[2] / p))
    if n >= 3:
        out.append(2.0 / p * (f[2] * e[1] / ((p * q) * (p * q)) + 2.0 * f[1] * e[2] / (p * p * q)
                              + f[0] * e[3] / (p * p)))
    if n >= 4:
        pq = p * q
        out.append(2.0 / p * (f[3] * e[1] / (pq * pq * pq) + 3.0 * f[2] * e[2] / (pq * pq * p)
                              + 3.0 * f[1] * e[3] / (pq * p * p) + f[0] * e[4] / (p * p * p)))
    return out


def zeta_t(t, g):
    """``d zeta / dt = (2/p) erf(t/(pq)) erf'(t/p)`` (``docs/closed-forms.md`` §2)."""
    return zeta_derivatives(t, g, 1)[0]


def zeta_tt(t, g):
    """``d^2 zeta / dt^2 = (2/p) [erf'(t/(pq)) erf'(t/p)/(pq) + erf(t/(pq)) erf''(t/p)/p]`` (``docs/closed-forms.md``
    §2)."""
    return zeta_derivatives(t, g, 2)[1]


def zeta_ttt(t, g):
    """Third t-derivative of zeta (the derivative of ``zeta_tt``), needed by the gradient of the risk."""
    return zeta_derivatives(t, g, 3)[2]


def noise_token_moments(lam: float) -> tuple[float, float, float]:
    """``(beta1, beta2, zeta(0, lam))`` of a noise token ``B = erf(lam <x,k>) <x,v>`` with unit ``k``, ``v``:
    ``E[B] = beta1 rho``, ``E[B^2] = zeta(0, lam) + beta2 rho^2`` with ``beta1 = 2 lam/sqrt(pi(1+2lam^2))``,
    ``beta2 = 8 lam^2/(pi(1+2lam^2) sqrt(1+4lam^2))`` (``docs/closed-forms.md`` §3), in the arithmetic of the
    compiled PGD step (``pgd_step.c``), whose gradient must equal :class:`ErfRiskGradient`'s bitwise."""
    lam2 = lam * lam
    beta1 = 2.0 * lam / math.sqrt(math.pi * (1.0 + 2.0 * lam2))
    beta2 = 8.0 * lam2 / (math.pi * (1.0 + 2.0 * lam2) * math.sqrt(1.0 + 4.0 * lam2))
    return beta1, beta2, float(zeta(0.0, lam))


class Moments(NamedTuple):
    """The moments of erf attention for unit ``k``, ``v`` (``docs/closed-forms.md`` §3): informative token ``A``,
    noise token ``B``, ``W = <X_J0, v*>``."""

    EA: np.ndarray
    EAW: np.ndarray
    EA2: np.ndarray
    EB: np.ndarray
    EB2: np.ndarray


def erf_moments(lam, kappa, nu, theta, eta, rho, *, M: float, gamma: float) -> Moments:
    """``E[A], E[AW], E[A^2], E[B], E[B^2]`` of erf attention with unit ``k``, ``v`` (``docs/closed-forms.md`` §3)."""
    lam, kappa, nu, theta, eta, rho = (np.asarray(a, dtype=float) for a in (lam, kappa, nu, theta, eta, rho))
    c, s, m = lam * M * kappa, lam * gamma, M * theta
    p = np.sqrt(1.0 + 2.0 * s * s)
    e0, e1, e2 = erf_derivatives(c / p, 2)
    z1, z2 = zeta_derivatives(c, s, 2)
    EA = m * e0 + gamma * rho * s * e1 / p
    EAW = gamma**2 * nu * e0 + gamma * s * eta * (m * e1 / p + gamma * rho * s * e2 / p**2)
    EA2 = (m * m + gamma**2) * zeta(c, s) + 2.0 * m * gamma * rho * s * z1 + (gamma * rho * s) ** 2 * z2
    EB = 2.0 * lam * rho / np.sqrt(np.pi * (1.0 + 2.0 * lam * lam))
    EB2 = zeta(0.0, lam) + 8.0 * lam**2 * rho**2 / (np.pi * (1.0 + 2.0 * lam**2) * np.sqrt(1.0 + 4.0 * lam**2))
    return Moments(EA, EAW, EA2, EB, EB2)


def erf_excess(lam, kappa, nu, theta, eta, rho, *, d: int, L: int, gamma: float, signal: float | None = None,
               norm_k=1.0, norm_v=1.0):
    """Excess risk of erf attention at any overlaps and norms: ``gamma^2 - 2 V Q1 + V^2 Q2`` at ``lam K``
    (``docs/closed-forms.md`` §4).

    The overlaps are those of the unit vectors ``k/K`` and ``v/V``.
    """
    mo = erf_moments(np.asarray(lam, dtype=float) * norm_k, kappa, nu, theta, eta, rho,
                     M=signal_norm(d, signal), gamma=gamma)
    Q1 = mo.EAW
    Q2 = mo.EA2 + 2 * (L - 1) * mo.EA * mo.EB + (L - 1) * mo.EB2 + (L - 1) * (L - 2) * mo.EB**2
    V = np.asarray(norm_v, dtype=float)
    return gamma**2 - 2.0 * V * Q1 + V * V * Q2


def oracle_excess(lam, *, d: int, L: int, gamma: float, signal: float | None = None):
    """Oracle ``k = k*``, ``v = v*``: ``gamma^2 [1 - 2 erf(lam M/sqrt(1+2 lam^2 gamma^2)) + zeta(lam M, lam gamma)] + (L-1) zeta(0, lam)``."""
    lam = np.asarray(lam, dtype=float)
    M = signal_norm(d, signal)
    u = lam * M / np.sqrt(1.0 + 2.0 * lam**2 * gamma**2)
    return gamma**2 * (1.0 - 2.0 * erf(u) + zeta(lam * M, lam * gamma)) + (L - 1) * zeta(0.0, lam)


def linear_excess(L: int, gamma: float):
    """Best affine predictor: ``gamma^2 (L-1)/(gamma^2 + L - 1)``, independent of ``d``
    (``docs/closed-forms.md`` §5)."""
    return gamma**2 * (L - 1) / (gamma**2 + L - 1)


def linear_coefficient(L: int, gamma: float) -> float:
    """Best linear coefficient: ``beta_l = gamma^2/(gamma^2 + L - 1) v*`` for every position
    (``docs/task-and-predictors.md`` §2)."""
    return gamma**2 / (gamma**2 + L - 1)


def bilinear_coefficient(d: int, L: int, gamma: float, signal: float | None = None) -> float:
    """Best ``c`` of ``c sum_l <X_l,k*><X_l,v*>``: ``M gamma^2 / ((M^2+gamma^2) gamma^2 + L - 1)``
    (``docs/task-and-predictors.md`` §2)."""
    M = signal_norm(d, signal)
    return M * gamma**2 / ((M**2 + gamma**2) * gamma**2 + L - 1)


def bilinear_excess(d: int, L: int, gamma: float, signal: float | None = None):
    """Best bilinear predictor: ``gamma^2 (gamma^4 + L - 1)/(gamma^2 M^2 + gamma^4 + L - 1)``
    (``docs/closed-forms.md`` §5)."""
    M = signal_norm(d, signal)
    return gamma**2 * (gamma**4 + L - 1) / (gamma**2 * M**2 + gamma**4 + L - 1)


def best_oracle_lam(*, d: int, L: int, gamma: float, signal: float | None = None,
                    bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """``(lam, excess)`` minimising ``oracle_excess`` over ``lam``: the best of a log grid, then a golden-section
    search on ``log lam`` between its neighbours (to 1e-10; no scipy.optimize, whose import costs a short job
    more than the search).

    The default search interval is ``[min(1e-4, 0.01/sqrt(d)), 1e3]``: the best ``lam`` shrinks like
    ``sqrt(ln d / d)`` (``docs/closed-forms.md`` §6), so a fixed lower bound would cut it off at ``d`` in the
    billions."""
    bounds = bounds or (min(1e-4, 0.01 / math.sqrt(d)), 1e3)
    grid = np.geomspace(*bounds, 400)
    values = oracle_excess(grid, d=d, L=L, gamma=gamma, signal=signal)
    i = int(np.argmin(values))
    a, b = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])

    def f(x: float) -> float:
        return float(oracle_excess(math.exp(x), d=d, L=L, gamma=gamma, signal=signal))

    r = (math.sqrt(5.0) - 1.0) / 2.0
    c, e = b - r * (b - a), a + r * (b - a)
    fc, fe = f(c), f(e)
    while b - a > 1e-10:
        if fc < fe:
            b, e, fe = e, c, fc
            c = b - r * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, e, fe
            e = a + r * (b - a)
            fe = f(e)
    x = (a + b) / 2.0
    return math.exp(x), max(f(x), 0.0)  # L=1: zero up to rounding


def bhattacharyya_distance(d: int, gamma: float, signal: float | None = None) -> float:
    """``D_B = M^2/(4(1+gamma^2)) + (d/2) ln((1+gamma^2)/(2 gamma))`` between informative and noise tokens
    (``docs/bayes.md`` §5)."""
    M = signal_norm(d, signal)
    return M**2 / (4.0 * (1.0 + gamma**2)) + 0.5 * d * math.log((1.0 + gamma**2) / (2.0 * gamma))


def bayes_excess_bound(d: int, L: int, gamma: float, signal: float | None = None) -> float:
    """Upper bound on the Bayes excess: ``(L-1) (2 gamma^2/(1+gamma^2)) exp(-2 D_B)`` (``docs/bayes.md`` §5)."""
    return 10.0 ** bayes_excess_bound_log10(d, L, gamma, signal)


def bayes_excess_bound_log10(d: int, L: int, gamma: float, signal: float | None = None) -> float:
    """``log10`` of :func:`bayes_excess_bound`, finite where the bound itself underflows (large ``d``)."""
    if L == 1:
        return -math.inf
    log_b = math.log((L - 1) * 2.0 * gamma**2 / (1.0 + gamma**2)) - 2.0 * bhattacharyya_distance(d, gamma, signal)
    return log_b / math.log(10.0)


def libm_exp(x):
    """``exp`` elementwise by the C library's ``exp`` (as ``math.exp``), the one the compiled PGD kernel calls.

    numpy's own vectorised ``exp`` differs from it in the last bit for a few percent of arguments (on AVX-512
    machines), and PGD at the paper's decreasing-``lam`` schedule amplifies one bit to 0.1 within a few hundred
    steps (measured; see ``tests/test_pgd.py``): only bitwise-equal implementations give the same iterates there.
    """
    x = np.asarray(x, dtype=float)
    return np.fromiter(map(math.exp, x.ravel().tolist()), float, x.size).reshape(x.shape)


class ErfRiskGradient:
    """Gradient of the unit-norm erf-attention excess in the five overlaps, at fixed ``lam``
    (``docs/closed-forms.md`` §7).

    Written for speed inside population PGD: scalar constants are computed once and the overlaps are arrays over
    repeats. Every term is elementary but one: the theta-derivative of ``E[A^2]`` needs ``zeta`` itself (one
    Owen's T per repeat). It is the reference of the compiled PGD kernel (``pgd_step.c``), which repeats it
    operation by operation; so that the two agree bitwise, ``exp`` is the C library's (:func:`libm_exp`) and squares
    are products.
    """

    def __init__(self, lam: float, *, M: float, L: int, gamma: float):
        s = lam * gamma
        self.lam, self.M, self.L, self.gamma, self.s = lam, M, L, gamma, s
        self.p = math.sqrt(1.0 + 2.0 * s * s)
        self.q = math.sqrt(1.0 + 4.0 * s * s)
        self.beta1, self.beta2, _ = noise_token_moments(lam)  # E[B] = beta1 rho, E[B^2] = zeta(0, lam) + beta2 rho^2

    def __call__(self, kappa, nu, theta, eta, rho):
        """Partial derivatives ``(R_kappa, R_nu, R_theta, R_eta, R_rho)`` of the excess."""
        lam, M, L, g, s, p, q = self.lam, self.M, self.L, self.gamma, self.s, self.p, self.q
        c = lam * M * kappa
        u = c / p
        e0, e1, e2, e3 = erf_derivatives(u, 3, exp=libm_exp)
        f0, f1, f2 = erf_derivatives(u / q, 2, exp=libm_exp)
        # t-derivatives of zeta(t, s) at t = c, in the compiled step's order (zeta_derivatives divides t by pq at once)
        z0 = 1.0 - 8.0 * owens_t(math.sqrt(2.0) * c / p, 1.0 / q)
        z1 = (2.0 / p) * f0 * e1
        z2 = (2.0 / p) * (f1 * e1 / (p * q) + f0 * e2 / p)
        z3 = (2.0 / p) * (f2 * e1 / ((p * q) * (p * q)) + 2.0 * f1 * e2 / (p * p * q) + f0 * e3 / (p * p))
        gs = g * s
        m = M * theta
        dc = lam * M  # dc/dkappa
        # E[A] = m e0 + gs rho e1/p
        EA = m * e0 + gs * rho * e1 / p
        EA_k = dc / p * (m * e1 + gs * rho * e2 / p)
        EA_t = M * e0
        EA_r = gs * e1 / p
        # E[AW] = g^2 nu e0 + gs eta (m e1/p + gs rho e2/p^2)
        EAW_k = dc / p * (g * g * nu * e1 + gs * eta * (m * e2 / p + gs * rho * e3 / (p * p)))
        EAW_n = g * g * e0
        EAW_t = gs * eta * M * e1 / p
        EAW_e = gs * (m * e1 / p + gs * rho * e2 / (p * p))
        EAW_r = gs * eta * gs * e2 / (p * p)
        # E[A^2] = (m^2 + g^2) z0 + 2 m gs rho z1 + (gs rho)^2 z2, each z_j a function of c = lam M kappa
        EA2_k = dc * ((m * m + g * g) * z1 + 2.0 * m * gs * rho * z2 + (gs * rho) * (gs * rho) * z3)
        EA2_t = 2.0 * M * m * z0 + 2.0 * M * gs * rho * z1
        EA2_r = 2.0 * m * gs * z1 + 2.0 * gs * gs * rho * z2
        # noise-token terms: 2(L-1) E[A] E[B] + (L-1) E[B^2] + (L-1)(L-2) E[B]^2, E[B] = beta1 rho
        cross = 2.0 * (L - 1) * self.beta1
        R_k = EA2_k - 2.0 * EAW_k + cross * rho * EA_k
        R_n = -2.0 * EAW_n
        R_t = EA2_t - 2.0 * EAW_t + cross * rho * EA_t
        R_e = -2.0 * EAW_e
        R_r = (EA2_r - 2.0 * EAW_r + cross * (EA + rho * EA_r)
               + 2.0 * (L - 1) * rho * (self.beta2 + (L - 2) * (self.beta1 * self.beta1)))
        return R_k, R_n, R_t, R_e, R_r


class ErfRiskJet:
    """Value, gradient and Hessian of the unit-norm erf-attention excess ``R(kappa, nu, theta, eta, rho)`` in the five
    overlaps, at fixed ``lam`` (``docs/closed-forms.md`` §3-4; the second partials ``H_k``, ``H_v``, ``H_kv`` of
    ``docs/landscape.md`` §1).

    Expanding the moments, ``R`` is a sum of monomials in ``(nu, theta, eta, rho)`` times functions of
    ``kappa`` alone (``c = lam M kappa``, ``u = c/p``, ``gs = gamma^2 lam``, ``beta1 = 2 lam/sqrt(pi(1+2lam^2))``,
    ``beta2 = 8 lam^2/(pi(1+2lam^2) sqrt(1+4lam^2))``, ``Z_j = d^j zeta(c, lam gamma)/dc^j``, ``E_j = erf^(j)(u)``):

    ``R = gamma^2 + (L-1) zeta(0, lam) + (M^2 theta^2 + gamma^2) Z_0 + 2 M gs theta rho Z_1 + gs^2 rho^2 Z_2
    - 2 gamma^2 nu E_0 - 2 (gs M/p) theta eta E_1 - 2 (gs^2/p^2) eta rho E_2
    + 2 (L-1) beta1 (M theta rho E_0 + (gs/p) rho^2 E_1) + (L-1) (beta2 + (L-2) beta1^2) rho^2``,

    so every partial derivative is exact: ``d E_j/d kappa = (lam M/p) E_(j+1)``, ``d Z_j/d kappa = lam M Z_(j+1)``.
    Broadcasts over its array arguments; returns arrays (..., ), (..., 5), (..., 5, 5) in the order of the overlaps.
    """

    def __init__(self, lam: float, *, M: float, L: int, gamma: float):
        s = lam * gamma
        self.lam, self.M, self.L, self.gamma = float(lam), float(M), int(L), float(gamma)
        self.p = p = math.sqrt(1.0 + 2.0 * s * s)
        gs = gamma * s
        beta1, beta2, zeta0 = noise_token_moments(lam)
        self.constant = gamma**2 + (L - 1) * zeta0
        # (coefficient, exponents of (nu, theta, eta, rho), function of kappa: ("Z"|"E"|"1", order))
        self.terms = [
            (M * M, (0, 2, 0, 0), ("Z", 0)), (gamma**2, (0, 0, 0, 0), ("Z", 0)),
            (2.0 * M * gs, (0, 1, 0, 1), ("Z", 1)), (gs * gs, (0, 0, 0, 2), ("Z", 2)),
            (-2.0 * gamma**2, (1, 0, 0, 0), ("E", 0)), (-2.0 * gs * M / p, (0, 1, 1, 0), ("E", 1)),
            (-2.0 * gs * gs / p**2, (0, 0, 1, 1), ("E", 2)),
            (2.0 * (L - 1) * beta1 * M, (0, 1, 0, 1), ("E", 0)), (2.0 * (L - 1) * beta1 * gs / p, (0, 0, 0, 2), ("E", 1)),
            ((L - 1) * (beta2 + (L - 2) * beta1**2), (0, 0, 0, 2), ("1", 0)),
        ]

    def _kappa_functions(self, kappa: np.ndarray) -> dict:
        """``{("Z", j): [F, F', F'']}`` of ``kappa`` for every function the terms use."""
        lam, M, p, s = self.lam, self.M, self.p, self.lam * self.gamma
        c = lam * M * kappa
        E = erf_derivatives(c / p, 4)
        Z = [zeta(c, s), *zeta_derivatives(c, s, 4)]
        out = {("1", 0): [np.ones_like(kappa), np.zeros_like(kappa), np.zeros_like(kappa)]}
        for j in range(3):
            out[("E", j)] = [E[j], (lam * M / p) * E[j + 1], (lam * M / p) ** 2 * E[j + 2]]
            out[("Z", j)] = [Z[j], lam * M * Z[j + 1], (lam * M) ** 2 * Z[j + 2]]
        return out

    def __call__(self, kappa, nu, theta, eta, rho):
        """``(R, grad, hess)``: the excess, its 5 partial derivatives and its 5x5 matrix of second partials."""
        kappa, nu, theta, eta, rho = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (kappa, nu, theta, eta, rho)))
        y = (nu, theta, eta, rho)  # the monomials' variables, overlap indices 1..4
        F = self._kappa_functions(kappa)
        value = np.full(kappa.shape, self.constant)
        grad = np.zeros((*kappa.shape, 5))
        hess = np.zeros((*kappa.shape, 5, 5))
        for coef, exps, fn in self.terms:
            f0, f1, f2 = F[fn]
            m0 = coef * _monomial(y, exps)
            value = value + m0 * f0
            grad[..., 0] += m0 * f1
            hess[..., 0, 0] += m0 * f2
            for i in range(4):
                if exps[i] == 0:
                    continue
                mi = coef * _monomial(y, exps, i)
                grad[..., i + 1] += mi * f0
                hess[..., 0, i + 1] += mi * f1
                hess[..., i + 1, 0] += mi * f1
                for j in range(4):
                    if exps[j] - (i == j) > 0:
                        hess[..., i + 1, j + 1] += coef * _monomial(y, exps, i, j) * f0
        return value, grad, hess


def _monomial(y, exps, *wrt):
    """``prod y_i^e_i`` differentiated once in each variable index of ``wrt``."""
    e = list(exps)
    factor = 1.0
    for i in wrt:
        factor *= e[i]
        e[i] -= 1
    out = factor * np.ones_like(y[0])
    for yi, ei in zip(y, e):
        if ei:
            out = out * yi**ei
    return out


def oracle_asymptotic_excess(d, L: int, gamma: float):
    """Small-``lam`` asymptotics of the best oracle (``docs/closed-forms.md`` §6): ``(4(L-1)/pi)(u* + 1)/d`` with ``u* +
    ln u* =
    ln(gamma^2 d/(2(L-1)))``, i.e. ``u* = W(gamma^2 d/(2(L-1)))`` (Lambert W): ``Theta((L-1) ln d / d)``."""
    from scipy.special import lambertw

    d = np.asarray(d, dtype=float)
    u = np.real(lambertw(gamma**2 * d / (2.0 * (L - 1))))
    return 4.0 * (L - 1) / np.pi * (u + 1.0) / d
