"""PGD in float32 and with noise (``train.dtype``, ``train.noise``), ``predictor.lam=auto`` and ``train.lr_scale``.

The noisy reduced PGD is checked against an independent computation in ``R^d`` (one step from the oracle, where the
gradient vanishes, so the step is the noise alone) and against the full-dimensional noisy PGD (in distribution)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from slr import theory
from slr.core.reduced import ReducedTask
from slr.app.run import run
from slr.core.seeding import numpy_generator
from slr.core.task import Task
from slr.training.algorithms import PerturbedPGD, PopulationPGD, embed, init_oracle, init_sphere, population_pgd

GAMMA = 0.5**0.5
TINY = ["train=pgd", "task.d=30", "task.L=4", "train.steps=300", "train.log_every=100", "train.repeats=3",
        "eval.n_test=500", "eval.bayes_is=0", "figures=false"]


def pgd_pair(simulator, d=30, L=5, R=5, seed=0, **kw):
    task = Task(d, L, GAMMA, seed=seed)
    rng = numpy_generator(seed, "init")
    C0 = init_sphere(R, d, rng)
    if simulator == "reduced":
        eval_task, KV0 = ReducedTask.of(task, 4), C0
    else:
        eval_task, KV0 = task, embed(C0, task, rng).numpy()
    args = dict(lr=0.02, M=task.M, L=L, gamma=GAMMA)
    return PopulationPGD(eval_task, KV0, **args), PerturbedPGD(eval_task, KV0, d=d, **args, **kw), task


@pytest.mark.parametrize("simulator", ["reduced", "full"])
def test_the_numpy_path_without_noise_is_bitwise_the_float64_pgd(simulator):
    base, other, _ = pgd_pair(simulator, dtype="float64", noise=0.0)
    for t in range(400):
        base.step(0.5 / (1 + 1e-3 * t))
        other.step(0.5 / (1 + 1e-3 * t))
    assert np.array_equal(base.KV, other.KV)


def test_population_pgd_chooses_the_path():
    task = Task(12, 3, GAMMA)
    C0 = init_sphere(2, 12, np.random.default_rng(0))
    args = dict(lr=0.01, M=task.M, L=3, gamma=GAMMA, d=12)
    assert type(population_pgd(ReducedTask.of(task), C0, **args)) is PopulationPGD
    assert type(population_pgd(ReducedTask.of(task), C0, dtype="float32", **args)) is PerturbedPGD
    assert type(population_pgd(ReducedTask.of(task), C0, noise=0.1, rng=np.random.default_rng(0), **args)) is PerturbedPGD


def test_noise_zero_reproduces_the_noiseless_run_bitwise(make_cfg, tmp_path):
    run(make_cfg(*TINY), out_dir=tmp_path / "a")
    run(make_cfg(*TINY, "train.noise=0"), out_dir=tmp_path / "b")
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    run(make_cfg(*TINY, "train.noise=1e-3"), out_dir=tmp_path / "c")
    assert (tmp_path / "a" / "metrics.csv").read_bytes() != (tmp_path / "c" / "metrics.csv").read_bytes()


@pytest.mark.parametrize("simulator", ["reduced", "full"])
def test_float32_pgd_is_single_precision_and_close_to_float64(simulator):
    base, other, _ = pgd_pair(simulator, dtype="float32")
    for _ in range(300):
        base.step(0.5)
        other.step(0.5)
    assert other.KV.dtype == np.float32
    diff = np.abs(base.overlaps()["kappa"] - other.overlaps()["kappa"]).max()
    assert 0 < diff < 1e-4


def test_reduced_noise_is_the_d_dimensional_noise_one_step_from_the_oracle():
    """From the oracle (a critical point: the step is the noise alone), ``k' = (k* + s xi)/|k* + s xi|`` with ``xi``
    isotropic in ``R^d``: the reduced step's ``kappa``, ``nu``, ``rho`` (and their squares) agree with a direct draw in
    ``R^d`` within 4 standard errors. Dropping the out-of-span part would shift ``E[1 - kappa]`` from about
    ``1 - 1/sqrt(1 + s^2 (d-1))`` to about ``3 s^2 / 2``: checked to be far outside that band."""
    d, s, n = 60, 0.05, 40000
    task = Task(d, 5, GAMMA)
    algo = PerturbedPGD(ReducedTask.of(task), init_oracle(n, d, None), lr=0.1, M=task.M, L=5, gamma=GAMMA, d=d,
                        noise=s, rng=np.random.default_rng(1))
    assert np.linalg.norm(algo.vectors()[:, :, 2:]) == 0  # at the oracle the gradient's tangent part is 0
    algo.step(0.2)
    red = algo.overlaps()
    rng = np.random.default_rng(2)
    k = np.zeros((n, d))
    k[:, 0] = 1.0
    v = np.zeros((n, d))
    v[:, 1] = 1.0
    k = k + s * rng.standard_normal((n, d))
    v = v + s * rng.standard_normal((n, d))
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    full = dict(kappa=k[:, 0], nu=v[:, 1], rho=(k * v).sum(1), theta=v[:, 0], eta=k[:, 1])
    for key in ("kappa", "nu", "rho", "theta", "eta"):
        for f in (lambda x: x, np.square):
            a, b = f(red[key]), f(full[key])
            se = math.sqrt(a.var() / n + b.var() / n)
            assert abs(a.mean() - b.mean()) < 4 * se + 1e-12, key
    gap = 1 - red["kappa"].mean()
    assert gap == pytest.approx(1 - 1 / math.sqrt(1 + s * s * (d - 1)), rel=0.05)
    assert gap > 10 * (3 * s * s / 2)


@pytest.mark.slow
def test_noisy_pgd_reduced_and_full_agree_in_distribution():
    """Many noisy steps from the sphere: means of |kappa|, |nu| and of the squared overlaps over 800 repeats of the
    reduced and the full noisy PGD agree within 4 standard errors."""
    d, R, steps = 16, 800, 150
    task = Task(d, 5, GAMMA, seed=1)
    rng = numpy_generator(1, "init")
    C0 = init_sphere(R, d, rng)
    args = dict(lr=0.05, M=task.M, L=5, gamma=GAMMA, d=d, noise=0.03)
    red = PerturbedPGD(ReducedTask.of(task), C0, rng=np.random.default_rng(3), **args)
    full = PerturbedPGD(task, embed(C0, task, rng).numpy(), rng=np.random.default_rng(4), **args)
    for t in range(steps):
        red.step(0.6)
        full.step(0.6)
    a, b = red.overlaps(), full.overlaps()
    for key, f in (("kappa", np.abs), ("nu", np.abs), ("kappa", np.square), ("nu", np.square), ("rho", np.square),
                   ("theta", np.square), ("eta", np.square)):
        x, y = f(a[key]), f(b[key])
        se = math.sqrt(x.var() / R + y.var() / R)
        assert abs(x.mean() - y.mean()) < 4 * se, (key, x.mean(), y.mean(), se)
    assert np.median(np.abs(a["nu"])) > 0.5  # it did train


@pytest.mark.parametrize("d,L,gamma,signal,algo", [(20, 5, 1.0, None, "pgd"), (100, 10, GAMMA, None, "pgd"),
                                                   (400, 3, 0.5, 5.0, "pgd"), (40, 4, 0.8, None, "sgd")])
def test_lam_auto_is_the_best_oracle_lam(make_cfg, tmp_path, d, L, gamma, signal, algo):
    cfg = make_cfg(*TINY, f"train={algo}", f"task.d={d}", f"task.L={L}", f"task.gamma={gamma}",
                   f"task.signal={'null' if signal is None else signal}", "predictor.lam=auto", "train.lam_schedule=constant", "train.steps=20",
                   "train.log_every=10")
    summary = run(cfg, out_dir=tmp_path)
    best = theory.best_oracle_lam(d=d, L=L, gamma=gamma, signal=signal)[0]
    assert summary["lam_auto"] is True
    assert summary["lam"] == best == summary["trained"]["lam_final"] == summary["excess"]["oracle"]["lam"]
    assert summary["excess"]["oracle"]["closed_form"] == pytest.approx(summary["excess"]["oracle_best"]["closed_form"])


def test_lr_scale_d_divides_the_learning_rate_by_d(make_cfg, tmp_path):
    a = run(make_cfg(*TINY, "train.lr=0.9", "train.lr_scale=d"), out_dir=tmp_path / "a")
    b = run(make_cfg(*TINY, f"train.lr={0.9 / 30!r}"), out_dir=tmp_path / "b")
    assert a["trained"]["lr"] == b["trained"]["lr"] == 0.9 / 30
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
