"""Pieces of training and reporting that no other test pins down, each against an independent computation:
the ERM step (gradient descent and Adam) written from its definition, the inverse ``lam`` schedule and the distance to
the invariant manifold as logged, the standard error of a mean over repeats evaluated on shared samples, and the
swapped critical point that beats the oracle at finite ``d``."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import one_thread_per_module  # noqa: F401  (autouse: one torch thread in this module)
from slr import theory
from slr.core.evaluate import compare, mc_excess
from slr.core.predictors import ERF, erf_attention
from slr.app.final import _mean_se
from slr.app.run import run
from slr.core.seeding import numpy_generator, torch_generator
from slr.core.task import Task
from slr.training.algorithms import ERM, embed, init_sphere

GAMMA = 0.5**0.5


def _erm(optimizer: str, lr: float):
    task = Task(12, 4, GAMMA, eps=0.1, seed=3)
    rng = numpy_generator(3, "init")
    KV0 = embed(init_sphere(3, 12, rng), task, rng)
    algo = ERM(task, ERF, KV0, lr=lr, n_train=40, projected=True, optimizer=optimizer,
               generator=torch_generator(3, "train"), dtype=torch.float64)
    return algo, KV0.clone().to(torch.float64)


def _empirical_risk_gradient(KV: torch.Tensor, X: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """Autograd gradient of ``mean_i (sum_l erf(lam <X_il,k>) <X_il,v> - y_i)^2`` per repeat, tangent part."""
    KV = KV.clone().requires_grad_(True)
    T = (torch.erf(lam * torch.einsum("rnld,rd->rnl", X, KV[:, 0])) * torch.einsum("rnld,rd->rnl", X, KV[:, 1])).sum(-1)
    ((T - y) ** 2).mean(-1).sum().backward()
    G = KV.grad.detach()
    return G - (KV.detach() * G).sum(-1, keepdim=True) * KV.detach()


def test_erm_gradient_descent_step_is_the_projected_step_on_the_empirical_risk():
    lam, lr = 0.7, 0.05
    algo, KV = _erm("gd", lr)
    for _ in range(3):
        g = _empirical_risk_gradient(KV, algo.data.X, algo.data.y, lam)
        KV = KV - lr * g
        KV = KV / KV.norm(dim=-1, keepdim=True)
        algo.step(lam)
    assert torch.allclose(algo.KV, KV, atol=1e-12, rtol=0)


def test_erm_adam_step_is_adam_on_the_tangent_gradient_then_renormalised():
    """Adam written out (beta1 0.9, beta2 0.999, eps 1e-8, bias-corrected), not torch.optim."""
    lam, lr, b1, b2, eps = 0.7, 0.01, 0.9, 0.999, 1e-8
    algo, KV = _erm("adam", lr)
    m, v = torch.zeros_like(KV), torch.zeros_like(KV)
    for t in range(1, 5):
        g = _empirical_risk_gradient(KV, algo.data.X, algo.data.y, lam)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        KV = KV - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        KV = KV / KV.norm(dim=-1, keepdim=True)
        algo.step(lam)
    assert torch.allclose(algo.KV, KV, atol=1e-12, rtol=0)


def test_logged_lam_follows_the_inverse_schedule_and_dist_to_M_its_definition(make_cfg, tmp_path):
    cfg = make_cfg("task.d=10", "task.L=3", "train.steps=60", "train.log_every=20", "train.repeats=3",
                   "predictor.lam=2.5", "train.lam_schedule=inverse", "train.schedule_rate=0.05", "eval.n_test=200",
                   "eval.bayes_is=0", "figures=false")
    summary = run(cfg, out_dir=tmp_path)
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert np.array_equal(m["lam"].to_numpy(), 2.5 / (1 + 0.05 * m["step"].to_numpy()))
    assert np.allclose(m["dist_to_M"], np.sqrt(m["theta"] ** 2 + m["eta"] ** 2 + m["rho"] ** 2), rtol=1e-12, atol=0)
    assert summary["trained"]["lam_final"] == 2.5 / (1 + 0.05 * 60) and summary["trained"]["lam_initial"] == 2.5


@pytest.mark.slow
def test_standard_error_of_a_mean_over_repeats_on_shared_samples():
    """A run's error bar for the mean excess of ``R`` repeats evaluated on one shared test set combines the spread of
    the repeats and the Monte Carlo error (``run._mean_se``). Redo the whole experiment 300 times (new repeats, new
    test samples): the spread of the means must match the reported standard errors (within 20%, about 5 standard
    errors of a standard deviation estimated from 300 draws)."""
    task = Task(10, 4, GAMMA, eps=0.0, seed=0)
    R, n, trials = 6, 400, 300
    rng = np.random.default_rng(11)
    means, ses, parts = [], [], []
    for trial in range(trials):
        k = task.k_star + 0.06 * torch.as_tensor(rng.standard_normal((R, 10)))  # repeats spread around the oracle
        v = task.v_star + 0.06 * torch.as_tensor(rng.standard_normal((R, 10)))
        row = compare([erf_attention(k, v, 0.5)], task, n, seed=trial)[1]
        per = np.asarray(row.excess)
        means.append(per.mean())
        ses.append(_mean_se(per, row.pooled_se))
        parts.append((per.var(ddof=1) / R, row.pooled_se**2))
    spread, reported = float(np.std(means, ddof=1)), float(np.sqrt(np.mean(np.square(ses))))
    assert abs(spread / reported - 1) < 0.2, (spread, reported)
    # neither part alone would do: the between-repeat part and the Monte Carlo part each carry a good share here
    between, mc = np.mean(parts, axis=0)
    assert min(between, mc) > 0.25 * (between + mc), (between, mc)


def test_the_swapped_point_beats_the_best_oracle_at_d_400():
    """``k = v*``, ``v = k*`` (eta = theta = 1) at its best ``lam``: the closed form, checked by Monte Carlo on the
    exact reduced sampler, is below the best oracle's excess (the oracle is not the best unit-norm erf attention)."""
    d, L = 400, 10
    lams = np.geomspace(0.01, 0.5, 400)
    swapped = theory.erf_excess(lams, 0.0, 0.0, 1.0, 1.0, 0.0, d=d, L=L, gamma=GAMMA)
    i = int(np.argmin(swapped))
    _, best_oracle = theory.best_oracle_lam(d=d, L=L, gamma=GAMMA)
    assert swapped[i] < 0.7 * best_oracle  # 0.0422 against 0.0671
    assert swapped[i] == pytest.approx(theory.bilinear_excess(d, L, GAMMA), rel=0.01)
    task = Task(d, L, GAMMA, seed=0)
    mc, se = mc_excess(erf_attention(task.v_star, task.k_star, float(lams[i])), task, 200_000, seed=1,
                       simulator="reduced")
    assert abs(mc - swapped[i]) < 4 * se and mc + 4 * se < best_oracle


def test_logged_test_excess_reuses_one_test_set_and_matches_float64(make_cfg, tmp_path):
    """The logged Monte Carlo excess is computed on one set of test sequences drawn from the ``log`` stream at the start
    (common random numbers): a model that does not move logs the same value at every step, and the value is the float64
    excess on those sequences up to float32 rounding, logged with its standard error over them."""
    from slr.core.predictors import BayesOptimal
    from slr.core.reduced import ReducedTask

    cfg = make_cfg("task.d=12", "task.L=4", "train.steps=40", "train.log_every=10", "train.repeats=3", "train.lr=1e-300",
                   "train.simulator=reduced", "train.log_test_size=500", "eval.n_test=200", "eval.bayes_is=0",
                   "figures=false", "train.lam_schedule=constant", "predictor.lam=0.7")
    run(cfg, out_dir=tmp_path)
    m = pd.read_csv(tmp_path / "metrics.csv")
    per_step = m.pivot(index="step", columns="repeat", values="test_excess")
    assert (per_step.nunique() == 1).all() and per_step.iloc[0].nunique() == 3  # fixed over steps, not over repeats
    task = ReducedTask.of(Task(12, 4, GAMMA, 0.1, seed=0), 4)
    batch = task.sample(500, torch_generator(0, "log"), dtype=torch.float64)
    from slr.training.algorithms import init_sphere
    C0 = torch.as_tensor(init_sphere(3, 12, numpy_generator(0, "init")))
    f_star, var = BayesOptimal.of(task).posterior(batch.X)
    err = (erf_attention(C0[:, 0], C0[:, 1], 0.7).predict(batch.X) - f_star).square() + var  # (3, 500)
    assert np.allclose(per_step.iloc[0].to_numpy(), err.mean(-1).numpy(), rtol=1e-5, atol=0)
    se = m.pivot(index="step", columns="repeat", values="test_excess_se").iloc[0].to_numpy()
    assert np.allclose(se, (err.std(-1) / np.sqrt(500)).numpy(), rtol=1e-4, atol=0)
