"""The task variants (docs/variants.md): position prior, several informative tokens, Student-t tokens.

Samplers against their laws (chi-square on positions and sets, moments of the tokens); the Bayes posterior against
an enumeration over positions or sets of the joint density of the whole sequence (scipy's densities); the closed
forms against Monte Carlo; the reduced sampler against the full one; Student-t Bayes against Gaussian Bayes as df grows.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from helpers import Z4, vectors_with_overlaps
from helpers import one_thread_per_module  # noqa: F401  (autouse: one torch thread in this module)
from slr import theory
from slr.core.evaluate import (bayes_excess_is_log10, bayes_excess_is_prior_log10, bayes_excess_is_sets_log10,
                               compare)
from slr.core.predictors import BayesOptimal, Bilinear, Linear, erf_attention, oracle, softmax_attention
from slr.core.reduced import ReducedTask
from slr.core.task import Task

GAMMA = 0.5**0.5
PRIOR = [0.6, 0.1, 0.1, 0.1, 0.1]


def agree(a, se_a, b, se_b=0.0):
    return abs(a - b) < Z4 * math.hypot(se_a, se_b)


# ----- samplers ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduced", [False, True])
def test_positions_follow_the_prior(reduced):
    task = Task(6, 5, GAMMA, seed=1, prior=PRIOR)
    sampler = ReducedTask.of(task, 4) if reduced else task
    J0 = sampler.sample(20000, torch.Generator().manual_seed(3)).J0.numpy()
    counts = np.bincount(J0, minlength=5)
    assert stats.chisquare(counts, 20000 * np.array(PRIOR)).pvalue > 1e-3


@pytest.mark.parametrize("reduced", [False, True])
def test_informative_sets_are_uniform_and_W_is_their_sum(reduced):
    task = Task(6, 4, GAMMA, seed=1, n_informative=2)
    sampler = ReducedTask.of(task, 4) if reduced else task
    batch = sampler.sample(12000, torch.Generator().manual_seed(4))
    J0 = batch.J0.numpy()
    assert J0.shape == (12000, 2) and (J0[:, 0] < J0[:, 1]).all()
    sets = list(itertools.combinations(range(4), 2))
    counts = np.array([((J0[:, 0] == a) & (J0[:, 1] == b)).sum() for a, b in sets])
    assert stats.chisquare(counts).pvalue > 1e-3
    Z = batch.X.Z if reduced else batch.X
    v = sampler.v_star.to(Z.dtype)
    y = Z @ v  # (n, L)
    assert torch.allclose(batch.W, y.gather(-1, batch.J0).sum(-1))
    assert agree(float(batch.W.var()), float(batch.W.var()) * math.sqrt(2 / 12000), 2 * GAMMA**2)


def test_student_t_tokens_have_unit_variance_and_t_kurtosis():
    df, n = 8.0, 40000
    task = Task(5, 2, GAMMA, seed=0, tokens="student_t", df=df)
    batch = task.sample(n, torch.Generator().manual_seed(5))
    noise = batch.X[torch.arange(n), 1 - batch.J0]  # (n, d): the noise token
    z = noise.flatten().numpy()
    assert abs(z.mean()) < Z4 * math.sqrt(1 / z.size)
    kurt = 3 + 6 / (df - 4)  # of a Student-t with df > 4
    se_var = math.sqrt((kurt - 1) / z.size)
    assert agree(z.var(), se_var, 1.0)
    assert abs(stats.kurtosis(z, fisher=False) - kurt) < 0.6  # kurtosis' own error is large (8th moment)
    inf = batch.X[torch.arange(n), batch.J0]  # M k* + gamma x
    x = ((inf - task.M * task.k_star) / task.gamma).flatten().numpy()
    assert agree(x.var(), math.sqrt((kurt - 1) / x.size), 1.0)
    # the informative token's coordinates are the scaled Student-t law: Kolmogorov-Smirnov against it
    c = math.sqrt((df - 2) / df)
    assert stats.kstest(x[:20000] / c, stats.t(df).cdf).pvalue > 1e-3


def test_the_paper_task_draws_the_same_numbers_as_before():
    """The default task's sampler is unchanged by the variants: J0 by randint, X by randn, in that order."""
    g = torch.Generator().manual_seed(7)
    X = torch.randn(3, 4, 6, dtype=torch.float64, generator=g)
    J0 = torch.randint(0, 4, (3,), generator=g)
    batch = Task(6, 4, GAMMA, seed=2).sample(3, torch.Generator().manual_seed(7))
    assert torch.equal(batch.J0, J0)
    noise = torch.ones(3, 4, dtype=torch.bool)
    noise[torch.arange(3), J0] = False
    assert torch.equal(batch.X[noise], X[noise])


# ----- Bayes against enumeration ----------------------------------------------------------------------------------
def enumerate_posterior(X: torch.Tensor, task: Task):
    """``E[W|X]``, ``Var(W|X)`` and ``P(l in S|X)`` by enumerating every position (or set) and scoring the whole
    sequence with scipy's densities (Gaussian or scaled Student-t), times the prior."""
    Xn = X.numpy()
    mu = (task.M * task.k_star).numpy()
    if task.gaussian:
        log_noise = stats.norm.logpdf(Xn).sum(-1)  # (n, L)
        log_inf = stats.norm.logpdf(Xn, loc=mu, scale=task.gamma).sum(-1)
    else:
        c = math.sqrt((task.df - 2) / task.df)
        log_noise = stats.t.logpdf(Xn, task.df, scale=c).sum(-1)
        log_inf = stats.t.logpdf(Xn, task.df, loc=mu, scale=task.gamma * c).sum(-1)
    L, s = task.L, task.n_informative
    prior = np.full(L, 1 / L) if task.prior is None else task.prior.numpy()
    sets = list(itertools.combinations(range(L), s))
    logp = np.stack([log_noise.sum(-1) + sum(log_inf[:, j] - log_noise[:, j] for j in S)
                     + (math.log(prior[S[0]]) if s == 1 else 0.0) for S in sets], -1)  # (n, sets)
    post = np.exp(logp - logp.max(-1, keepdims=True))
    post /= post.sum(-1, keepdims=True)
    y = Xn @ task.v_star.numpy()
    Ws = np.stack([y[:, list(S)].sum(-1) for S in sets], -1)
    mean = (post * Ws).sum(-1)
    var = (post * (Ws - mean[:, None]) ** 2).sum(-1)
    incl = np.stack([post[:, [i for i, S in enumerate(sets) if l in S]].sum(-1) for l in range(L)], -1)
    return mean, var, incl


@pytest.mark.parametrize("kw", [dict(prior=PRIOR), dict(n_informative=2), dict(n_informative=3),
                                dict(tokens="student_t", df=3.5), dict(tokens="student_t", df=6.0, n_informative=2)])
def test_bayes_matches_an_enumeration_over_positions_or_sets(kw):
    task = Task(4, 5, GAMMA, seed=3, **kw)
    X = task.sample(400, torch.Generator().manual_seed(8)).X
    mean, var, incl = enumerate_posterior(X, task)
    bayes = BayesOptimal.of(task)
    f, v = bayes.posterior(X)
    np.testing.assert_allclose(f.numpy(), mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(v.numpy(), var, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(bayes.attention(X).numpy() * task.n_informative, incl, rtol=1e-8, atol=1e-10)


def test_subset_posterior_is_stable_and_fast_at_L100_s10():
    """Scores hundreds apart (large d) give finite posteriors summing to s; the recursion is linear in L s."""
    task = Task(400, 100, GAMMA, seed=0, n_informative=10)
    X = task.sample(200, torch.Generator().manual_seed(1)).X
    bayes = BayesOptimal.of(task)
    f, v = bayes.posterior(X)
    p = bayes.attention(X) * 10
    assert torch.isfinite(f).all() and torch.isfinite(v).all() and (v >= 0).all()
    assert torch.allclose(p.sum(-1), torch.full((200,), 10.0, dtype=p.dtype))
    assert torch.allclose(f, (p * (X @ task.v_star)).sum(-1))  # f* = sum_l P(l in S|X) <X_l, v*>


def test_student_t_bayes_tends_to_gaussian_bayes_as_df_grows():
    """On the same tokens, the Student-t posterior mean tends to the Gaussian one like 1/df;
    and the Bayes excess of Student-t tokens at df = 2000 is the Gaussian one within Monte Carlo error."""
    gauss = Task(10, 5, GAMMA, seed=0)
    X = gauss.sample(300, torch.Generator().manual_seed(2)).X
    gaps = []
    for df in (1e2, 1e3, 1e4):
        t = BayesOptimal.of(Task(10, 5, GAMMA, seed=0, tokens="student_t", df=df))
        gaps.append(float((t.posterior(X)[0] - BayesOptimal.of(gauss).posterior(X)[0]).abs().max()))
    assert 5 < gaps[0] / gaps[1] < 20 and 5 < gaps[1] / gaps[2] < 20 and gaps[2] < 3e-3  # like 1/df
    rows_g = compare([], gauss, 40000, seed=1)[0]
    rows_t = compare([], Task(10, 5, GAMMA, seed=0, tokens="student_t", df=2000.0), 40000, seed=1)[0]
    assert agree(float(rows_t.excess), float(rows_t.excess_se), float(rows_g.excess), float(rows_g.excess_se))


def test_importance_sampling_under_a_prior_matches_monte_carlo_and_the_uniform_sampler():
    """The pair form of the importance sampler: against Rao-Blackwellised Monte Carlo under a prior at d = 10, and
    with the uniform prior against the paper's sampler at d = 100 (where Monte Carlo sees nothing)."""
    task = Task(10, 5, GAMMA, seed=0, prior=[0.8, 0.05, 0.05, 0.05, 0.05])
    log10, rel = bayes_excess_is_prior_log10(task, 100000, seed=1)
    mc = compare([], task, 100000, seed=2)[0]
    assert agree(10**log10, rel * 10**log10, float(mc.excess), float(mc.excess_se))
    a, ra = bayes_excess_is_prior_log10(Task(100, 6, GAMMA), 60000, seed=3)
    b, rb = bayes_excess_is_log10(Task(100, 6, GAMMA), 60000, seed=4)
    assert 10**a < 1e-8 and agree(10**a, ra * 10**a, 10**b, rb * 10**b)


def test_importance_sampling_over_sets_matches_monte_carlo_and_the_paper_sampler():
    """The importance sampler over pairs of informative sets: against Monte Carlo at d = 10 (s = 3), and at s = 1
    against the paper's sampler at d = 100 (about 1e-10, where Monte Carlo sees nothing)."""
    task = Task(10, 5, GAMMA, seed=0, n_informative=3)
    log10, rel = bayes_excess_is_sets_log10(task, 60000, seed=1)
    mc = compare([], task, 100000, seed=2)[0]
    assert agree(10**log10, rel * 10**log10, float(mc.excess), float(mc.excess_se))
    a, ra = bayes_excess_is_sets_log10(Task(100, 6, GAMMA), 60000, seed=3)
    b, rb = bayes_excess_is_log10(Task(100, 6, GAMMA), 60000, seed=4)
    assert 10**a < 1e-8 and agree(10**a, ra * 10**a, 10**b, rb * 10**b)


# ----- closed forms -----------------------------------------------------------------------------------------------
def test_permutation_invariant_risks_do_not_move_with_the_prior():
    """Erf and softmax attention, oracle, linear and bilinear: the same risk under a concentrated prior as under the
    uniform one (the erf closed forms of the paper's task, and paired Monte Carlo on the same tokens)."""
    uniform = Task(12, 5, GAMMA, seed=4)
    skewed = Task(12, 5, GAMMA, seed=4, prior=[0.9, 0.025, 0.025, 0.025, 0.025])
    k, v = vectors_with_overlaps(uniform, 0.5, 0.6, -0.3, 0.4, 0.25, 1.3, 0.8, seed=3)
    preds = [erf_attention(k, v, 0.7), softmax_attention(k, v, 2.0), oracle(uniform, 1.0), Linear.of(uniform),
             Bilinear.of(uniform)]
    cf = [theory.erf_excess(0.7, 0.5, 0.6, -0.3, 0.4, 0.25, d=12, L=5, gamma=GAMMA, norm_k=1.3, norm_v=0.8),
          None, theory.oracle_excess(1.0, d=12, L=5, gamma=GAMMA), theory.linear_excess(5, GAMMA),
          theory.bilinear_excess(12, 5, GAMMA)]
    rows_u = compare(preds, uniform, 60000, seed=2)[1:]
    rows_s = compare(preds, skewed, 60000, seed=2)[1:]
    for ru, rs, c in zip(rows_u, rows_s, cf):
        assert agree(float(rs.excess), float(rs.excess_se), float(ru.excess), float(ru.excess_se)), rs.name
        if c is not None:
            assert agree(float(rs.excess), float(rs.excess_se), float(c)), rs.name


@pytest.mark.parametrize("s", [2, 4])
def test_closed_forms_with_several_informative_tokens_match_monte_carlo(s):
    task = Task(12, 6, GAMMA, seed=5, n_informative=s)
    k, v = vectors_with_overlaps(task, 0.5, 0.6, -0.3, 0.4, 0.25, 1.3, 0.8, seed=3)
    preds = [erf_attention(k, v, 0.7), oracle(task, 0.4), Linear.of(task), Bilinear.of(task)]
    cf = [theory.erf_excess(0.7, 0.5, 0.6, -0.3, 0.4, 0.25, d=12, L=6, gamma=GAMMA, norm_k=1.3, norm_v=0.8, s=s),
          theory.oracle_excess(0.4, d=12, L=6, gamma=GAMMA, s=s), theory.linear_excess(6, GAMMA, s),
          theory.bilinear_excess(12, 6, GAMMA, s=s)]
    for row, c in zip(compare(preds, task, 60000, seed=2)[1:], cf):
        assert agree(float(row.excess), float(row.excess_se), float(c)), (row.name, float(row.excess), float(c))


def test_linear_and_bilinear_coefficients_are_the_best_for_s():
    """The excess of ``c * (sum of features)`` is a parabola in c; its minimiser is the closed-form coefficient."""
    s, L, d = 3, 7, 8
    c_lin, c_bil = theory.linear_coefficient(L, GAMMA, s), theory.bilinear_coefficient(d, L, GAMMA, None, s)
    e_lin = lambda c: s * GAMMA**2 - 2 * c * s * GAMMA**2 + c**2 * (s * GAMMA**2 + L - s)  # noqa: E731  (moments)
    assert abs(e_lin(c_lin) - theory.linear_excess(L, GAMMA, s)) < 1e-12
    assert e_lin(c_lin) < min(e_lin(c_lin * 1.01), e_lin(c_lin * 0.99))
    assert theory.linear_excess(L, GAMMA, L) == 0.0  # every token informative: W = sum of all, exactly linear


# ----- reduced against full ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(n_informative=3), dict(prior=PRIOR)])
def test_reduced_sampler_matches_the_full_one(kw):
    task = Task(16, 5, GAMMA, seed=6, **kw)
    k, v = vectors_with_overlaps(task, 0.4, 0.5, 0.2, -0.3, 0.1, seed=4)
    preds = [erf_attention(k, v, 0.9), Bilinear.of(task)]
    full = compare(preds, task, 40000, seed=3)
    red = compare(preds, task, 40000, seed=4, simulator="reduced")
    for a, b in zip(full, red):
        assert agree(float(a.excess), float(a.excess_se), float(b.excess), float(b.excess_se)), a.name


def test_student_t_tokens_have_no_reduced_form():
    with pytest.raises(ValueError, match="not available for student_t tokens"):
        ReducedTask.of(Task(8, 3, GAMMA, tokens="student_t", df=4.0))


@pytest.mark.parametrize("s", [2, 5])
def test_pgd_gradient_for_several_tokens_is_the_derivative_of_the_closed_form(s):
    """``ErfRiskGradient(n_informative=s)`` against central differences of ``erf_excess(..., s=s)`` in each overlap."""
    lam, L, d = 0.6, 7, 12
    M = math.sqrt(d / 2)
    x = np.array([0.4, -0.3, 0.25, 0.2, -0.15])
    grad = theory.ErfRiskGradient(lam, M=M, L=L, gamma=GAMMA, n_informative=s)(*x)
    for i in range(5):
        h = np.zeros(5)
        h[i] = 1e-6
        fd = (theory.erf_excess(lam, *(x + h), d=d, L=L, gamma=GAMMA, s=s)
              - theory.erf_excess(lam, *(x - h), d=d, L=L, gamma=GAMMA, s=s)) / 2e-6
        assert abs(float(grad[i]) - float(fd)) < 1e-7 * max(1.0, abs(float(fd))), (i, grad[i], fd)
