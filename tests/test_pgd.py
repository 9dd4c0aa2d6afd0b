"""Population PGD (``docs/training.md#pgd-on-the-population-risk``): sphere, invariant manifold, gradient, monotone
risk, and the paper's first outcome."""
import numpy as np
import pytest

from slr import theory
from slr.core.reduced import ReducedTask
from slr.core.seeding import numpy_generator
from slr.core.task import Task
from slr.training.algorithms import OVERLAPS, PopulationPGD, embed, init_manifold, init_sphere

GAMMA = 0.5**0.5


def make_pgd(d=400, L=10, R=6, init=init_sphere, simulator="reduced", lr=4e-3, seed=0):
    task = Task(d, L, GAMMA, seed=seed)
    rng = numpy_generator(seed, "init")
    C0 = init(R, d, rng)
    if simulator == "reduced":
        return PopulationPGD(ReducedTask.of(task, 4), C0, lr=lr, M=task.M, L=L, gamma=GAMMA), task
    return PopulationPGD(task, embed(C0, task, rng).numpy(), lr=lr, M=task.M, L=L, gamma=GAMMA), task


def excess_of(algo, task, lam):
    o = algo.overlaps()
    return theory.erf_excess(lam, *(o[k] for k in OVERLAPS), d=task.d, L=task.L, gamma=task.gamma)


@pytest.mark.parametrize("simulator", ["reduced", "full"])
def test_iterates_stay_on_the_sphere(simulator):
    algo, _ = make_pgd(simulator=simulator, lr=0.05)
    for _ in range(500):
        algo.step(0.5)
    norms = np.sqrt((algo.KV**2).sum(-1))
    assert np.abs(norms - 1).max() < 1e-12


@pytest.mark.parametrize("simulator", ["reduced", "full"])
def test_manifold_is_invariant(simulator):
    algo, _ = make_pgd(init=init_manifold, simulator=simulator)
    o = algo.overlaps()
    assert max(np.abs(o[k]).max() for k in ("theta", "eta", "rho")) < 1e-12
    for _ in range(1000):
        algo.step(0.1)
    o = algo.overlaps()
    assert max(np.abs(o[k]).max() for k in ("theta", "eta", "rho")) < 1e-12
    assert np.median(np.abs(o["nu"])) > 0.5  # it did move: |nu| starts near 1/sqrt(d)


def test_gradient_in_R_d_matches_finite_differences_of_the_closed_form():
    """PGD's ``grad_k R = R_kappa k* + R_eta v* + R_rho v`` (and for v) against central differences of the closed
    form, the overlaps taken as functions of the raw vectors."""
    d, L, lam = 12, 5, 0.7
    task = Task(d, L, GAMMA, seed=3)
    ks, vs = task.k_star.numpy(), task.v_star.numpy()
    rng = np.random.default_rng(0)
    k, v = rng.standard_normal(d), rng.standard_normal(d)
    k, v = k / np.linalg.norm(k), v / np.linalg.norm(v)

    def risk(k, v):
        return float(theory.erf_excess(lam, k @ ks, v @ vs, v @ ks, k @ vs, k @ v, d=d, L=L, gamma=GAMMA))

    grad = theory.ErfRiskGradient(lam, M=task.M, L=L, gamma=GAMMA)
    Rk, Rn, Rt, Re, Rr = grad(k @ ks, v @ vs, v @ ks, k @ vs, k @ v)
    gk, gv = Rk * ks + Re * vs + Rr * v, Rn * vs + Rt * ks + Rr * k
    h = 1e-6
    for _ in range(5):
        u = rng.standard_normal(d)
        fd_k = (risk(k + h * u, v) - risk(k - h * u, v)) / (2 * h)
        fd_v = (risk(k, v + h * u) - risk(k, v - h * u)) / (2 * h)
        assert fd_k == pytest.approx(gk @ u, abs=1e-7)
        assert fd_v == pytest.approx(gv @ u, abs=1e-7)


def test_risk_is_non_increasing_for_a_small_step():
    algo, task = make_pgd(d=100, L=10, R=8, lr=1e-3)
    previous = excess_of(algo, task, 0.3)
    for _ in range(300):
        algo.step(0.3)
        current = excess_of(algo, task, 0.3)
        assert np.all(current <= previous + 1e-12)
        previous = current


def test_from_the_manifold_runs_align_to_the_oracle():
    """The first of ``docs/training.md#the-papers-five-experiments`` at reduced repeats: |nu| -> 1, |kappa| ~ 0.98,
    excess -> the oracle's at lam=0.1."""
    algo, task = make_pgd(d=400, L=10, R=5, init=init_manifold, lr=4e-3)
    for _ in range(20000):
        algo.step(0.1)
    o = algo.overlaps()
    oracle = float(theory.oracle_excess(0.1, d=400, L=10, gamma=GAMMA))
    assert oracle == pytest.approx(0.1135, abs=5e-4)
    assert np.abs(o["nu"]).min() > 0.999
    assert np.abs(o["kappa"]).min() > 0.97
    assert np.abs(excess_of(algo, task, 0.1) - oracle).max() < 2e-3
