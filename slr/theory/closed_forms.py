"""Closed forms (``docs/closed-forms.md``): zeta, the population risk of erf attention and the baselines' risks.

Everything is numpy, float64 and broadcasts over its array arguments. ``excess`` always means
``risk - eps^2 = E (f(X) - W)^2`` with ``W = <X_J0, v*>``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import erf, erfc, owens_t

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


_GL_X, _GL_W = (0.5 * (np.polynomial.legendre.leggauss(64)[0] + 1.0), 0.5 * np.polynomial.legendre.leggauss(64)[1])


def owen_tail(u, g):
    """``J(u, g) = (4/pi) int_a^1 exp(-u^2 (1+x^2))/(1+x^2) dx`` with ``a = 1/sqrt(1+4g^2)``: the variance of
    ``erf(t + g Z)`` at ``u = t/sqrt(1+2g^2)``, so that ``zeta = erf(u)^2 + J`` and ``E erfc(t+gZ)^2 = erfc(u)^2 + J``
    (docs/closed-forms.md, "Stable forms"). Nonnegative, computed with full relative precision: 64-point
    Gauss-Legendre on ``[a, x_max]``, ``x_max = min(1, sqrt(a^2 + 50/u^2))`` beyond which the integrand is below
    ``e^-50`` of its value at ``a``; the interval's length ``1 - a = 4g^2/(q(q+1))`` is taken without cancellation."""
    u, g = np.broadcast_arrays(np.abs(np.asarray(u, dtype=float)), np.asarray(g, dtype=float))
    q = np.sqrt(1.0 + 4.0 * g * g)
    a = 1.0 / q
    full = 4.0 * g * g / (q * (q + 1.0))  # 1 - a
    u2 = u * u
    with np.errstate(divide="ignore", invalid="ignore"):
        cut = (50.0 / u2) / (np.sqrt(a * a + 50.0 / u2) + a)  # sqrt(a^2 + 50/u^2) - a
    width = np.where(np.isfinite(cut) & (cut < full), cut, full)
    w = width[..., None] * _GL_X  # x - a at the nodes, (..., 64)
    x = a[..., None] + w
    f = np.exp(-u2[..., None] * w * (2.0 * a[..., None] + w)) / (1.0 + x * x)
    return 4.0 / np.pi * np.exp(-u2 * (1.0 + a * a)) * width * (f * _GL_W).sum(-1)


def zeta(t, g):
    """``zeta(t, g) = E erf(t + g Z)^2 = 1 - 8 T(sqrt2 t/p, 1/q)``, ``p = sqrt(1+2g^2)``, ``q = sqrt(1+4g^2)``
    (``docs/closed-forms.md`` §2), evaluated as ``erf(t/p)^2 + J(t/p, g)`` (:func:`owen_tail`, §8), which keeps its
    relative precision where ``1 - 8T`` cancels (small ``t`` and ``g``)."""
    t, g = np.asarray(t, dtype=float), np.asarray(g, dtype=float)
    u = t / np.sqrt(1.0 + 2.0 * g * g)
    return erf(u) ** 2 + owen_tail(u, g)


def erfc_square_mean(t, g):
    """``E erfc(t + g Z)^2 = erfc(u)^2 + J(u, g)``, ``u = t/sqrt(1+2g^2)`` (= ``1 - 2 erf(u) + zeta(t, g)`` without the
    cancellation of that form at large ``t``)."""
    t, g = np.asarray(t, dtype=float), np.asarray(g, dtype=float)
    u = t / np.sqrt(1.0 + 2.0 * g * g)
    return erfc(u) ** 2 + owen_tail(u, g)


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
               norm_k=1.0, norm_v=1.0, s: int = 1):
    """Excess risk of erf attention at any overlaps and norms: ``s gamma^2 - 2 V Q1 + V^2 Q2`` at ``lam K``
    (``docs/closed-forms.md`` §4).

    The overlaps are those of the unit vectors ``k/K`` and ``v/V``. Evaluated as a sum of nonnegative parts,
    ``Var(A - W) + (L-1) Var(B) + (E A + (L-1) E B)^2`` (:func:`_stable_excess`), so that it keeps its relative precision
    where the excess is many orders below ``gamma^2`` (at ``d`` up to 1e12 and ``lam`` down to 1e-7) and is never negative.
    With ``s > 1`` informative tokens: ``Q1 = s E[AW]``, ``Q2 = s E[A^2] + s(s-1) E[A]^2 + 2 s (L-s) E[A] E[B]
    + (L-s) E[B^2] + (L-s)(L-s-1) E[B]^2`` from the moments (``docs/variant-several-tokens.md``).
    """
    if s > 1:  # several informative tokens (docs/variant-several-tokens.md), from the moments
        mo = erf_moments(np.asarray(lam, dtype=float) * norm_k, kappa, nu, theta, eta, rho,
                         M=signal_norm(d, signal), gamma=gamma)
        n = L - s  # noise tokens
        Q1 = s * mo.EAW
        Q2 = s * mo.EA2 + s * (s - 1) * mo.EA**2 + 2 * s * n * mo.EA * mo.EB + n * mo.EB2 + n * (n - 1) * mo.EB**2
        V = np.asarray(norm_v, dtype=float)
        return s * gamma**2 - 2.0 * V * Q1 + V * V * Q2
    return _stable_excess(np.asarray(lam, dtype=float) * norm_k, kappa, nu, theta, eta, rho, M=signal_norm(d, signal),
                          L=L, gamma=gamma, V=norm_v)


_HERMITE_TERMS = 60


def _hermite_coefficients(u, r, n: int):
    """``alpha_j = r^j erf^(j)(u)/sqrt(j!)`` for ``j = 1..n`` (..., n): the coefficients of ``erf(c + s g)`` on the
    normalised Hermite polynomials of ``g`` (``r = s/p``, ``u = c/p``), from the Hermite recurrence."""
    u, r = np.broadcast_arrays(np.asarray(u, dtype=float), np.asarray(r, dtype=float))
    out = np.empty((*u.shape, n))
    scale = TWO_OVER_SQRT_PI * np.exp(-u * u)
    phi_prev, phi = np.zeros_like(u), r  # phi_j = r^j H_(j-1)(u)/sqrt(j!), phi_1 = r
    for j in range(1, n + 1):
        out[..., j - 1] = (-1.0) ** (j - 1) * scale * phi
        phi_prev, phi = phi, r / math.sqrt(j + 1) * (2.0 * u * phi - 2.0 * (j - 1) * r * phi_prev / math.sqrt(j))
    return out


def _stable_excess(lam, kappa, nu, theta, eta, rho, *, M: float, L: int, gamma: float, V=1.0):
    """``E (V T - W)^2`` of erf attention with unit ``k``, ``v`` at overlaps ``(kappa, nu, theta, eta, rho)``, as
    ``Var(h(g)) + gamma^2 E Q(V e(g)) + (L-1) V^2 Var(B) + V^2 (E A + (L-1) E B)^2`` (docs/closed-forms.md, "Stable forms"):
    ``g = <G, k>`` the informative token's noise along ``k``, ``e(g) = erf(c + s g)``, ``h(g) = V e (m + gamma rho g) -
    gamma eta g`` the conditional mean of ``A - W`` and ``gamma^2 Q(V e)`` its conditional variance. ``Var h`` is the
    sum of squares of its Hermite coefficients (where ``s^2 <= 1/2``), ``Q`` a quadratic expanded around the nearest of
    ``e = 1, 0, -1`` and ``Var e = J`` (:func:`owen_tail`)."""
    lam, kappa, nu, theta, eta, rho, V = np.broadcast_arrays(
        *(np.asarray(a, dtype=float) for a in (lam, kappa, nu, theta, eta, rho, V)))
    g2 = gamma * gamma
    c, s, m = lam * M * kappa, lam * gamma, M * theta
    p = np.sqrt(1.0 + 2.0 * s * s)
    u = c / p
    E0, E1 = erf(u), TWO_OVER_SQRT_PI * np.exp(-u * u)
    J = owen_tail(u, s)
    up, dn = erfc(u), erfc(-u)  # 1 - erf(u), 1 + erf(u)
    # conditional variance: E Q(V e) = Q(V E0) + V^2 (1 - rho^2) J
    x = V * E0
    one_m_r2, one_m_e2 = (1.0 - rho) * (1.0 + rho), (1.0 - eta) * (1.0 + eta)
    d1 = (1.0 - V) + V * up  # 1 - x
    d2 = (1.0 - V) + V * dn  # 1 + x
    nubar, nuplus = 1.0 - nu, 1.0 + nu
    q_hi = (2.0 * nubar - (rho - eta) ** 2) - 2.0 * (nubar - rho * (rho - eta)) * d1 + one_m_r2 * d1 * d1
    q_lo = (2.0 * nuplus - (rho + eta) ** 2) - 2.0 * (nuplus - rho * (rho + eta)) * d2 + one_m_r2 * d2 * d2
    q_mid = one_m_e2 - 2.0 * (nu - rho * eta) * x + one_m_r2 * x * x
    Q = np.where(x >= 0.5, q_hi, np.where(x <= -0.5, q_lo, q_mid)) + V * V * one_m_r2 * J
    # Var h, h = w1 e + w2 g e + w3 g
    w1, w2, w3 = V * m, V * gamma * rho, -gamma * eta
    w2a0_w3 = np.where(E0 >= 0.5, gamma * (V * rho - eta) - w2 * up,
                       np.where(E0 <= -0.5, -gamma * (V * rho + eta) + w2 * dn, w2 * E0 + w3))  # w2 E0 + w3
    small = s * s <= 0.5
    r = np.where(small, s / p, 0.0)
    n = _HERMITE_TERMS
    alpha = _hermite_coefficients(u, r, n + 1)  # alpha_1..alpha_(n+1)
    j = np.arange(1, n + 1)
    a_prev = np.concatenate([np.zeros((*u.shape, 1)), alpha[..., :n - 1]], -1)  # alpha_(j-1), the j=1 entry apart
    coef = (w1[..., None] * alpha[..., :n] + w2[..., None] * (np.sqrt(j) * a_prev + np.sqrt(j + 1) * alpha[..., 1:n + 1]))
    coef[..., 0] += w2a0_w3
    var_h_series = (coef * coef).sum(-1)
    # large s: E h^2 - (E h)^2 from the closed-form moments
    z0 = erf(u) ** 2 + J
    z1, z2 = zeta_derivatives(c, s, 2)
    E2 = -2.0 * u * E1
    Eh = w1 * E0 + w2 * s * E1 / p
    Eh2 = (w1 * w1 * z0 + 2.0 * w1 * w2 * s * z1 + w2 * w2 * (z0 + s * s * z2)
           + 2.0 * w3 * (w1 * s * E1 / p + w2 * (E0 + s * s * E2 / (p * p))) + w3 * w3)
    var_h = np.where(small, var_h_series, Eh2 - Eh * Eh)
    # noise tokens: B = erf(lam <X,k>) <X,v>, E B = beta1 rho
    beta1 = 2.0 * lam / np.sqrt(np.pi * (1.0 + 2.0 * lam * lam))
    ql = np.sqrt(1.0 + 4.0 * lam * lam)
    zeta0 = 4.0 / np.pi * np.arctan(4.0 * lam * lam / (ql + 1.0) ** 2)  # zeta(0, lam) = J(0, lam) = (4/pi) atan((q-1)/(q+1))
    var_B = zeta0 + rho * rho * beta1 * beta1 * (2.0 - ql) / ql
    mean = V * (m * E0 + gamma * rho * s * E1 / p + (L - 1) * beta1 * rho)
    return var_h + g2 * Q + (L - 1) * V * V * var_B + mean * mean


def oracle_excess(lam, *, d: int, L: int, gamma: float, signal: float | None = None, s: int = 1):
    """Oracle ``k = k*``, ``v = v*``: ``s gamma^2 [1 - 2 erf(lam M/sqrt(1+2 lam^2 gamma^2)) + zeta(lam M, lam gamma)]
    + (L-s) zeta(0, lam)`` (``s`` informative tokens, ``docs/variant-several-tokens.md``; 1 in the paper's task),
    evaluated as ``s gamma^2 E erfc(lam M + lam gamma Z)^2 + (L-s) zeta(0, lam)`` (no cancellation at large ``d``)."""
    lam = np.asarray(lam, dtype=float)
    M = signal_norm(d, signal)
    return s * gamma**2 * erfc_square_mean(lam * M, lam * gamma) + (L - s) * zeta(0.0, lam)


def linear_excess(L: int, gamma: float, s: int = 1):
    """Best affine predictor: ``s gamma^2 (L-s)/(s gamma^2 + L - s)``, independent of ``d``
    (``docs/closed-forms.md`` §5; ``docs/variant-several-tokens.md`` for ``s > 1``)."""
    return s * gamma**2 * (L - s) / (s * gamma**2 + L - s)


def linear_coefficient(L: int, gamma: float, s: int = 1) -> float:
    """Best linear coefficient: ``beta_l = s gamma^2/(s gamma^2 + L - s) v*`` for every position
    (``docs/task-and-predictors.md`` §2)."""
    return s * gamma**2 / (s * gamma**2 + L - s)


def bilinear_coefficient(d: int, L: int, gamma: float, signal: float | None = None, s: int = 1) -> float:
    """Best ``c`` of ``c sum_l <X_l,k*><X_l,v*>``: ``s M gamma^2 / (s (M^2+gamma^2) gamma^2 + L - s)``
    (``docs/task-and-predictors.md`` §2)."""
    M = signal_norm(d, signal)
    return s * M * gamma**2 / (s * (M**2 + gamma**2) * gamma**2 + L - s)


def bilinear_excess(d: int, L: int, gamma: float, signal: float | None = None, s: int = 1):
    """Best bilinear predictor: ``s gamma^2 (s gamma^4 + L - s)/(s gamma^2 M^2 + s gamma^4 + L - s)``
    (``docs/closed-forms.md`` §5)."""
    M = signal_norm(d, signal)
    return s * gamma**2 * (s * gamma**4 + L - s) / (s * gamma**2 * M**2 + s * gamma**4 + L - s)


def best_oracle_lam(*, d: int, L: int, gamma: float, signal: float | None = None,
                    bounds: tuple[float, float] | None = None, s: int = 1) -> tuple[float, float]:
    """``(lam, excess)`` minimising ``oracle_excess`` over ``lam``: the best of a log grid, then a golden-section
    search on ``log lam`` between its neighbours (to 1e-10; no scipy.optimize, whose import costs a short job
    more than the search).

    The default search interval is ``[min(1e-4, 0.01/sqrt(d)), 1e3]``: the best ``lam`` shrinks like
    ``sqrt(ln d / d)`` (``docs/closed-forms.md`` §6), so a fixed lower bound would cut it off at ``d`` in the
    billions."""
    bounds = bounds or (min(1e-4, 0.01 / math.sqrt(d)), 1e3)
    grid = np.geomspace(*bounds, 400)
    values = oracle_excess(grid, d=d, L=L, gamma=gamma, signal=signal, s=s)
    i = int(np.argmin(values))
    a, b = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])

    def f(x: float) -> float:
        return float(oracle_excess(math.exp(x), d=d, L=L, gamma=gamma, signal=signal, s=s))

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

    def __init__(self, lam: float, *, M: float, L: int, gamma: float, n_informative: int = 1):
        s = lam * gamma
        self.lam, self.M, self.L, self.gamma, self.s = lam, M, L, gamma, s
        self.n_informative = int(n_informative)  # several informative tokens: docs/variant-several-tokens.md
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
        if self.n_informative > 1:
            return self._several(EA, EA_k, EA_t, EA_r, EA2_k, EA2_t, EA2_r, EAW_k, EAW_n, EAW_t, EAW_e, EAW_r, rho)
        # noise-token terms: 2(L-1) E[A] E[B] + (L-1) E[B^2] + (L-1)(L-2) E[B]^2, E[B] = beta1 rho
        cross = 2.0 * (L - 1) * self.beta1
        R_k = EA2_k - 2.0 * EAW_k + cross * rho * EA_k
        R_n = -2.0 * EAW_n
        R_t = EA2_t - 2.0 * EAW_t + cross * rho * EA_t
        R_e = -2.0 * EAW_e
        R_r = (EA2_r - 2.0 * EAW_r + cross * (EA + rho * EA_r)
               + 2.0 * (L - 1) * rho * (self.beta2 + (L - 2) * (self.beta1 * self.beta1)))
        return R_k, R_n, R_t, R_e, R_r

    def _several(self, EA, EA_k, EA_t, EA_r, EA2_k, EA2_t, EA2_r, EAW_k, EAW_n, EAW_t, EAW_e, EAW_r, rho):
        """The partials of ``s gamma^2 - 2 s E[AW] + s E[A^2] + s(s-1) E[A]^2 + 2 s n E[A] E[B] + n E[B^2]
        + n(n-1) E[B]^2`` with ``n = L - s`` noise tokens (``s`` informative tokens, :func:`erf_excess`)."""
        s, n, b1, b2 = self.n_informative, self.L - self.n_informative, self.beta1, self.beta2
        own = 2.0 * s * (s - 1) * EA  # d/dx of s(s-1) E[A]^2, per unit dE[A]/dx
        cross = 2.0 * s * n * b1  # d/dx of 2 s n E[A] beta1 rho, per unit rho dE[A]/dx
        R_k = s * (EA2_k - 2.0 * EAW_k) + (own + cross * rho) * EA_k
        R_n = -2.0 * s * EAW_n
        R_t = s * (EA2_t - 2.0 * EAW_t) + (own + cross * rho) * EA_t
        R_e = -2.0 * s * EAW_e
        R_r = (s * (EA2_r - 2.0 * EAW_r) + (own + cross * rho) * EA_r + cross * EA
               + 2.0 * n * rho * (b2 + (n - 1) * b1 * b1))
        return R_k, R_n, R_t, R_e, R_r


def erfc_square_mean_derivative(n: int, t, g):
    """``d^n/dt^n E erfc(t + gZ)^2``: :func:`erfc_square_mean` for ``n = 0``; for ``n >= 1`` that of ``zeta`` minus
    ``2 erf^(n)(t/p)/p^n``, i.e. the Leibniz sum of :func:`zeta_derivatives` with ``erf(t/(pq))`` replaced by
    ``-erfc(t/(pq))`` (no cancellation at large ``t``; ``docs/closed-forms.md`` §8)."""
    if n == 0:
        return erfc_square_mean(t, g)
    t, g = np.asarray(t, dtype=float), np.asarray(g, dtype=float)
    p, q = np.sqrt(1.0 + 2.0 * g * g), np.sqrt(1.0 + 4.0 * g * g)
    a = t / (p * q)
    f, e = erf_derivatives(a, n - 1), erf_derivatives(t / p, n)
    return 2.0 / p * sum(math.comb(n - 1, j) * (-erfc(a) if j == 0 else f[j]) * e[n - j]
                         / ((p * q) ** j * p ** (n - 1 - j)) for j in range(n))


class ErfRiskJet:
    """Value, gradient and Hessian of the unit-norm erf-attention excess ``R(kappa, nu, theta, eta, rho)`` in the five
    overlaps, at fixed ``lam`` (``docs/closed-forms.md`` §3-4; the second partials ``H_k``, ``H_v``, ``H_kv`` of
    ``docs/landscape.md`` §1).

    Expanding the moments, ``R`` is a sum of monomials in ``(nu, theta, eta, rho)`` times functions of
    ``kappa`` alone (``c = lam M kappa``, ``u = c/p``, ``gs = gamma^2 lam``, ``beta1 = 2 lam/sqrt(pi(1+2lam^2))``,
    ``beta2 = 8 lam^2/(pi(1+2lam^2) sqrt(1+4lam^2))``, ``Z_j = d^j zeta(c, lam gamma)/dc^j``, ``E_j = erf^(j)(u)``):

    ``R = (L-1) zeta(0, lam) + gamma^2 Y_0 + 2 gamma^2 (1 - nu) E_0 + M^2 theta^2 Z_0 + 2 M gs theta rho Z_1 + gs^2 rho^2 Z_2
    - 2 (gs M/p) theta eta E_1 - 2 (gs^2/p^2) eta rho E_2
    + 2 (L-1) beta1 (M theta rho E_0 + (gs/p) rho^2 E_1) + (L-1) (beta2 + (L-2) beta1^2) rho^2``,

    with ``Y_j = d^j E erfc(c + lam gamma Z)^2/dc^j`` (``gamma^2 (1 + Z_0 - 2 nu E_0)`` regrouped so that nothing of
    size ``gamma^2`` cancels near the oracle at large ``d``), so every partial derivative is exact: ``d E_j/d kappa =
    (lam M/p) E_(j+1)``, ``d Z_j/d kappa = lam M Z_(j+1)``. The monomials are in ``(1 - nu, theta, eta, rho)``. The value
    is :func:`erf_excess`'s stable sum of nonnegative parts. Broadcasts over its array arguments; returns arrays
    (..., ), (..., 5), (..., 5, 5) in the order of the overlaps.
    """

    def __init__(self, lam: float, *, M: float, L: int, gamma: float):
        s = lam * gamma
        self.lam, self.M, self.L, self.gamma = float(lam), float(M), int(L), float(gamma)
        self.p = p = math.sqrt(1.0 + 2.0 * s * s)
        gs = gamma * s
        beta1, beta2, _ = noise_token_moments(lam)
        # (coefficient, exponents of (1 - nu, theta, eta, rho), function of kappa: ("Y"|"Z"|"E"|"1", order))
        self.terms = [
            (gamma**2, (0, 0, 0, 0), ("Y", 0)), (2.0 * gamma**2, (1, 0, 0, 0), ("E", 0)), (M * M, (0, 2, 0, 0), ("Z", 0)),
            (2.0 * M * gs, (0, 1, 0, 1), ("Z", 1)), (gs * gs, (0, 0, 0, 2), ("Z", 2)),
            (-2.0 * gs * M / p, (0, 1, 1, 0), ("E", 1)),
            (-2.0 * gs * gs / p**2, (0, 0, 1, 1), ("E", 2)),
            (2.0 * (L - 1) * beta1 * M, (0, 1, 0, 1), ("E", 0)), (2.0 * (L - 1) * beta1 * gs / p, (0, 0, 0, 2), ("E", 1)),
            ((L - 1) * (beta2 + (L - 2) * beta1**2), (0, 0, 0, 2), ("1", 0)),
        ]

    def _kappa_functions(self, kappa: np.ndarray, order: int = 2) -> dict:
        """``{("Z", j): [F, F', ...]}`` (derivatives up to ``order``, 1 or 2) of ``kappa`` for every function the terms
        use: the derivatives of ``erf`` at ``u = c/p`` and ``a = c/(pq)`` from one Hermite recurrence each, ``Z_n`` and
        ``Y_n`` by the Leibniz sums of :func:`zeta_derivatives` and :func:`erfc_square_mean_derivative` on them (one
        Owen's-T tail for ``Z_0``)."""
        lam, M, p, s = self.lam, self.M, self.p, self.lam * self.gamma
        q = math.sqrt(1.0 + 4.0 * s * s)
        c = lam * M * kappa
        u, a = c / p, c / (p * q)
        eu, ea = erf_derivatives(u, 3 + order), erf_derivatives(a, 2 + order)
        ea0_c = -erfc(a)

        def leibniz(n: int, first) -> np.ndarray:
            return 2.0 / p * sum(math.comb(n - 1, j) * (first if j == 0 else ea[j]) * eu[n - j]
                                 / ((p * q) ** j * p ** (n - 1 - j)) for j in range(n))

        Z = [eu[0] ** 2 + owen_tail(u, s)] + [leibniz(n, ea[0]) for n in range(1, 3 + order)]
        Y = [np.zeros_like(kappa)] + [leibniz(n, ea0_c) for n in range(1, 1 + order)]  # Y_0 multiplies no overlap
        out = {("1", 0): [np.ones_like(kappa)] + [np.zeros_like(kappa)] * order,
               ("Y", 0): [Y[i] * (lam * M) ** i for i in range(order + 1)]}
        for j in range(3):
            out[("E", j)] = [eu[j + i] * (lam * M / p) ** i for i in range(order + 1)]
            out[("Z", j)] = [Z[j + i] * (lam * M) ** i for i in range(order + 1)]
        return out

    def __call__(self, kappa, nu, theta, eta, rho):
        """``(R, grad, hess)``: the excess, its 5 partial derivatives and its 5x5 matrix of second partials."""
        grad, hess = self.derivatives(kappa, nu, theta, eta, rho)
        value = _stable_excess(self.lam, kappa, nu, theta, eta, rho, M=self.M, L=self.L, gamma=self.gamma)
        return value, grad, hess

    def derivatives(self, kappa, nu, theta, eta, rho, hessian: bool = True):
        """``(grad, hess)`` without the value (what a gradient flow needs; ``hess`` None unless ``hessian``). ``R``
        grouped by monomial: ``K + N nbar + C theta^2 + A theta rho + B rho^2 + D theta eta + E eta rho``
        (``nbar = 1 - nu``), each capital a function of ``kappa`` from :attr:`terms`; the derivatives are written out
        from that form. The functions of ``kappa`` are evaluated on ``kappa`` as given, before it is broadcast against
        the other overlaps (several points that share ``kappa`` cost one evaluation)."""
        F = self._kappa_functions(np.asarray(kappa, dtype=float), 2 if hessian else 1)
        kappa, nu, theta, eta, rho = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (kappa, nu, theta, eta, rho)))
        groups = {}
        for coef, exps, fn in self.terms:  # sum the terms' functions of kappa by monomial
            f = [coef * x for x in F[fn]]
            groups[exps] = f if exps not in groups else [g + x for g, x in zip(groups[exps], f)]
        zero = [np.zeros_like(kappa)] * 3
        K, N, C, A, B, D, E = (groups.get(e, zero) for e in [(0, 0, 0, 0), (1, 0, 0, 0), (0, 2, 0, 0), (0, 1, 0, 1),
                                                             (0, 0, 0, 2), (0, 1, 1, 0), (0, 0, 1, 1)])
        nbar = 1.0 - nu
        th, et, rh = theta, eta, rho

        def poly(i: int) -> np.ndarray:  # the kappa-derivative of order i of the whole sum
            return (K[i] + N[i] * nbar + C[i] * th * th + A[i] * th * rh + B[i] * rh * rh + D[i] * th * et
                    + E[i] * et * rh)

        grad = np.stack(np.broadcast_arrays(poly(1), -N[0], 2.0 * C[0] * th + A[0] * rh + D[0] * et,
                                            D[0] * th + E[0] * rh, A[0] * th + 2.0 * B[0] * rh + E[0] * et), -1)
        if not hessian:
            return grad, None
        hess = np.zeros((*kappa.shape, 5, 5))
        hess[..., 0, 0] = poly(2)
        off = [-N[1], 2.0 * C[1] * th + A[1] * rh + D[1] * et, D[1] * th + E[1] * rh, A[1] * th + 2.0 * B[1] * rh + E[1] * et]
        for i, h in enumerate(off, start=1):
            hess[..., 0, i] = hess[..., i, 0] = h
        hess[..., 2, 2], hess[..., 4, 4] = 2.0 * C[0], 2.0 * B[0]
        hess[..., 2, 3] = hess[..., 3, 2] = D[0]
        hess[..., 2, 4] = hess[..., 4, 2] = A[0]
        hess[..., 3, 4] = hess[..., 4, 3] = E[0]
        return grad, hess


def oracle_asymptotic_excess(d, L: int, gamma: float):
    """Small-``lam`` asymptotics of the best oracle (``docs/closed-forms.md`` §6): ``(4(L-1)/pi)(u* + 1)/d`` with ``u* +
    ln u* =
    ln(gamma^2 d/(2(L-1)))``, i.e. ``u* = W(gamma^2 d/(2(L-1)))`` (Lambert W): ``Theta((L-1) ln d / d)``."""
    from scipy.special import lambertw

    d = np.asarray(d, dtype=float)
    u = np.real(lambertw(gamma**2 * d / (2.0 * (L - 1))))
    return 4.0 * (L - 1) / np.pi * (u + 1.0) / d
