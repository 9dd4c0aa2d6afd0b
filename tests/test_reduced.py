"""Exact dimension-free simulation (``docs/reduction.md``) against the full-d simulation: evaluation sampler, population
PGD, online SGD (projected and not), the initialisations and their embedding in R^d."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from helpers import Z4, one_thread, vectors_with_overlaps
from helpers import one_thread_per_module  # noqa: F401  (autouse: one torch thread in this module)
from slr.core.evaluate import compare, mc_excess, reduce
from slr.core.predictors import ERF, BayesOptimal, Bilinear, Linear, erf_attention
from slr.core.reduced import ReducedTask, ReducedTokens, span_basis
from slr.core.seeding import numpy_generator, torch_generator
from slr.core.task import Task
from slr.training.algorithms import (OVERLAPS, FullSGD, PopulationPGD, ReducedSGD, embed, init_manifold, init_oracle,
                       init_sphere)

GAMMA = 0.5**0.5


def agree(a, se_a, b, se_b):
    return abs(a - b) < Z4 * math.hypot(se_a, se_b)


# ----- evaluation sampler -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def task20():
    return Task(20, 5, GAMMA, eps=0.1, seed=2)


def predictors_of(task):
    k, v = vectors_with_overlaps(task, 0.5, 0.6, -0.3, 0.4, 0.25, 1.3, 0.8, seed=3)
    return {"erf": erf_attention(k, v, 0.7), "bayes": BayesOptimal.of(task), "linear": Linear.of(task),
            "bilinear": Bilinear.of(task)}


@pytest.fixture(scope="module")
def rb_tables(task20):
    """Rao-Blackwellised excess of every predictor, full and reduced simulators, one pass each (Bayes comes first)."""
    ps = predictors_of(task20)
    others = [ps["erf"], ps["linear"], ps["bilinear"]]
    full = compare(others, task20, 100_000, seed=4, simulator="full")
    red = compare(others, task20, 100_000, seed=5, simulator="reduced")
    return {name: (f, r) for name, f, r in zip(["bayes", "erf", "linear", "bilinear"], full, red)}


@pytest.mark.parametrize("name", ["erf", "bayes", "linear", "bilinear"])
def test_reduced_sampler_matches_full(rb_tables, name):
    """Erf attention at a generic (k, v) with non-unit norms, Bayes (gamma != 1: the squared norms enter), linear and
    bilinear: excess and excess over Bayes agree within 4 combined standard errors."""
    f, r = rb_tables[name]
    assert agree(f.excess, f.excess_se, r.excess, r.excess_se), (name, f.excess, f.excess_se, r.excess, r.excess_se)
    if name != "bayes":  # Bayes's own excess over Bayes is 0 exactly
        assert agree(f.over_bayes, f.over_bayes_se, r.over_bayes, r.over_bayes_se), (name, f.over_bayes, r.over_bayes)
    assert r.excess_se < 0.05 * r.excess


@pytest.mark.parametrize("name", ["erf", "bayes"])
def test_reduced_sampler_matches_full_plain_estimator(task20, name):
    p = predictors_of(task20)[name]
    full = mc_excess(p, task20, 100_000, seed=14, simulator="full", estimator="plain")
    red = mc_excess(p, task20, 100_000, seed=15, simulator="reduced", estimator="plain")
    assert agree(*full, *red), (full, red)
    assert red[1] < 0.1 * red[0]  # precise enough to mean something (Bayes, plain estimator: ~6%)


def test_the_squared_norm_matters_for_bayes(task20):
    """With ``q`` (the residual squared norm) set to zero, the reduced Bayes estimate disagrees with the full one by
    many standard errors, while with the sampler's ``q`` it agrees: a sampler that dropped ``q`` fails the test
    above."""
    (bayes,), rtask = reduce([BayesOptimal.of(task20)], task20)
    g = torch_generator(6, "eval")
    b = rtask.sample(100_000, g, dtype=torch.float64)
    full, full_se = mc_excess(BayesOptimal.of(task20), task20, 100_000, seed=7, estimator="plain")

    def plain(X):
        x = (bayes.predict(X) - b.W).square()
        return float(x.mean()), float(x.std() / math.sqrt(len(x)))

    with_q = plain(b.X)
    without_q = plain(ReducedTokens(b.X.Z, torch.zeros_like(b.X.q)))
    assert agree(*with_q, full, full_se), (with_q, full, full_se)
    assert abs(without_q[0] - full) > 10 * math.hypot(without_q[1], full_se), (without_q, full, full_se)


def test_residual_norms_are_chi_square(task20):
    """``q_l ~ chi^2_{d-r}``, times ``gamma^2`` at ``J0`` (KS tests), and ``k* = e1``, ``v* = e2``, ``W = z_{J0,2}``."""
    rtask = ReducedTask.of(task20, 4)
    b = rtask.sample(20_000, torch.Generator().manual_seed(8))
    J0 = b.J0
    inf = torch.nn.functional.one_hot(J0, rtask.L).bool()
    q_inf, q_noise = b.X.q[inf].numpy(), b.X.q[~inf].numpy()
    dof = task20.d - 4
    assert stats.kstest(q_inf / GAMMA**2, stats.chi2(dof).cdf).pvalue > 1e-3
    assert stats.kstest(q_noise, stats.chi2(dof).cdf).pvalue > 1e-3
    assert torch.equal(b.W, b.X.Z[torch.arange(len(J0)), J0, 1])
    z = b.X.Z[inf].numpy()  # informative coordinates: mean M e1, covariance gamma^2 I
    assert np.all(np.abs(z.mean(0) - np.r_[task20.M, 0, 0, 0]) < Z4 * GAMMA / math.sqrt(len(z)))


def test_in_basis_is_exact_on_projected_tokens(task20):
    """Predictors re-expressed on an orthonormal basis of their span give the same outputs on the tokens'
    coordinates (and residual norms) as in R^d."""
    ps = list(predictors_of(task20).values())
    reduced_ps, rtask = reduce(ps, task20)
    X = task20.sample(50, torch.Generator().manual_seed(9)).X
    E = span_basis(task20.k_star, task20.v_star, *ps[0].vectors)  # (d, 4)
    assert E.shape == (20, 4)
    torch.testing.assert_close(E.T @ E, torch.eye(4, dtype=torch.float64), atol=1e-14, rtol=0)
    Z = X @ E
    tokens = ReducedTokens(Z, X.square().sum(-1) - Z.square().sum(-1))
    for p, pr in zip(ps, reduced_ps):
        torch.testing.assert_close(pr.predict(tokens), p.predict(X), atol=1e-11, rtol=0)


# ----- population PGD ---------------------------------------------------------------------------------------------
def test_population_pgd_reduced_equals_full():
    """2000 steps at lam=0.1, d=400, L=10, lr=4e-3 from the sphere: the overlaps of the 4-coordinate and the
    R^d iterations agree to 1e-9.

    A non-chaotic setting on purpose: at lam=0.1 the iterates converge smoothly and the two runs stay within
    ~1e-15 of each other; at lam=0.9 (lr=4e-3) they agree to ~1e-15 for 500 steps and then differ by ~0.05
    at step 1000, because those dynamics amplify rounding differences (measured when writing this test), so
    no tolerance could separate an error from rounding there.
    """
    d, L, R, lam, lr = 400, 10, 4, 0.1, 4e-3
    task = Task(d, L, GAMMA, seed=0)
    rng = numpy_generator(0, "init")
    C0 = init_sphere(R, d, rng)
    KV0 = embed(C0, task, rng).numpy()
    full = PopulationPGD(task, KV0, lr=lr, M=task.M, L=L, gamma=GAMMA)
    red = PopulationPGD(ReducedTask.of(task, 4), C0, lr=lr, M=task.M, L=L, gamma=GAMMA)
    start = red.overlaps()
    for _ in range(2000):
        full.step(lam)
        red.step(lam)
    a, b = full.overlaps(), red.overlaps()
    for k in (*OVERLAPS, "norm_k", "norm_v"):
        np.testing.assert_allclose(a[k], b[k], atol=1e-9, rtol=0, err_msg=k)
    assert np.abs(start["nu"]).max() < 0.2 and np.abs(b["nu"]).min() > 0.9  # the runs moved far from the start


# ----- online SGD -------------------------------------------------------------------------------------------------
def run_sgd(d, L, R, B, lr, lam, steps, projected, seed=0, s=1):
    """The full-d (float64) and reduced simulations from the same initial overlaps, independent training streams;
    ``s`` informative tokens per sequence."""
    task = Task(d, L, GAMMA, seed=seed, n_informative=s)
    rng = numpy_generator(seed, "init")
    C0 = init_sphere(R, d, rng)
    KV0 = embed(C0, task, rng)
    full = FullSGD(task, ERF, KV0, lr=lr, batch_size=B, projected=projected, generator=torch_generator(seed, "train"),
                   dtype=torch.float64)
    red = ReducedSGD(task, ERF, C0, lr=lr, batch_size=B, projected=projected,
                     generator=torch_generator(seed + 1, "train"))
    with one_thread():
        for _ in range(steps):
            full.step(lam)
            red.step(lam)
    return C0, full.overlaps(), red.overlaps()


def assert_same_law(a, b, keys):
    """Means of ``|x|`` and ``x^2`` of every key agree within 4 combined standard errors of two independent means."""
    R = len(a[keys[0]])
    for k in keys:
        for f in (np.abs, np.square):
            x, y = f(a[k]), f(b[k])
            se = math.hypot(x.std(ddof=1), y.std(ddof=1)) / math.sqrt(R)
            assert abs(x.mean() - y.mean()) < Z4 * se, (k, f.__name__, x.mean(), y.mean(), se)


@pytest.mark.slow
def test_reduced_sgd_has_the_law_of_full_sgd():
    """d=30, L=4, lam=1, lr=0.01, batch 8, 1500 steps, 400 repeats, projected."""
    C0, full, red = run_sgd(d=30, L=4, R=400, B=8, lr=0.01, lam=1.0, steps=1500, projected=True)
    assert_same_law(full, red, OVERLAPS)
    nu0 = np.abs(C0[:, 1, 1]).mean()  # about sqrt(2/(pi d)) = 0.15
    for o in (full, red):
        assert np.abs(o["nu"]).mean() > nu0 + 0.4  # both moved well away from the start, so the test has power
        np.testing.assert_allclose(o["norm_k"], 1.0, atol=1e-12)
        np.testing.assert_allclose(o["norm_v"], 1.0, atol=1e-12)


@pytest.mark.slow
def test_reduced_sgd_with_several_informative_tokens_has_the_law_of_full_sgd():
    """``s = 3`` of ``L = 5`` tokens informative (docs/variant-several-tokens.md): d=20, lam=1, lr=0.01, batch 8,
    800 steps, 400 repeats, projected; the means of ``|x|`` and ``x^2`` of the five overlaps agree."""
    C0, full, red = run_sgd(d=20, L=5, R=400, B=8, lr=0.01, lam=1.0, steps=800, projected=True, seed=2, s=3)
    assert_same_law(full, red, OVERLAPS)
    nu0 = np.abs(C0[:, 1, 1]).mean()  # about sqrt(2/(pi d)) = 0.18
    for o in (full, red):
        assert np.abs(o["nu"]).mean() > nu0 + 0.4  # both moved well away from the start


def test_reduced_sgd_unprojected_has_the_law_of_full_sgd():
    """Unconstrained SGD at a small step: norms and overlaps of the unit vectors agree in law."""
    C0, full, red = run_sgd(d=12, L=4, R=200, B=8, lr=0.003, lam=1.0, steps=800, projected=False, seed=1)
    assert_same_law(full, red, (*OVERLAPS, "norm_k", "norm_v"))
    assert abs(np.mean(full["norm_v"]) - 1.0) > 0.3  # the norms did change: unprojected dynamics are exercised


@pytest.mark.parametrize("s", [1, 3])
def test_reduced_sgd_one_step_law(s):
    """One unprojected step from one fixed ``(k, v)`` replicated over 20000 repeats, full vs reduced: the means of
    ``|k'|^2``, ``|v'|^2``, ``<k',v'>``, of the new vectors' coordinates on ``k*``, ``v*`` and of the squares of
    all these agree within 4 s.e.; with ``s = 3`` of the ``L = 4`` tokens informative
    (docs/variant-several-tokens.md) as well.

    A large step makes the out-of-span part of the update (the Wishart draw of
    ``docs/reduction.md#4-online-sgd-as-an-exact-markov-chain``) a large share of the new norms: a wrong number of
    degrees of freedom (d-8 instead of d-4, or d-3 instead of d-5 for v's second Bartlett entry) fails here, while the
    long-run test above cannot see it. (One degree of freedom less in v's out-of-span part, e.g. a dropped off-diagonal
    Bartlett entry, is below this test's resolution.)
    """
    d, L, R, B, lr, lam = 30, 4, 20_000, 4, 0.1, 1.0
    task = Task(d, L, GAMMA, eps=0.1, seed=0, n_informative=s)
    rng = numpy_generator(0, "init")
    C1 = init_sphere(1, d, rng)
    full = FullSGD(task, ERF, embed(C1, task, rng).repeat(R, 1, 1), lr=lr, batch_size=B, projected=False,
                   generator=torch_generator(2, "train"), dtype=torch.float64)
    red = ReducedSGD(task, ERF, np.repeat(C1, R, 0), lr=lr, batch_size=B, projected=False,
                     generator=torch_generator(3, "train"))
    with one_thread():
        full.step(lam)
        red.step(lam)

    def statistics(o):
        nk, nv = o["norm_k"], o["norm_v"]
        return {"|k|^2": nk**2, "|v|^2": nv**2, "<k,v>": o["rho"] * nk * nv, "<k,k*>": o["kappa"] * nk,
                "<k,v*>": o["eta"] * nk, "<v,v*>": o["nu"] * nv, "<v,k*>": o["theta"] * nv}

    a, b = statistics(full.overlaps()), statistics(red.overlaps())
    for key in a:
        for f in (lambda x: x, np.square):
            x, y = f(a[key]), f(b[key])
            se = math.hypot(x.std(ddof=1), y.std(ddof=1)) / math.sqrt(R)
            assert abs(x.mean() - y.mean()) < Z4 * se, (key, x.mean(), y.mean(), se)
    assert a["|k|^2"].mean() > 1.5  # the step is large: the update, not the start, dominates the norms


def test_reduced_sgd_needs_d_at_least_5():
    with pytest.raises(ValueError):
        ReducedSGD(Task(4, 3, 1.0), ERF, init_sphere(2, 4, np.random.default_rng(0)), lr=0.01, batch_size=2,
                   projected=True, generator=torch.Generator().manual_seed(0))


# ----- initialisations and their embedding ------------------------------------------------------------------------
def canonical_overlaps(C):
    """Overlaps read off canonical coordinates (R, 2, 4) on (k*, v*, e1, e2)."""
    nk, nv = np.linalg.norm(C[:, 0], axis=-1), np.linalg.norm(C[:, 1], axis=-1)
    return dict(kappa=C[:, 0, 0] / nk, eta=C[:, 0, 1] / nk, theta=C[:, 1, 0] / nv, nu=C[:, 1, 1] / nv,
                rho=(C[:, 0] * C[:, 1]).sum(-1) / (nk * nv), norm_k=nk, norm_v=nv)


@pytest.mark.parametrize("d", [5, 30, 400])
def test_init_sphere_is_uniform(d):
    """k, v independent uniform: each overlap is distributed as a coordinate of a uniform unit vector,
    ``(x+1)/2 ~ Beta((d-1)/2, (d-1)/2)`` (KS test), so ``E x^2 = 1/d``."""
    R = 20_000
    C = init_sphere(R, d, numpy_generator(1, "init"))
    o = canonical_overlaps(C)
    np.testing.assert_allclose(o["norm_k"], 1.0, atol=1e-14)
    np.testing.assert_allclose(o["norm_v"], 1.0, atol=1e-14)
    beta = stats.beta((d - 1) / 2, (d - 1) / 2)
    for k in OVERLAPS:
        x = o[k]
        assert abs((x**2).mean() - 1 / d) < Z4 * (x**2).std(ddof=1) / math.sqrt(R), k
        assert stats.kstest((x + 1) / 2, beta.cdf).pvalue > 1e-3, k
    # k and v independent: E[kappa theta] = 0 and E[kappa^2 nu^2] = 1/d^2, within 4 s.e.
    for x in (o["kappa"] * o["theta"], o["kappa"] ** 2 * o["nu"] ** 2 - 1 / d**2):
        assert abs(x.mean()) < Z4 * x.std(ddof=1) / math.sqrt(R)


def test_init_manifold_and_oracle():
    C = init_manifold(1000, 50, numpy_generator(2, "init"))
    o = canonical_overlaps(C)
    for k in ("theta", "eta", "rho"):
        assert np.all(o[k] == 0.0), k
    assert np.abs(o["kappa"]).max() < 1 and np.std(o["kappa"]) > 0.05  # random, not pinned
    C = init_oracle(3, 50, None)
    o = canonical_overlaps(C)
    assert np.all(o["kappa"] == 1) and np.all(o["nu"] == 1) and np.all(o["rho"] == 0)


@pytest.mark.parametrize("axes", ["random", "fixed"])  # QR's sign conventions meet both signs of k*, v* coordinates
@pytest.mark.parametrize("task_seed", [5, 6])
@pytest.mark.parametrize("init", [init_sphere, init_manifold])
def test_embed_realises_the_canonical_overlaps(init, task_seed, axes):
    d, R = 40, 64
    task = Task(d, 3, 1.0, seed=task_seed, axes=axes)
    rng = numpy_generator(3, "init")
    C = init(R, d, rng) * np.array([1.7, 0.4])[None, :, None]  # non-unit norms too
    KV = embed(C, task, rng)  # (R, 2, d)
    assert KV.shape == (R, 2, d)
    k, v = KV[:, 0], KV[:, 1]
    nk, nv = k.norm(dim=-1), v.norm(dim=-1)
    got = dict(kappa=(k @ task.k_star) / nk, nu=(v @ task.v_star) / nv, theta=(v @ task.k_star) / nv,
               eta=(k @ task.v_star) / nk, rho=(k * v).sum(-1) / (nk * nv), norm_k=nk, norm_v=nv)
    want = canonical_overlaps(C)
    for key, val in got.items():
        np.testing.assert_allclose(val.numpy(), want[key], atol=1e-13, rtol=0, err_msg=key)
    # the parts orthogonal to k*, v* point in random directions (not the same e1 for every repeat)
    ks, vs = task.k_star, task.v_star
    P = torch.eye(d, dtype=torch.float64) - torch.outer(ks, ks) - torch.outer(vs, vs)
    rest = k @ P
    rest = rest / rest.norm(dim=-1, keepdim=True)
    cos = rest @ rest.T
    assert float((cos - torch.eye(R, dtype=torch.float64)).abs().max()) < 0.9
