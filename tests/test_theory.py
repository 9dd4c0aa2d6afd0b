"""Closed forms (``docs/closed-forms.md``) against independent computations: quadrature, finite differences and
Monte Carlo.

Every Monte Carlo check draws real tokens with ``Task.sample`` and evaluates the predictor from its definition
(written here, not taken from ``slr.core.predictors``); the tolerance is ``Z4 = 4`` standard errors.
"""
import functools
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import erf

from helpers import Z4, bayes_excess_importance, erf_T, informative_token, vectors_with_overlaps
from helpers import one_thread_per_module  # noqa: F401  (autouse: one torch thread in this module)
from slr import theory
from slr.core.task import Task

SQPI = math.sqrt(math.pi)


def d_erf(x):
    return 2.0 / SQPI * np.exp(-x * x)


def dd_erf(x):
    return -2.0 * x * d_erf(x)


def ddd_erf(x):
    return (4.0 * x * x - 2.0) * d_erf(x)


def gauss_expectation(f, t, g):
    """``E f(t + g Z)`` by adaptive quadrature on ``z``; the integrand's transition at ``z = -t/g`` is a breakpoint."""
    if g == 0.0:
        return float(f(t))
    phi = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    pts = [p for p in (-t / g, (-t - 3.0) / g, (-t + 3.0) / g) if -14.0 < p < 14.0]
    val, err = integrate.quad(lambda z: f(t + g * z) * phi(z), -14.0, 14.0, points=sorted(pts) or None,
                              limit=500, epsabs=1e-13, epsrel=1e-12)
    assert err < 1e-11
    return val


T_GRID = [0.0, 0.3, -0.7, 1.5, -2.5, 4.0]
G_GRID = [0.0, 1e-3, 0.1, 0.7, 2.0, 10.0]
TG = [(t, g) for t in T_GRID for g in G_GRID]


# ----- zeta and its t-derivatives ---------------------------------------------------------------------------------
@pytest.mark.parametrize("t,g", TG)
def test_zeta_and_derivatives_against_quadrature(t, g):
    """``zeta = E erf^2``, ``zeta_t = E 2 erf erf'``, ``zeta_tt = E 2(erf'^2 + erf erf'')``,
    ``zeta_ttt = E 2(3 erf' erf'' + erf erf''')``, all at ``t + g Z`` (differentiation under the integral)."""
    expected = [
        gauss_expectation(lambda x: erf(x) ** 2, t, g),
        gauss_expectation(lambda x: 2 * erf(x) * d_erf(x), t, g),
        gauss_expectation(lambda x: 2 * (d_erf(x) ** 2 + erf(x) * dd_erf(x)), t, g),
        gauss_expectation(lambda x: 2 * (3 * d_erf(x) * dd_erf(x) + erf(x) * ddd_erf(x)), t, g),
    ]
    got = [theory.zeta(t, g), theory.zeta_t(t, g), theory.zeta_tt(t, g), theory.zeta_ttt(t, g)]
    for name, e, v in zip(("zeta", "zeta_t", "zeta_tt", "zeta_ttt"), expected, got):
        assert abs(float(v) - e) < 1e-10, (name, t, g, float(v), e)


@pytest.mark.parametrize("g", [0.0, 0.05, 0.7, 3.0])
def test_zeta_derivatives_are_finite_differences(g):
    t = np.array([-3.0, -1.1, -0.2, 0.0, 0.4, 1.3, 2.7])
    h = 1e-5
    fd = lambda f: (f(t + h, g) - f(t - h, g)) / (2 * h)
    np.testing.assert_allclose(theory.zeta_t(t, g), fd(theory.zeta), atol=2e-9, rtol=0)
    np.testing.assert_allclose(theory.zeta_tt(t, g), fd(theory.zeta_t), atol=2e-9, rtol=0)
    np.testing.assert_allclose(theory.zeta_ttt(t, g), fd(theory.zeta_tt), atol=2e-9, rtol=0)


def test_zeta_special_values():
    g = np.array([1e-4, 0.1, 0.5, 1.0, 3.0, 30.0])
    arcsin_form = 2 / np.pi * np.arcsin(2 * g**2 / (1 + 2 * g**2))
    np.testing.assert_allclose(theory.zeta(0.0, g), arcsin_form, atol=1e-14, rtol=0)
    t = np.linspace(-4, 4, 33)
    np.testing.assert_allclose(theory.zeta(t, 0.0), erf(t) ** 2, atol=1e-14, rtol=0)
    # zeta is even in t and bounded by 1; it broadcasts over (t, g)
    Z = theory.zeta(t[:, None], g[None, :])
    assert Z.shape == (33, 6)
    np.testing.assert_allclose(Z, theory.zeta(-t[:, None], g[None, :]), atol=1e-15)
    assert np.all((Z >= 0) & (Z <= 1))


# ----- the gradient of the population risk in the five overlaps ---------------------------------------------------
GRAD_SETTINGS = [  # (lam, d, L, gamma, signal)
    (0.7, 12, 5, 0.5**0.5, None),
    (2.0, 400, 10, 1.3, None),
    (0.1, 50, 3, 0.8, 2.5),
]


@pytest.mark.parametrize("lam,d,L,gamma,signal", GRAD_SETTINGS)
def test_erf_risk_gradient_is_the_finite_difference_gradient(lam, d, L, gamma, signal):
    """Each partial derivative of ``ErfRiskGradient`` against a central difference of ``erf_excess`` in that overlap
    (the overlaps taken as five free variables), at random overlaps."""
    M = theory.signal_norm(d, signal)
    grad = theory.ErfRiskGradient(lam, M=M, L=L, gamma=gamma)
    rng = np.random.default_rng(11)
    X = rng.uniform(-0.9, 0.9, size=(5, 8))  # 8 random points of (kappa, nu, theta, eta, rho)

    def risk(x):
        return theory.erf_excess(lam, *x, d=d, L=L, gamma=gamma, signal=signal)

    analytic = np.array(grad(*X))  # (5, 8)
    h = 1e-6
    scale = max(1.0, float(np.abs(analytic).max()))
    for i in range(5):
        e = np.zeros((5, 1))
        e[i] = h
        fd = (risk(X + e) - risk(X - e)) / (2 * h)
        np.testing.assert_allclose(analytic[i], fd, atol=1e-7 * scale, rtol=0, err_msg=f"overlap {i}")


# ----- population risk of erf attention and of the baselines against Monte Carlo ----------------------------------
MC_SETTINGS = {  # name: (d, L, lam, gamma, signal)
    "d20-L5": (20, 5, 0.5, 0.5**0.5, None),
    "d12-L10-signal": (12, 10, 1.2, 1.5, 3.0),
}
POINTS = {  # name: (kappa, nu, theta, eta, rho, norm_k, norm_v)
    "oracle": (1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0),
    "manifold": (0.6, -0.8, 0.0, 0.0, 0.0, 1.0, 1.0),
    "generic": (0.5, 0.6, -0.3, 0.4, 0.25, 1.0, 1.0),
    "generic-norms": (-0.45, 0.7, 0.35, -0.2, -0.3, 1.7, 0.6),
    # points where the small terms weigh, so that an error in one of them shows: the rho terms of E[A] and E[B];
    # the zeta_tt term of E[A^2] (kappa = theta = 0); the erf'' term of E[AW] (m = 0, lam M kappa/p near 1/sqrt2)
    "high-rho": (0.3, 0.2, 0.5, -0.4, 0.7, 1.0, 1.0),
    "rho-A2": (0.0, 0.3, 0.0, 0.3, 0.85, 1.0, 1.0),
    "rho-AW": (0.53, 0.1, 0.0, 0.5, 0.7, 1.0, 1.0),
}
MOMENT_POINTS = ("generic", "high-rho", "rho-A2", "rho-AW")
N_MC = 200_000


@functools.lru_cache(maxsize=None)
def monte_carlo(setting):
    """One pass over ``N_MC`` samples of the setting's task (fixed seeds), shared by the tests of that setting.

    Returns ``(task, stats)``: ``stats[name] = (mean, se)`` of ``(T(X) - W)^2`` for erf attention at every point
    of ``POINTS`` (vectors built with those overlaps), the oracle ``k* , v*``, and the linear and bilinear
    predictors at their closed-form coefficients; ``stats["lsq-linear"]``, ``stats["lsq-bilinear"]`` hold
    ``(c_hat, robust se, risk(c) as a function)`` of an independent least-squares fit of ``W ~ c F(X)``.
    """
    d, L, lam, gamma, signal = MC_SETTINGS[setting]
    task = Task(d, L, gamma, signal=signal, seed=5)
    ks, vs = task.k_star, task.v_star
    preds = {p: vectors_with_overlaps(task, *POINTS[p], seed=6 + i) for i, p in enumerate(POINTS)}
    preds["oracle-kv*"] = (ks, vs)
    c_lin = gamma**2 / (gamma**2 + L - 1)  # docs/closed-forms.md#5-oracle-linear-and-bilinear, written again here
    M = theory.signal_norm(d, signal)
    c_bil = M * gamma**2 / ((M**2 + gamma**2) * gamma**2 + L - 1)
    cols = {name: [] for name in [*preds, "linear", "bilinear"]}
    moments = {p: {m: [] for m in ("EA", "EAW", "EA2", "EB", "EB2")} for p in MOMENT_POINTS}
    F_lin, F_bil, Ws = [], [], []
    g = torch.Generator().manual_seed(7)
    for _ in range(N_MC // 50_000):
        b = task.sample(50_000, g, dtype=torch.float64)
        W = informative_token(b.X, b.J0) @ vs  # W = <X_J0, v*>, from the tokens themselves
        for name, (k, v) in preds.items():
            cols[name].append((erf_T(b.X, k, v, lam) - W) ** 2)
        informative = torch.nn.functional.one_hot(b.J0, L).bool()  # (n, L)
        for p in MOMENT_POINTS:
            k, v = preds[p]
            terms = torch.erf(lam * (b.X @ k)) * (b.X @ v)  # (n, L): each token's term of T
            A = terms[informative]  # (n,)
            B = terms[~informative].reshape(-1, L - 1)  # (n, L-1), iid noise tokens
            for m, x in (("EA", A), ("EAW", A * W), ("EA2", A * A), ("EB", B.mean(-1)), ("EB2", (B * B).mean(-1))):
                moments[p][m].append(x)
        pk, pv = b.X @ ks, b.X @ vs  # (n, L)
        F_lin.append(pv.sum(-1))
        F_bil.append((pk * pv).sum(-1))
        cols["linear"].append((c_lin * F_lin[-1] - W) ** 2)
        cols["bilinear"].append((c_bil * F_bil[-1] - W) ** 2)
        Ws.append(W)
    stats = {}
    for name, parts in cols.items():
        x = torch.cat(parts).numpy()
        stats[name] = (float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))))
    for p in MOMENT_POINTS:
        for m, parts in moments[p].items():
            x = torch.cat(parts).numpy()
            stats[(p, m)] = (float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))))
    Wv = torch.cat(Ws).numpy()
    for name, F in (("lsq-linear", F_lin), ("lsq-bilinear", F_bil)):
        Fv = torch.cat(F).numpy()
        sff = (Fv * Fv).sum()
        c_hat = (Fv * Wv).sum() / sff
        se = math.sqrt((((Wv - c_hat * Fv) * Fv) ** 2).sum()) / sff
        stats[name] = (float(c_hat), se, lambda c, Fv=Fv: float(((Wv - c * Fv) ** 2).mean()))
    return task, stats


@pytest.mark.parametrize("point", list(POINTS))
@pytest.mark.parametrize("setting", list(MC_SETTINGS))
def test_erf_excess_against_monte_carlo(setting, point):
    """``erf_excess`` at the oracle, on the manifold, at a generic point and at non-unit norms, against
    ``mean (sum_l erf(lam <X_l,k>) <X_l,v> - W)^2`` on real tokens."""
    d, L, lam, gamma, signal = MC_SETTINGS[setting]
    kappa, nu, theta, eta, rho, nk, nv = POINTS[point]
    _, stats = monte_carlo(setting)
    mc, se = stats[point]
    closed = float(theory.erf_excess(lam, kappa, nu, theta, eta, rho, d=d, L=L, gamma=gamma, signal=signal,
                                     norm_k=nk, norm_v=nv))
    assert abs(mc - closed) < Z4 * se, (mc, se, closed)
    assert se < 0.02 * closed  # the check is tight relative to the quantity


@pytest.mark.parametrize("point", MOMENT_POINTS)
@pytest.mark.parametrize("setting", list(MC_SETTINGS))
def test_erf_moments_against_monte_carlo(setting, point):
    """Each moment of ``docs/closed-forms.md#3-the-five-moments-of-erf-attention`` on its own: ``A`` the informative
    token's term ``erf(lam <X_J0,k>) <X_J0,v>``, ``B`` a noise token's (averaged over the L-1 noise tokens of a sample),
    ``W = <X_J0, v*>``."""
    d, L, lam, gamma, signal = MC_SETTINGS[setting]
    kappa, nu, theta, eta, rho, _, _ = POINTS[point]
    _, stats = monte_carlo(setting)
    mo = theory.erf_moments(lam, kappa, nu, theta, eta, rho, M=theory.signal_norm(d, signal), gamma=gamma)
    for m in ("EA", "EAW", "EA2", "EB", "EB2"):
        mc, se = stats[(point, m)]
        assert abs(mc - float(getattr(mo, m))) < Z4 * se, (m, mc, se, float(getattr(mo, m)))


@pytest.mark.parametrize("setting", list(MC_SETTINGS))
def test_oracle_excess_against_monte_carlo(setting):
    d, L, lam, gamma, signal = MC_SETTINGS[setting]
    _, stats = monte_carlo(setting)
    mc, se = stats["oracle-kv*"]
    closed = float(theory.oracle_excess(lam, d=d, L=L, gamma=gamma, signal=signal))
    assert abs(mc - closed) < Z4 * se, (mc, se, closed)
    # and the oracle is the erf excess at kappa = nu = 1
    assert closed == pytest.approx(float(theory.erf_excess(lam, 1, 1, 0, 0, 0, d=d, L=L, gamma=gamma, signal=signal)),
                                   abs=1e-13)


@pytest.mark.parametrize("setting", list(MC_SETTINGS))
def test_linear_excess_against_monte_carlo(setting):
    """``c sum_l <X_l, v*>`` with ``c = gamma^2/(gamma^2+L-1)``."""
    _, L, _, gamma, _ = MC_SETTINGS[setting]
    _, stats = monte_carlo(setting)
    assert theory.linear_coefficient(L, gamma) == pytest.approx(gamma**2 / (gamma**2 + L - 1), rel=1e-14)
    mc, se = stats["linear"]
    closed = float(theory.linear_excess(L, gamma))
    assert abs(mc - closed) < Z4 * se, (mc, se, closed)


@pytest.mark.parametrize("setting", list(MC_SETTINGS))
def test_bilinear_excess_against_monte_carlo(setting):
    """``c sum_l <X_l,k*><X_l,v*>`` with ``c = M gamma^2/((M^2+gamma^2) gamma^2 + L - 1)``."""
    d, L, _, gamma, signal = MC_SETTINGS[setting]
    _, stats = monte_carlo(setting)
    M = theory.signal_norm(d, signal)
    assert theory.bilinear_coefficient(d, L, gamma, signal) == pytest.approx(
        M * gamma**2 / ((M**2 + gamma**2) * gamma**2 + L - 1), rel=1e-14)
    mc, se = stats["bilinear"]
    closed = float(theory.bilinear_excess(d, L, gamma, signal))
    assert abs(mc - closed) < Z4 * se, (mc, se, closed)


@pytest.mark.parametrize("which", ["linear", "bilinear"])
@pytest.mark.parametrize("setting", list(MC_SETTINGS))
def test_coefficients_are_least_squares_minimisers(setting, which):
    """An independent least-squares fit of ``c`` in ``W ~ c F(X)`` on a large sample matches the closed-form
    coefficient within 4 (heteroskedasticity-robust) standard errors, and moving ``c`` by 10% raises the MC risk."""
    d, L, _, gamma, signal = MC_SETTINGS[setting]
    _, stats = monte_carlo(setting)
    c_closed = (theory.linear_coefficient(L, gamma) if which == "linear"
                else theory.bilinear_coefficient(d, L, gamma, signal))
    c_hat, se, risk = stats["lsq-" + which]
    assert abs(c_hat - c_closed) < Z4 * se, (c_hat, se, c_closed)
    assert se < 0.02 * abs(c_closed)
    assert risk(c_closed) < risk(0.9 * c_closed) and risk(c_closed) < risk(1.1 * c_closed)


def test_linear_is_the_best_affine_predictor():
    """Ordinary least squares on ``(vec X, 1)`` recovers ``beta_l = gamma^2/(gamma^2+L-1) v*`` and intercept 0
    (every coefficient within 4 robust standard errors)."""
    d, L, gamma = 4, 3, 0.8
    task = Task(d, L, gamma, eps=0.3, seed=16)
    b = task.sample(200_000, torch.Generator().manual_seed(17), dtype=torch.float64)
    A = np.c_[b.X.reshape(len(b.y), -1).numpy(), np.ones(len(b.y))]
    y = b.y.numpy()
    AtA_inv = np.linalg.inv(A.T @ A)
    coef = AtA_inv @ A.T @ y
    resid = y - A @ coef
    cov = AtA_inv @ (A.T * resid**2) @ A @ AtA_inv  # sandwich (HC0)
    se = np.sqrt(np.diag(cov))
    planted = np.r_[np.tile(theory.linear_coefficient(L, gamma) * task.v_star.numpy(), L), 0.0]
    assert np.all(np.abs(coef - planted) < Z4 * se), np.abs(coef - planted) / se
    # its risk is the closed form (plus eps^2): excess = mean resid^2 - eps^2 up to the sampling error of the fit
    assert float((resid**2).mean()) - 0.09 == pytest.approx(theory.linear_excess(L, gamma), abs=0.01)


def test_reference_numbers():
    """The reference numbers of ``docs/closed-forms.md#reference-numbers`` at L=10, gamma^2=0.5: linear 0.4737, best
    oracle about 0.067 at d=400."""
    gamma = 0.5**0.5
    assert theory.linear_excess(10, gamma) == pytest.approx(0.5 * 9 / 9.5, rel=1e-14)
    assert theory.linear_excess(10, gamma) == pytest.approx(0.4737, abs=1e-4)
    _, best = theory.best_oracle_lam(d=400, L=10, gamma=gamma)
    assert best == pytest.approx(0.067, abs=0.002)


# ----- Bayes: Bhattacharyya distance and the upper bound ----------------------------------------------------------
@pytest.mark.parametrize("d,gamma,signal", [(3, 0.5**0.5, None), (5, 1.4, 2.0), (2, 0.3, 0.7)])
def test_bhattacharyya_distance_by_quadrature(d, gamma, signal):
    """``-log int sqrt(p1 p0)`` with ``p1 = N(M k*, gamma^2 I)``, ``p0 = N(0, I)``: a product of 1-d integrals."""
    M = theory.signal_norm(d, signal)

    def npdf(x, m, s2):
        return math.exp(-0.5 * (x - m) ** 2 / s2) / math.sqrt(2 * math.pi * s2)

    along = integrate.quad(lambda x: math.sqrt(npdf(x, M, gamma**2) * npdf(x, 0, 1)), -30, 30, epsabs=1e-14)[0]
    across = integrate.quad(lambda x: math.sqrt(npdf(x, 0, gamma**2) * npdf(x, 0, 1)), -30, 30, epsabs=1e-14)[0]
    numeric = -(math.log(along) + (d - 1) * math.log(across))
    assert theory.bhattacharyya_distance(d, gamma, signal) == pytest.approx(numeric, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("d", [100, 400])
def test_bayes_excess_bound_is_above_importance_sampling(d):
    """The bound ``(L-1) (2 gamma^2/(1+gamma^2)) exp(-2 D_B)`` against an independent importance-sampling estimate."""
    L, gamma = 10, 0.5**0.5
    M = theory.default_signal(d)
    est, se = bayes_excess_importance(d, L, gamma, M, 400_000, seed=18)
    bound = theory.bayes_excess_bound(d, L, gamma)
    assert se < 0.1 * est  # the estimate is precise enough for the comparison to mean something
    assert est + Z4 * se <= bound, (est, se, bound)


# ----- best oracle lam -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d,L,gamma", [(400, 10, 0.5**0.5), (80, 10, 0.5**0.5), (30, 4, 1.2)])
def test_best_oracle_lam_is_a_minimum(d, L, gamma):
    lam, best = theory.best_oracle_lam(d=d, L=L, gamma=gamma)
    assert best == pytest.approx(float(theory.oracle_excess(lam, d=d, L=L, gamma=gamma)), abs=1e-15)
    for f in (1 - 1e-3, 1 + 1e-3, 0.9, 1.1):
        assert float(theory.oracle_excess(lam * f, d=d, L=L, gamma=gamma)) >= best
    grid = np.geomspace(1e-3, 1e2, 20001)
    assert best <= float(theory.oracle_excess(grid, d=d, L=L, gamma=gamma).min()) + 1e-14
