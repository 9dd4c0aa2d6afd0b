"""Predictors (``docs/task-and-predictors.md#2-the-predictors``) against direct loop computations, batching over
repeats, the Bayes posterior against the likelihood ratio written out, least squares on a planted model, and the
training gradient against autograd."""
import math

import numpy as np
import pytest
import torch

from helpers import direct_posterior
from helpers import one_thread_per_module  # noqa: F401  (autouse: one torch thread in this module)
from slr import theory
from slr.core.predictors import (ERF, SOFTMAX, BayesOptimal, Bilinear, LeastSquaresLinear, Linear, NotReducible,
                            erf_attention, oracle, softmax_attention)
from slr.core.reduced import ReducedTokens
from slr.core.task import Task
from slr.training.algorithms import squared_loss_gradient

N, L, D = 3, 4, 5


@pytest.fixture(scope="module")
def hand():
    """Small hand-built tokens and vectors, and the task they belong to."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, L, D, generator=g, dtype=torch.float64)
    X[0, 2] += 2.0  # a token that clearly stands out
    k = torch.randn(D, generator=g, dtype=torch.float64)
    v = torch.randn(D, generator=g, dtype=torch.float64)
    return X, k, v, Task(D, L, 0.6, seed=1)


def dot(a, b):
    return sum(float(x) * float(y) for x, y in zip(a, b))


def loop_erf(X, k, v, lam):
    return [sum(math.erf(lam * dot(X[b, l], k)) * dot(X[b, l], v) for l in range(X.shape[1]))
            for b in range(X.shape[0])]


def loop_softmax(X, k, v, lam):
    out = []
    for b in range(X.shape[0]):
        s = [lam * dot(X[b, l], k) for l in range(X.shape[1])]
        m = max(s)
        w = [math.exp(x - m) for x in s]
        out.append(sum(wi / sum(w) * dot(X[b, l], v) for l, wi in enumerate(w)))
    return out


def loop_bayes(X, task):
    """``E[W|X] = sum_l P(J0=l|X) <X_l,v*>`` with ``P(J0=l|X)`` proportional to ``N(X_l; M k*, g^2 I)/N(X_l; 0, I)``."""
    d, g2, M = task.d, task.gamma**2, task.M
    out = []
    for b in range(X.shape[0]):
        llr = []
        for l in range(X.shape[1]):
            x = [float(a) for a in X[b, l]]
            sq1 = sum((xi - M * float(ki)) ** 2 for xi, ki in zip(x, task.k_star))
            sq0 = sum(xi * xi for xi in x)
            llr.append(-0.5 * sq1 / g2 - 0.5 * d * math.log(g2) + 0.5 * sq0)
        m = max(llr)
        w = [math.exp(a - m) for a in llr]
        out.append(sum(wi / sum(w) * dot(X[b, l], task.v_star) for l, wi in enumerate(w)))
    return out


def assert_close(t, values, tol=1e-12):
    np.testing.assert_allclose(t.numpy(), np.array(values), atol=tol, rtol=tol)


@pytest.mark.parametrize("lam", [0.3, 1.7])
def test_erf_and_softmax_attention_against_loops(hand, lam):
    X, k, v, _ = hand
    assert_close(erf_attention(k, v, lam).predict(X), loop_erf(X, k, v, lam))
    assert_close(softmax_attention(k, v, lam).predict(X), loop_softmax(X, k, v, lam))


def test_oracle_linear_bilinear_against_loops(hand):
    X, _, _, task = hand
    ks, vs = task.k_star, task.v_star
    assert_close(oracle(task, 0.8).predict(X), loop_erf(X, ks, vs, 0.8))
    c = task.gamma**2 / (task.gamma**2 + L - 1)
    assert_close(Linear.of(task).predict(X), [c * sum(dot(X[b, l], vs) for l in range(L)) for b in range(N)])
    cb = task.M * task.gamma**2 / ((task.M**2 + task.gamma**2) * task.gamma**2 + L - 1)
    assert_close(Bilinear.of(task).predict(X),
                 [cb * sum(dot(X[b, l], ks) * dot(X[b, l], vs) for l in range(L)) for b in range(N)])


def test_bayes_against_loop(hand):
    X, _, _, task = hand
    assert_close(BayesOptimal.of(task).predict(X), loop_bayes(X, task))


@pytest.mark.parametrize("make", [erf_attention, softmax_attention])
def test_batched_vectors(make):
    """``k``, ``v`` of shape (R, d): on X (n, L, d) the result is (R, n), row r the r-th predictor alone; on
    X (R, B, L, d) it is (R, B), row r the r-th predictor on X[r]."""
    R, n, B = 3, 6, 4
    g = torch.Generator().manual_seed(2)
    k, v = torch.randn(R, D, generator=g, dtype=torch.float64), torch.randn(R, D, generator=g, dtype=torch.float64)
    X = torch.randn(n, L, D, generator=g, dtype=torch.float64)
    out = make(k, v, 0.9).predict(X)
    assert out.shape == (R, n)
    for r in range(R):
        torch.testing.assert_close(out[r], make(k[r], v[r], 0.9).predict(X), atol=1e-14, rtol=0)
    XR = torch.randn(R, B, L, D, generator=g, dtype=torch.float64)
    out = make(k, v, 0.9).predict(XR)
    assert out.shape == (R, B)
    for r in range(R):
        torch.testing.assert_close(out[r], make(k[r], v[r], 0.9).predict(XR[r]), atol=1e-14, rtol=0)


def test_bayes_at_gamma_one_is_softmax_attention():
    task = Task(12, 6, 1.0, seed=3)
    X = task.sample(500, torch.Generator().manual_seed(4)).X
    bayes = BayesOptimal.of(task).predict(X)
    soft = softmax_attention(task.k_star, task.v_star, lam=task.M).predict(X)
    torch.testing.assert_close(bayes, soft, atol=1e-12, rtol=0)


@pytest.mark.parametrize("d,gamma", [(8, 0.5**0.5), (20, 1.6), (6, 1.0)])
def test_bayes_posterior_against_likelihood_ratio(d, gamma):
    task = Task(d, 5, gamma, seed=5)
    X = task.sample(2000, torch.Generator().manual_seed(6)).X
    mean, var = BayesOptimal.of(task).posterior(X)
    ref_mean, ref_var = direct_posterior(X, task)
    np.testing.assert_allclose(mean.numpy(), ref_mean, atol=1e-11, rtol=0)
    np.testing.assert_allclose(var.numpy(), ref_var, atol=1e-11, rtol=0)
    assert float(var.min()) >= 0


def test_bayes_posterior_is_stable_in_high_dimension():
    """At d=2000 the scores of a sequence are hundreds apart: no NaN or inf, variance >= 0, and the same posterior
    as the max-shifted numpy computation."""
    task = Task(2000, 10, 0.5**0.5, seed=7)
    X = task.sample(200, torch.Generator().manual_seed(8)).X
    ks = task.k_star
    score = task.M / task.gamma**2 * (X @ ks) + 0.5 * (1 - task.gamma**-2) * X.square().sum(-1)
    spread = score.max(-1).values - score.min(-1).values
    assert float(spread.min()) > 100  # the regime the test is about
    mean, var = BayesOptimal.of(task).posterior(X)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all() and float(var.min()) >= 0
    ref_mean, ref_var = direct_posterior(X, task)
    np.testing.assert_allclose(mean.numpy(), ref_mean, atol=1e-9, rtol=0)
    np.testing.assert_allclose(var.numpy(), ref_var, atol=1e-9, rtol=0)
    # the posterior is then (almost) sure of J0: f* is W
    b = task.sample(200, torch.Generator().manual_seed(8))
    torch.testing.assert_close(BayesOptimal.of(task).predict(b.X), b.W, atol=1e-8, rtol=0)


def test_least_squares_recovers_a_planted_model():
    g = torch.Generator().manual_seed(9)
    n, Ls, d = 400, 3, 4
    X = torch.randn(n, Ls, d, generator=g, dtype=torch.float64)
    beta = torch.randn(Ls * d, generator=g, dtype=torch.float64)
    b0 = 0.7
    y = X.reshape(n, -1) @ beta + b0
    fit = LeastSquaresLinear.fit(X, y)
    torch.testing.assert_close(fit.beta, beta, atol=1e-10, rtol=0)
    assert abs(float(fit.intercept) - b0) < 1e-10
    Xn = torch.randn(7, Ls, d, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fit.predict(Xn), Xn.reshape(7, -1) @ beta + b0, atol=1e-10, rtol=0)
    # with noise: the usual OLS accuracy, and batched over repeats (R, n, L, d)
    R = 2
    XR = torch.randn(R, 5000, Ls, d, generator=g, dtype=torch.float64)
    yR = XR.reshape(R, 5000, -1) @ beta + b0 + 0.1 * torch.randn(R, 5000, generator=g, dtype=torch.float64)
    fitR = LeastSquaresLinear.fit(XR, yR)
    assert fitR.beta.shape == (R, Ls * d) and fitR.intercept.shape == (R,)
    assert float((fitR.beta - beta).abs().max()) < 4 * 0.1 / math.sqrt(5000) * 1.5
    assert fitR.predict(XR).shape == (R, 5000)
    with pytest.raises(NotReducible):
        fit.predict(ReducedTokens(torch.zeros(2, Ls, 2), torch.zeros(2, Ls)))


@pytest.mark.parametrize("kind", [ERF, SOFTMAX], ids=["erf", "softmax"])
def test_training_gradient_is_autograd(kind):
    """``squared_loss_gradient`` is the gradient of ``mean_b (T(X_b) - y_b)^2`` in ``(k, v)`` for each repeat."""
    R, B, Ls, d, lam = 3, 5, 4, 6, 0.8
    g = torch.Generator().manual_seed(10)
    KV = torch.randn(R, 2, d, generator=g, dtype=torch.float64)
    X = torch.randn(R, B, Ls, d, generator=g, dtype=torch.float64)
    y = torch.randn(R, B, generator=g, dtype=torch.float64)
    G, r = squared_loss_gradient(kind, KV, X, y, lam)
    KVg = KV.clone().requires_grad_(True)
    make = erf_attention if kind is ERF else softmax_attention
    T = make(KVg[:, 0], KVg[:, 1], lam).predict(X)  # (R, B)
    loss = (T - y).square().mean(-1).sum()  # repeats are independent: the sum separates them
    (auto,) = torch.autograd.grad(loss, KVg)
    torch.testing.assert_close(G, auto, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(r, (T - y).detach(), atol=1e-13, rtol=0)


def test_names_are_distinct():
    task = Task(6, 3, 0.7)
    ks, vs = task.k_star, task.v_star
    names = [p.name for p in (erf_attention(ks, vs, 1.0), softmax_attention(ks, vs, 1.0),
                              oracle(task, 1.0), BayesOptimal.of(task), Linear.of(task), Bilinear.of(task))]
    assert len(set(names)) == len(names)
    assert Linear.of(task).c == pytest.approx(theory.linear_coefficient(3, 0.7))
