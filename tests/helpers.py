"""Independent computations shared by the correctness tests: vectors with prescribed overlaps, chunked Monte Carlo
means with standard errors, a direct Bayes posterior, and an importance-sampling estimate of the Bayes excess.

Nothing here calls the formulas under test; each quantity is written from its definition
(``docs/task-and-predictors.md``, ``docs/bayes.md``).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from slr.core.task import Task

Z4 = 4.0  # tolerance in standard errors for every Monte Carlo comparison


@contextlib.contextmanager
def one_thread():
    """Small tensors: torch's intra-op threads cost more than they save (several times slower on a busy 2-core
    machine); the random streams do not depend on the number of threads."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module", autouse=True)
def one_thread_per_module():
    """Every test module that imports this fixture runs with one torch thread (restored afterwards): measured on
    the 2-core machine while busy, the Monte Carlo of test_theory took 13.4 s with two threads and 2.2 s with one."""
    with one_thread():
        yield


def gram_schmidt(*vectors: torch.Tensor) -> list[torch.Tensor]:
    """Orthonormalise ``vectors`` in order (classical Gram-Schmidt, applied twice for accuracy)."""
    basis: list[torch.Tensor] = []
    for u in vectors:
        w = u.clone()
        for _ in range(2):
            for e in basis:
                w = w - (w @ e) * e
        basis.append(w / w.norm())
    return basis


def vectors_with_overlaps(task: Task, kappa, nu, theta, eta, rho, norm_k=1.0, norm_v=1.0, seed=0):
    """Vectors ``k``, ``v`` in R^d whose unit directions have the given overlaps with ``task.k_star``, ``task.v_star``.

    In the orthonormal basis ``(k*, v*, e3, e4)`` (``e3``, ``e4`` random, from Gram-Schmidt):
    ``k = (kappa, eta, a, 0)``, ``v = (theta, nu, b, c)`` with ``a b = rho - kappa theta - eta nu``.
    """
    g = torch.Generator().manual_seed(seed)
    ks, vs = task.k_star.to(torch.float64), task.v_star.to(torch.float64)
    r = torch.randn(task.d, 2, generator=g, dtype=torch.float64)
    _, _, e3, e4 = gram_schmidt(ks, vs, r[:, 0], r[:, 1])
    a = math.sqrt(1.0 - kappa**2 - eta**2)
    resid = rho - kappa * theta - eta * nu
    b = resid / a if a > 1e-12 else 0.0
    assert a > 1e-12 or abs(resid) < 1e-12, "inconsistent overlaps"
    c2 = 1.0 - theta**2 - nu**2 - b**2
    assert c2 >= 0, "inconsistent overlaps"
    k = kappa * ks + eta * vs + a * e3
    v = theta * ks + nu * vs + b * e3 + math.sqrt(c2) * e4
    # the construction itself is checked: the overlaps are what was asked
    assert abs(float(k @ ks) - kappa) < 1e-12 and abs(float(v @ vs) - nu) < 1e-12
    assert abs(float(v @ ks) - theta) < 1e-12 and abs(float(k @ vs) - eta) < 1e-12
    assert abs(float(k @ v) - rho) < 1e-12 and abs(float(k.norm()) - 1) < 1e-12 and abs(float(v.norm()) - 1) < 1e-12
    return norm_k * k, norm_v * v


def mc_mean(per_sample, task, n: int, seed: int, chunk: int = 50_000):
    """Mean and standard error of ``per_sample(batch)`` (a (m,) tensor) over ``n`` samples of ``task``, drawn in
    chunks."""
    g = torch.Generator().manual_seed(seed)
    total, total2, count = 0.0, 0.0, 0
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = per_sample(task.sample(m, g, dtype=torch.float64)).to(torch.float64)
        total += float(x.sum())
        total2 += float((x * x).sum())
        count += m
    mean = total / count
    var = (total2 - count * mean**2) / (count - 1)
    return mean, math.sqrt(max(var, 0.0) / count)


def informative_token(X: torch.Tensor, J0: torch.Tensor) -> torch.Tensor:
    """``X_{J0}`` for every sample, by plain indexing: (n, d)."""
    return X[torch.arange(X.shape[0]), J0]


def erf_T(X: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lam: float) -> torch.Tensor:
    """Erf attention written from its definition: ``sum_l erf(lam <X_l,k>) <X_l,v>``."""
    return (torch.erf(lam * (X @ k)) * (X @ v)).sum(-1)


def log_normal(sq_dist, var: float, d: int):
    """``log N(x; mu, var I_d)`` given ``||x - mu||^2``."""
    return -0.5 * sq_dist / var - 0.5 * d * math.log(2.0 * math.pi * var)


def direct_posterior(X: torch.Tensor, task: Task):
    """``E[W|X]`` and ``Var(W|X)`` from the likelihood ratios ``log N(X_l; M k*, gamma^2 I) - log N(X_l; 0, I)``.

    Written in float64 numpy with an explicit max-shift, independently of :class:`slr.core.predictors.BayesOptimal`.
    """
    Xn = X.detach().to(torch.float64).numpy()
    ks, vs = task.k_star.to(torch.float64).numpy(), task.v_star.to(torch.float64).numpy()
    d, g2, M = task.d, task.gamma**2, task.M
    llr = log_normal(((Xn - M * ks) ** 2).sum(-1), g2, d) - log_normal((Xn**2).sum(-1), 1.0, d)  # (..., L)
    w = np.exp(llr - llr.max(-1, keepdims=True))
    post = w / w.sum(-1, keepdims=True)  # P(J0 = l | X)
    y = Xn @ vs  # (..., L)
    mean = (post * y).sum(-1)
    var = (post * (y - mean[..., None]) ** 2).sum(-1)
    return mean, var


def bayes_excess_importance(d: int, L: int, gamma: float, M: float, n: int, seed: int, chunk: int = 200_000):
    """Bayes excess ``E Var(W|X)`` by importance sampling, written independently of ``slr.core.evaluate.bayes_excess_is``.

    ``Var(W|X) = sum_{l<l'} pi_l pi_l' (y_l - y_l')^2``; by exchangeability the expectation is
    ``(L-1) P12 + C(L-1,2) P23`` (pair = (J0, noise) or (noise, noise)). The pair is drawn from
    ``q = N(mu k*, s2 I)`` with ``mu = M/(1+gamma^2)``, ``s2 = 2 gamma^2/(1+gamma^2)`` and reweighted by the explicit
    Gaussian densities (no Bhattacharyya formula is used). Tokens are represented exactly by their coordinates on
    ``k*``, ``v*`` and the squared norm of the rest (chi-square with ``d - 2`` degrees of freedom).
    Returns ``(mean, standard_error)``.
    """
    rng = np.random.default_rng(seed)
    g2 = gamma**2
    mu, s2 = M / (1 + g2), 2 * g2 / (1 + g2)

    def draw(m, mean, var, count):
        kc = mean + math.sqrt(var) * rng.standard_normal((m, count))
        vc = math.sqrt(var) * rng.standard_normal((m, count))
        rest = var * rng.chisquare(d - 2, (m, count))
        return kc, vc, rest

    def logpdf(tok, mean, var):
        kc, vc, rest = tok
        return log_normal((kc - mean) ** 2 + vc**2 + rest, var, d)

    def score(tok):  # log p1 - log p0
        return logpdf(tok, M, g2) - logpdf(tok, 0.0, 1.0)

    vals = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        pair = draw(m, mu, s2, 2)  # columns: token a, token b
        lq = logpdf(pair, mu, s2)
        s_pair = score(pair)
        # P12: a plays J0 (density p1), b a noise token (p0); the other L-2 tokens are noise
        noise = draw(m, 0.0, 1.0, L - 2)
        s_all = np.concatenate([s_pair, score(noise)], axis=1)
        mx = s_all.max(1, keepdims=True)
        log_pi = s_all - mx - np.log(np.exp(s_all - mx).sum(1, keepdims=True))
        a, b = tuple(t[:, :1] for t in pair), tuple(t[:, 1:] for t in pair)
        log_w = logpdf(a, M, g2)[:, 0] + logpdf(b, 0.0, 1.0)[:, 0] - lq.sum(1)
        diff2 = (pair[1][:, 0] - pair[1][:, 1]) ** 2
        p12 = np.exp(log_w + log_pi[:, 0] + log_pi[:, 1]) * diff2
        if L > 2:
            j0 = draw(m, M, g2, 1)
            noise3 = tuple(t[:, : L - 3] for t in noise)
            s_all = np.concatenate([score(j0), s_pair, score(noise3)], axis=1)
            mx = s_all.max(1, keepdims=True)
            log_pi = s_all - mx - np.log(np.exp(s_all - mx).sum(1, keepdims=True))
            log_w = logpdf(pair, 0.0, 1.0).sum(1) - lq.sum(1)
            p23 = np.exp(log_w + log_pi[:, 1] + log_pi[:, 2]) * diff2
        else:
            p23 = np.zeros(m)
        vals.append((L - 1) * p12 + (L - 1) * (L - 2) / 2 * p23)
    x = np.concatenate(vals)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))
