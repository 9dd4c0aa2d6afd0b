"""The task (``docs/task-and-predictors.md#1-single-location-regression``): k*, v*, the law of J0, of the tokens and
of Y, shapes and validation."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from helpers import Z4, informative_token
from helpers import one_thread_per_module  # noqa: F401  (autouse: one torch thread in this module)
from slr.core.task import Task

D, L, GAMMA, EPS = 6, 7, 0.8, 0.3
N = 100_000


@pytest.fixture(scope="module")
def batch():
    task = Task(D, L, GAMMA, eps=EPS, seed=3)
    return task, task.sample(N, torch.Generator().manual_seed(4), dtype=torch.float64)


def noise_tokens(X, J0):
    """All tokens but the informative one: (n (L-1), d)."""
    keep = torch.ones(X.shape[:2], dtype=torch.bool)
    keep[torch.arange(X.shape[0]), J0] = False
    return X[keep]


def check_mean(x: np.ndarray, mu: np.ndarray):
    """Each coordinate's sample mean within 4 standard errors of ``mu``."""
    se = x.std(0, ddof=1) / math.sqrt(len(x))
    assert np.all(np.abs(x.mean(0) - mu) < Z4 * se), (x.mean(0) - mu) / se


def check_covariance(x: np.ndarray, cov: np.ndarray):
    """Sample covariance within 4 standard errors, entry by entry (the s.e. of each entry from the fourth moments)."""
    c = x - x.mean(0)
    prods = c[:, :, None] * c[:, None, :]  # (n, d, d)
    se = prods.std(0, ddof=1) / math.sqrt(len(x))
    assert np.all(np.abs(prods.mean(0) - cov) < Z4 * se), (prods.mean(0) - cov) / se


def test_J0_is_uniform(batch):
    _, b = batch
    counts = np.bincount(b.J0.numpy(), minlength=L)
    assert len(counts) == L and counts.min() > 0
    assert stats.chisquare(counts).pvalue > 1e-3


def test_J0_is_not_fixed_for_a_tuple_shape():
    task = Task(5, 4, 1.0, seed=0)
    b = task.sample((50, 200), torch.Generator().manual_seed(1))
    counts = np.bincount(b.J0.flatten().numpy(), minlength=4)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_informative_token_law(batch):
    """``X_J0 ~ N(M k*, gamma^2 I)``: mean, covariance, trace and projections on k*, v* and a random direction."""
    task, b = batch
    x = informative_token(b.X, b.J0).numpy()
    ks, vs = task.k_star.numpy(), task.v_star.numpy()
    check_mean(x, task.M * ks)
    check_covariance(x, GAMMA**2 * np.eye(D))
    sq = ((x - task.M * ks) ** 2).sum(1)  # E ||X_J0 - M k*||^2 = gamma^2 d
    assert abs(sq.mean() - GAMMA**2 * D) < Z4 * sq.std(ddof=1) / math.sqrt(N)
    u = np.random.default_rng(0).standard_normal(D)
    u /= np.linalg.norm(u)
    for direction, mean in ((ks, task.M), (vs, 0.0), (u, task.M * (u @ ks))):
        p = x @ direction
        se = p.std(ddof=1) / math.sqrt(N)
        assert abs(p.mean() - mean) < Z4 * se
        assert abs(p.var(ddof=1) - GAMMA**2) < Z4 * GAMMA**2 * math.sqrt(2.0 / N)


def test_noise_token_law(batch):
    """``X_l ~ N(0, I)`` for ``l != J0``."""
    task, b = batch
    x = noise_tokens(b.X, b.J0).numpy()[:200_000]
    n = len(x)
    check_mean(x, np.zeros(D))
    check_covariance(x, np.eye(D))
    sq = (x**2).sum(1)
    assert abs(sq.mean() - D) < Z4 * sq.std(ddof=1) / math.sqrt(n)
    for direction in (task.k_star.numpy(), task.v_star.numpy()):
        p = x @ direction
        assert abs(p.mean()) < Z4 * p.std(ddof=1) / math.sqrt(n)
        assert abs(p.var(ddof=1) - 1.0) < Z4 * math.sqrt(2.0 / n)


def test_output_law(batch):
    """``Var(Y) = gamma^2 + eps^2``, ``E Y = 0``, and ``Y - W`` is ``N(0, eps^2)`` independent of ``W``."""
    task, b = batch
    y, W = b.y.numpy(), b.W.numpy()
    var = GAMMA**2 + EPS**2
    assert abs(y.mean()) < Z4 * math.sqrt(var / N)
    assert abs(y.var(ddof=1) - var) < Z4 * var * math.sqrt(2.0 / N)
    xi = y - W
    assert abs(xi.mean()) < Z4 * EPS / math.sqrt(N)
    assert abs(xi.var(ddof=1) - EPS**2) < Z4 * EPS**2 * math.sqrt(2.0 / N)
    assert abs(np.corrcoef(xi, W)[0, 1]) < Z4 / math.sqrt(N)


def test_W_is_the_informative_token_projection(batch):
    task, b = batch
    W = informative_token(b.X, b.J0) @ task.v_star
    assert torch.equal(b.W, W) or torch.allclose(b.W, W, atol=1e-13, rtol=0)
    noiseless = Task(D, L, GAMMA, eps=0.0, seed=3).sample(100, torch.Generator().manual_seed(0))
    assert torch.equal(noiseless.y, noiseless.W)


def test_k_star_v_star_orthonormal_and_seeded():
    for seed in range(5):
        t = Task(50, 3, 1.0, seed=seed)
        assert abs(float(t.k_star @ t.v_star)) < 1e-14
        assert abs(float(t.k_star.norm()) - 1) < 1e-14 and abs(float(t.v_star.norm()) - 1) < 1e-14
    a, b, c = Task(50, 3, 1.0, seed=1), Task(50, 3, 1.0, seed=1), Task(50, 3, 1.0, seed=2)
    assert torch.equal(a.k_star, b.k_star) and torch.equal(a.v_star, b.v_star)
    assert float((a.k_star - c.k_star).abs().max()) > 0.1 and float((a.v_star - c.v_star).abs().max()) > 0.1


def test_k_star_is_uniform_on_the_sphere():
    """Over seeds, ``<k*, e_1>^2`` has mean 1/d (uniform direction), and k*, v* are not tied to the axes."""
    d = 10
    x = np.array([float(Task(d, 2, 1.0, seed=s).k_star[0]) ** 2 for s in range(100)])
    assert abs(x.mean() - 1 / d) < Z4 * x.std(ddof=1) / math.sqrt(len(x))


def test_fixed_axes():
    t = Task(7, 3, 1.0, axes="fixed")
    e = torch.eye(7, dtype=torch.float64)
    assert torch.equal(t.k_star, e[0]) and torch.equal(t.v_star, e[1])


def test_default_signal_and_given_signal():
    assert Task(50, 3, 1.0).M == pytest.approx(5.0, rel=1e-15)
    assert Task(50, 3, 1.0, signal=2.5).M == 2.5


@pytest.mark.parametrize("n", [13, (3, 5)])
def test_sample_shapes(n):
    task = Task(4, 6, 0.7, eps=0.1, seed=0)
    b = task.sample(n, torch.Generator().manual_seed(0))
    shape = (n,) if isinstance(n, int) else n
    assert b.X.shape == (*shape, 6, 4)
    assert b.y.shape == shape and b.J0.shape == shape and b.W.shape == shape
    assert b.X.dtype == torch.float64
    # each sequence's W is its own informative token's projection, whatever the batch shape
    X, J0 = b.X.reshape(-1, 6, 4), b.J0.reshape(-1)
    assert torch.allclose(b.W.reshape(-1), informative_token(X, J0) @ task.v_star, atol=1e-13, rtol=0)


def test_same_generator_seed_same_sample():
    task = Task(5, 4, 0.7, eps=0.2, seed=0)
    a = task.sample(20, torch.Generator().manual_seed(9))
    b = task.sample(20, torch.Generator().manual_seed(9))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("kwargs", [dict(d=1, L=3, gamma=1.0), dict(d=0, L=3, gamma=1.0), dict(d=5, L=0, gamma=1.0),
                                    dict(d=5, L=3, gamma=0.0), dict(d=5, L=3, gamma=-1.0)])
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        Task(**kwargs)
