"""The closed forms at any d (docs/closed-forms.md, "Stable forms"): excess, gradient and Hessian of the erf-attention
risk against an independent mpmath evaluation of the moment formulas at 40 digits (zeta by quadrature of Owen's T,
derivatives by mpmath's numerical differentiation), for d up to 1e12 and lam down to 1e-7."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from slr.theory import ErfRiskJet, erf_excess, oracle_excess, zeta

mp = pytest.importorskip("mpmath")
L, GAMMA = 10, math.sqrt(0.5)


@functools.lru_cache(maxsize=None)
def _owens_t(h, a):
    return mp.quad(lambda x: mp.exp(-h * h * (1 + x * x) / 2) / (1 + x * x), [0, a]) / (2 * mp.pi)


def _zeta(t, g):
    p, q = mp.sqrt(1 + 2 * g * g), mp.sqrt(1 + 4 * g * g)
    return 1 - 8 * _owens_t(mp.sqrt(2) * t / p, 1 / q)


def mp_excess(lam, o, M):
    """The moments of docs/closed-forms.md in plain form (no regrouping), at 40 digits."""
    lam, M, gamma = mp.mpf(lam), mp.mpf(M), mp.mpf(GAMMA)
    kappa, nu, theta, eta, rho = o
    c, s, m = lam * M * kappa, lam * gamma, M * theta
    p, q = mp.sqrt(1 + 2 * s * s), mp.sqrt(1 + 4 * s * s)
    u, a = c / p, c / (p * q)
    E0, E1 = mp.erf(u), 2 / mp.sqrt(mp.pi) * mp.exp(-u * u)
    E2 = -2 * u * E1
    f0, f1 = mp.erf(a), 2 / mp.sqrt(mp.pi) * mp.exp(-a * a)
    Z0, Z1, Z2 = _zeta(c, s), 2 / p * f0 * E1, 2 / p * (f1 * E1 / (p * q) + f0 * E2 / p)
    EA = m * E0 + gamma * rho * s * E1 / p
    EAW = gamma**2 * nu * E0 + gamma * s * eta * (m * E1 / p + gamma * rho * s * E2 / p**2)
    EA2 = (m * m + gamma**2) * Z0 + 2 * m * gamma * rho * s * Z1 + (gamma * rho * s) ** 2 * Z2
    EB = 2 * lam * rho / mp.sqrt(mp.pi * (1 + 2 * lam**2))
    EB2 = _zeta(0, lam) + 8 * lam**2 * rho**2 / (mp.pi * (1 + 2 * lam**2) * mp.sqrt(1 + 4 * lam**2))
    return EA2 - 2 * EAW + gamma**2 + 2 * (L - 1) * EA * EB + (L - 1) * EB2 + (L - 1) * (L - 2) * EB**2


def _points(d):
    """Oracle, swapped point (k = v*, v = cos k* + sin u with the best theta at small lam), a point near the oracle,
    generic points of both signs."""
    M = math.sqrt(d / 2)

    def swapped(lam):
        th = min(1.0, math.sqrt(math.pi) / (2 * lam * M))
        return (0.0, 0.0, th, 1.0, 0.0)

    return M, [(1, 1, 0, 0, 0), swapped, (0.999, 0.998, 0.01, -0.02, 0.03), (0.3, 0.2, 0.5, 0.4, -0.3),
               (-0.9, -0.95, 0.1, 0.05, 0.02), (0.05, -0.4, 0.6, -0.7, 0.2)]


LAMS = [1e-7, 1e-5, "1.4/M", 0.05, 0.3, 0.9, 2.0]


@pytest.fixture(scope="module", autouse=True)
def _precision():
    with mp.workdps(40):
        yield


@pytest.mark.parametrize("d", [10, 400, 1e6, 1e9, 1e12])
def test_excess_against_mpmath(d):
    M, points = _points(d)
    worst = 0.0
    for lam in LAMS:
        lam = 1.4 / M if lam == "1.4/M" else lam
        for o in points:
            o = o(lam) if callable(o) else o
            ref = mp_excess(lam, [mp.mpf(float(x)) for x in o], M)
            got = float(erf_excess(lam, *o, d=d, L=L, gamma=GAMMA))
            assert got >= 0.0
            worst = max(worst, abs(got - float(ref)) / float(ref))
    assert worst < 1e-8, worst
    for lam in [1e-7, 1.4 / M, 0.3]:  # the oracle's own formula
        ref = mp_excess(lam, [mp.mpf(x) for x in (1, 1, 0, 0, 0)], M)
        assert abs(float(oracle_excess(lam, d=d, L=L, gamma=GAMMA)) / float(ref) - 1) < 1e-8


def test_zeta_keeps_relative_precision_at_small_arguments():
    for t, g in [(0.0, 1e-7), (1e-6, 1e-5), (3.0, 1e-6), (8.0, 0.7), (-5.0, 0.1)]:
        ref = _zeta(mp.mpf(t), mp.mpf(g))
        assert abs(float(zeta(t, g)) / float(ref) - 1) < 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("d", [400, 1e12])
def test_gradient_and_hessian_against_mpmath(d):
    M, points = _points(d)
    for lam in [1e-7, 1.4 / M, 0.3]:
        for o in points[:4]:
            o = o(lam) if callable(o) else o
            x0 = [mp.mpf(float(v)) for v in o]
            f = lambda *x: mp_excess(lam, x, M)  # noqa: E731
            g_ref = np.array([float(mp.diff(f, x0, tuple(int(i == j) for i in range(5)))) for j in range(5)])
            H_ref = np.zeros((5, 5))
            for i in range(5):
                for j in range(i, 5):
                    n = [0] * 5
                    n[i] += 1
                    n[j] += 1
                    H_ref[i, j] = H_ref[j, i] = float(mp.diff(f, x0, tuple(n)))
            R, g, H = ErfRiskJet(lam, M=M, L=L, gamma=GAMMA)(*o)
            assert abs(R / float(f(*x0)) - 1) < 1e-8
            assert np.abs(g - g_ref).max() <= 1e-8 * np.abs(g_ref).max()
            assert np.abs(H - H_ref).max() <= 1e-8 * np.abs(H_ref).max()


def test_excess_is_never_negative():
    rng = np.random.default_rng(3)
    n = 4000
    k = rng.standard_normal((n, 4)) * rng.choice([1e-6, 1e-3, 1.0], (n, 4))
    v = rng.standard_normal((n, 4)) * rng.choice([1e-6, 1e-3, 1.0], (n, 4))
    k[:, 1] += rng.choice([0.0, 1.0], n)  # many points near k = v* (the swapped family)
    v[:, 0] += rng.choice([0.0, 1.0], n)
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    o = np.stack([k[:, 0], v[:, 1], v[:, 0], k[:, 1], (k * v).sum(1)])
    for d in [400, 1e9, 1e12]:
        for lam in [1e-7, 1e-6, 1e-3, 0.1, 1.0, 3.0]:
            assert (erf_excess(lam, *o, d=d, L=L, gamma=GAMMA) >= 0).all()
