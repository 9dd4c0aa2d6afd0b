"""The Bayes-optimal estimator as the reference (``docs/bayes.md``): paired excess over Bayes, the Bayes excess by plain
and Rao-Blackwellised Monte Carlo and by importance sampling, against each other, an independent importance sampler and
the closed-form upper bound."""
import math

import numpy as np
import pytest
import torch

from helpers import Z4, bayes_excess_importance, direct_posterior, informative_token, mc_mean
from helpers import one_thread_per_module  # noqa: F401  (autouse: one torch thread in this module)
from slr import theory
from slr.core.evaluate import bayes_excess_is, bayes_excess_is_log10, compare, mc_excess
from slr.core.predictors import BayesOptimal, Bilinear, Linear, oracle
from slr.core.seeding import numpy_generator
from slr.core.task import Task
from slr.training.algorithms import OVERLAPS, PopulationPGD, embed, init_sphere

GAMMA = 0.5**0.5
L = 10


def within(a, se_a, b, se_b=0.0):
    """``|a - b| < 4`` combined standard errors."""
    return abs(a - b) < Z4 * math.hypot(se_a, se_b)


@pytest.fixture(scope="module")
def comparison_d20():
    """Oracle (best lam), linear, bilinear and a briefly trained erf predictor (population PGD from the sphere, two
    repeats) compared with Bayes on the same samples at d=20."""
    d, lam = 20, 0.2
    task = Task(d, L, GAMMA, seed=1)
    rng = numpy_generator(1, "init")
    algo = PopulationPGD(task, embed(init_sphere(2, d, rng), task, rng).numpy(), lr=0.05, M=task.M, L=L, gamma=GAMMA)
    for _ in range(300):
        algo.step(lam)
    lam_or, _ = theory.best_oracle_lam(d=d, L=L, gamma=GAMMA)
    predictors = [oracle(task, lam_or), Linear.of(task), Bilinear.of(task), algo.predictor(lam)]
    rows = compare(predictors, task, 100_000, seed=2)
    o = algo.overlaps()
    closed = [float(theory.oracle_excess(lam_or, d=d, L=L, gamma=GAMMA)), theory.linear_excess(L, GAMMA),
              theory.bilinear_excess(d, L, GAMMA),
              theory.erf_excess(lam, *(o[k] for k in OVERLAPS), d=d, L=L, gamma=GAMMA, norm_k=o["norm_k"],
                                norm_v=o["norm_v"])]
    return rows, closed


def test_every_predictor_is_worse_than_bayes_by_many_standard_errors(comparison_d20):
    rows, _ = comparison_d20
    assert rows[0].name == "Bayes-optimal"
    assert np.all(np.asarray(rows[0].over_bayes) == 0)
    for row in rows[1:]:
        ob, se = np.atleast_1d(row.over_bayes), np.atleast_1d(row.over_bayes_se)
        assert np.all(ob > 8 * se), (row.name, ob, se)


def test_paired_difference_is_the_difference_of_excesses(comparison_d20):
    """On the same samples, ``excess(f) - excess(f*)`` is the mean of ``(f - f*)^2``."""
    rows, _ = comparison_d20
    for row in rows[1:]:
        np.testing.assert_allclose(np.asarray(row.excess) - rows[0].excess, row.over_bayes, atol=1e-10, rtol=0)
        # pairing pays: the paired s.e. is smaller than the s.e. of the predictor's own excess
        assert np.all(np.asarray(row.over_bayes_se) < np.asarray(row.excess_se))


def test_compared_excesses_match_closed_forms(comparison_d20):
    """The Rao-Blackwellised excess of each predictor in the table against its closed form (4 s.e.)."""
    rows, closed = comparison_d20
    for row, c in zip(rows[1:], closed):
        ex, se = np.atleast_1d(row.excess), np.atleast_1d(row.excess_se)
        assert np.all(np.abs(ex - np.asarray(c)) < Z4 * se), (row.name, ex, se, c)


def test_trained_predictor_improved(comparison_d20):
    """The PGD run used above did train: its closed-form excess is below the median at initialisation."""
    rows, closed = comparison_d20
    d, lam = 20, 0.2
    C0 = init_sphere(200, d, numpy_generator(1, "init"))
    at_init = theory.erf_excess(lam, C0[:, 0, 0], C0[:, 1, 1], C0[:, 1, 0], C0[:, 0, 1], (C0[:, 0] * C0[:, 1]).sum(-1),
                                d=d, L=L, gamma=GAMMA)
    assert np.all(closed[3] < np.median(at_init))


# ----- the Bayes excess itself ------------------------------------------------------------------------------------
def test_bayes_excess_d10_plain_against_rao_blackwell():
    """At d=10 (L=10, gamma^2=0.5): the plain estimator ``mean (f* - W)^2`` with an independently written posterior
    against the library's Rao-Blackwellised estimate ``mean Var(W|X)``, and against the reference value 0.109
    (``docs/bayes.md#3-why-plain-monte-carlo-goes-blind-near-d--60``)."""
    task = Task(10, L, GAMMA, seed=3)

    def plain(batch):
        mean, _ = direct_posterior(batch.X, task)
        W = informative_token(batch.X, batch.J0) @ task.v_star
        return (torch.as_tensor(mean) - W) ** 2

    p, p_se = mc_mean(plain, task, 100_000, seed=4)
    rb, rb_se = mc_excess(BayesOptimal.of(task), task, 100_000, seed=5)
    assert within(p, p_se, rb, rb_se), (p, p_se, rb, rb_se)
    assert rb_se < p_se  # Rao-Blackwellisation reduces the variance
    assert abs(rb - 0.109) < Z4 * rb_se  # docs/bayes.md's reference value (0.1087 +- 0.0002 by 2e6 reduced samples)


@pytest.mark.parametrize("predictor", ["oracle", "bayes"])
def test_plain_and_rao_blackwell_estimators_agree(predictor):
    task = Task(15, 5, 1.3, seed=6)
    p = oracle(task, 0.4) if predictor == "oracle" else BayesOptimal.of(task)
    a, a_se = mc_excess(p, task, 100_000, seed=7, estimator="plain")
    b, b_se = mc_excess(p, task, 100_000, seed=8)
    assert within(a, a_se, b, b_se), (a, a_se, b, b_se)
    if predictor == "oracle":
        assert within(b, b_se, float(theory.oracle_excess(0.4, d=15, L=5, gamma=1.3)))


def test_mc_excess_rejects_unknown_estimator():
    task = Task(5, 3, 1.0)
    with pytest.raises(ValueError):
        mc_excess(Linear.of(task), task, 10, estimator="nope")


@pytest.mark.slow
@pytest.mark.parametrize("d,n_mc", [(10, 200_000), (40, 1_000_000)])
def test_importance_sampling_against_plain_monte_carlo(d, n_mc):
    """``bayes_excess_is`` against ordinary (Rao-Blackwellised, dimension-free) Monte Carlo and against an
    independently written importance sampler: about 0.109 at d=10 and 1e-4 at d=40
    (``docs/bayes.md#3-why-plain-monte-carlo-goes-blind-near-d--60``)."""
    task = Task(d, L, GAMMA, seed=9)
    is_, is_se = bayes_excess_is(task, 2**16, seed=10)
    mc, mc_se = mc_excess(BayesOptimal.of(task), task, n_mc, seed=11, simulator="reduced")
    assert mc_se < 0.1 * mc  # plain Monte Carlo still sees the excess at these d
    assert within(is_, is_se, mc, mc_se), (is_, is_se, mc, mc_se)
    ind, ind_se = bayes_excess_importance(d, L, GAMMA, task.M, 200_000, seed=12)
    assert within(is_, is_se, ind, ind_se), (is_, is_se, ind, ind_se)


@pytest.mark.parametrize("d", [100, 400])
def test_importance_sampling_in_high_dimension(d):
    """Where plain Monte Carlo sees nothing: ``bayes_excess_is`` against the independent importance sampler
    (relative s.e. of a few percent) and below the closed-form bound."""
    task = Task(d, L, GAMMA, seed=13)
    is_, is_se = bayes_excess_is(task, 2**16, seed=14)
    ind, ind_se = bayes_excess_importance(d, L, GAMMA, task.M, 200_000, seed=15)
    assert is_se < 0.05 * is_
    assert within(is_, is_se, ind, ind_se), (is_, is_se, ind, ind_se)
    assert is_ + Z4 * is_se < theory.bayes_excess_bound(d, L, GAMMA)


def test_importance_sampling_in_log_space_where_the_excess_underflows():
    """The log10 estimate is the same estimate as ``bayes_excess_is`` where both are representable (d=400), and
    stays finite and below the log10 bound at d=1e5, where the excess (about 1e-10000) underflows to 0."""
    task = Task(400, L, GAMMA, seed=13)
    m, se = bayes_excess_is(task, 2**14, seed=14)
    log10_m, rel_se = bayes_excess_is_log10(task, 2**14, seed=14)
    assert np.isclose(10**log10_m, m, rtol=1e-9) and np.isclose(rel_se * m, se, rtol=1e-6)

    task = Task(100_000, L, GAMMA, seed=13)
    assert bayes_excess_is(task, 2**12, seed=14)[0] == 0.0  # why the log-space estimate exists
    log10_m, rel_se = bayes_excess_is_log10(task, 2**12, seed=14)
    bound = theory.bayes_excess_bound_log10(task.d, L, GAMMA)
    assert np.isfinite(log10_m) and rel_se < 0.5
    assert log10_m + np.log10(1 + Z4 * rel_se) < bound
    assert log10_m > bound - 5  # the bound is tight up to a factor polynomial in d (2.5 decades here)
