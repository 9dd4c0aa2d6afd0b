"""The compiled kernels against the numpy steps they replace, their Gaussian source and their build.

Reduced SGD (slr/_reduced_step.c): the kernel and the numpy step draw the same numbers from the same numpy bit
generator, so their trajectories agree up to float32 rounding; the statistical tests of ``docs/reduction.md``
(test_reduced.py) check the chain itself against the full simulator. PGD (slr/_pgd_step.c): the kernel repeats the numpy
step operation by operation with the same elementary functions, so on the reduced form the iterates are the same.
"""
import json
import logging

import numpy as np
import pytest
from scipy import stats

import slr.training.kernels
from helpers import one_thread_per_module  # noqa: F401  (autouse: one torch thread in this module)
from slr.core.predictors import ERF, SOFTMAX
from slr.core.reduced import ReducedTask
from slr.core.seeding import numpy_generator, torch_generator
from slr.core.task import Task
from slr.training.algorithms import (EXPLODED_NORM, PopulationPGD, ReducedSGD, embed, init_manifold, init_sphere, lam_schedule,
                       train)

GAMMA = 0.5**0.5


def state(algo) -> str:
    """The state of an algorithm's numpy bit generator, comparable with ==."""
    return json.dumps(algo.rng.bit_generator.state, default=lambda a: a.tolist())


def pair(kind, projected, R=40, d=30, L=4, B=3, lr=1e-2, gamma=GAMMA, s=1):
    task = Task(d, L, gamma, eps=0.1, seed=0, n_informative=s)
    C0 = init_sphere(R, d, numpy_generator(0, "init"))
    return [ReducedSGD(task, kind, C0, lr=lr, batch_size=B, projected=projected, generator=torch_generator(0, "train"),
                       kernel=k) for k in (True, False)]


@pytest.mark.parametrize("projected", [True, False])
@pytest.mark.parametrize("kind", [ERF, SOFTMAX], ids=lambda k: k.name)
def test_kernel_follows_the_numpy_step(kind, projected):
    compiled, numpy_step = pair(kind, projected)
    assert compiled.kernel == "compiled" and numpy_step.kernel == "numpy"
    start = compiled.vectors()
    for t in range(400):
        compiled.step(1.0)
        numpy_step.step(1.0)
        if t == 0:
            np.testing.assert_allclose(compiled.KV, numpy_step.KV, atol=2e-7, rtol=0)
    np.testing.assert_allclose(compiled.KV, numpy_step.KV, atol=2e-5, rtol=0)
    assert np.abs(compiled.KV - start).max() > 0.1  # the chain moved
    if projected:
        np.testing.assert_allclose(np.linalg.norm(compiled.KV, axis=-1), 1.0, atol=1e-12)
    assert np.all(compiled.KV[:, 0, 3] == 0)  # canonical: k has no e2 coordinate
    # both consumed exactly the same random numbers: their bit generators are in the same state
    assert state(compiled) == state(numpy_step)


@pytest.mark.parametrize("kind", [ERF, SOFTMAX], ids=lambda k: k.name)
def test_kernel_follows_the_numpy_step_with_several_informative_tokens(kind):
    """``s = 3`` of ``L = 5`` tokens informative (docs/variant-several-tokens.md, reduced online SGD): the kernel
    draws the numbers of :meth:`ReducedSGD.draw` and does the numpy step's arithmetic, up to float32 rounding. (At
    ``lr = 1e-2`` this chain is chaotic: a 1e-9 change of the start grows to order 1 in 100 steps, so the comparison
    runs at ``lr = 3e-3``.)"""
    compiled, numpy_step = pair(kind, True, L=5, s=3, lr=3e-3)
    start = compiled.vectors()
    for _ in range(300):
        compiled.step(1.0)
        numpy_step.step(1.0)
    np.testing.assert_allclose(compiled.KV, numpy_step.KV, atol=2e-5, rtol=0)
    assert np.abs(compiled.KV - start).max() > 0.1  # the chain moved
    assert state(compiled) == state(numpy_step)


def test_many_steps_per_call_are_the_steps_one_by_one():
    """``advance`` over 300 steps with a decreasing lam is 300 calls of one step (the same kernel, bitwise)."""
    a, _ = pair(ERF, True)
    b, _ = pair(ERF, True)
    lams = 2.0 / (1.0 + 0.01 * np.arange(300))
    assert a.advance(5, lams)[0] == 305
    for lam in lams:
        b.step(lam)
    assert np.array_equal(a.KV, b.KV)


def test_kernel_leaves_discarded_repeats_alone():
    compiled, numpy_step = pair(ERF, True)
    mask = np.zeros(40, dtype=bool)
    mask[[3, 17]] = True
    for algo in (compiled, numpy_step):
        algo.step(1.0)
        algo.discard(mask)
        for _ in range(50):
            algo.step(1.0)
    assert np.isnan(compiled.KV[mask]).all()
    np.testing.assert_allclose(compiled.KV[~mask], numpy_step.KV[~mask], atol=1e-5, rtol=0)


def test_divergence_is_found_at_the_same_step_in_the_kernel_and_in_the_loop():
    """Unprojected SGD with a huge step: the kernel's per-step check (in C) stops each repeat at the step the Python
    loop's check finds, and the loop stops when no repeat is left."""
    hist = {}
    for k in (True, False):
        task = Task(30, 4, GAMMA, eps=0.1, seed=0)
        algo = ReducedSGD(task, ERF, init_sphere(6, 30, numpy_generator(0, "init")), lr=3.0, batch_size=3,
                          projected=False, generator=torch_generator(0, "train"), kernel=k)
        hist[k] = train(algo, steps=200, log_every=50, schedule=lambda t: 1.0, log=lambda *a: [])
    assert (hist[True].diverged_at > 0).all()
    assert np.array_equal(hist[True].diverged_at, hist[False].diverged_at)
    assert hist[True].steps_done == hist[False].steps_done == hist[True].diverged_at.max() < 200


# ----- the Gaussian source of the reduced SGD -------------------------------------------------------------------
def test_the_reduced_sgd_draws_numpys_standard_normals():
    """What the kernel draws (numpy's ``random_standard_normal_f`` on its bit generator): mean 0, variance 1 and a
    standard normal law (Kolmogorov-Smirnov) over 2 x 10^5 float32 draws; the Bartlett factor's squared diagonal
    has the means of chi-squares with d - 4 and d - 5 degrees of freedom."""
    task = Task(30, 10, GAMMA, eps=0.1, seed=0)
    algo = ReducedSGD(task, ERF, init_sphere(20, 30, numpy_generator(0, "init")), lr=0.5, batch_size=25,
                      projected=True, generator=torch_generator(7, "train"), kernel=False)
    U, u3, xi, z, A = zip(*(algo.draw() for _ in range(20)))
    x = np.concatenate([np.ravel(a) for a in (*U, *u3, *xi)]).astype(np.float64)  # float32 draws
    n = x.size
    assert n > 200_000 and U[0].dtype == np.float32
    assert abs(x.mean()) < 4 / np.sqrt(n)
    assert abs(x.var() - 1) < 4 * np.sqrt(2 / n)
    assert stats.kstest(x, "norm").pvalue > 1e-3
    assert stats.kstest(np.ravel(z), "norm").pvalue > 1e-3
    A = np.concatenate(A) / 0.5  # (400, 2, 2)
    for (i, j), df in (((0, 0), 26), ((1, 1), 25)):
        c = A[:, i, j] ** 2
        assert abs(c.mean() - df) < 4 * np.sqrt(2 * df / len(c))
    assert abs(A[:, 1, 0].mean()) < 4 / np.sqrt(len(A)) and np.all(A[:, 0, 1] == 0)


def test_the_kernel_draws_the_same_stream_as_numpy():
    """After any number of kernel steps, the bit generator is where numpy's own draws of those steps leave it."""
    compiled, numpy_step = pair(SOFTMAX, True, R=7, B=5)
    compiled.advance(0, np.full(13, 1.0))
    for _ in range(13):
        numpy_step.draw()
    assert state(compiled) == state(numpy_step)


# ----- PGD ------------------------------------------------------------------------------------------------------
PGD_PRESETS = {  # the four GD presets of docs/training.md#the-papers-five-experiments: (lam0, lr, init, schedule)
    "paper_gd_manifold": (0.1, 4e-3, init_manifold, "constant"),
    "paper_gd_sphere_large_lambda": (0.9, 1e-3, init_sphere, "constant"),
    "paper_gd_sphere_small_lambda": (0.1, 4e-3, init_sphere, "constant"),
    "paper_gd_sphere_schedule": (1.0, 4e-3, init_sphere, "inverse"),
}


def pgd_pair(lam0, lr, init, simulator="reduced", d=400, R=30):
    task = Task(d, 10, GAMMA, seed=0)
    rng = numpy_generator(0, "init")
    C0 = init(R, d, rng)
    eval_task, KV0 = (ReducedTask.of(task, 4), C0) if simulator == "reduced" else (task, embed(C0, task, rng).numpy())
    return [PopulationPGD(eval_task, KV0, lr=lr, M=task.M, L=10, gamma=GAMMA, kernel=k) for k in (True, False)]


@pytest.mark.parametrize("preset", PGD_PRESETS)
def test_compiled_pgd_equals_numpy_pgd_over_1000_steps(preset):
    """Each GD preset's settings (30 repeats, d = 400, its lam, schedule, step and initialisation): 1000 steps of the
    compiled kernel (one call) and of the numpy step agree to 1e-12 (bitwise, in fact: the same operations and
    elementary functions; the schedule preset amplifies a last-bit difference to 0.1 within a few hundred steps,
    see test_pgd_at_the_schedule_preset_amplifies_rounding)."""
    lam0, lr, init, kind = PGD_PRESETS[preset]
    compiled, reference = pgd_pair(lam0, lr, init)
    assert compiled.kernel == "compiled" and reference.kernel == "numpy"
    schedule = lam_schedule(kind, lam0, 1e-4)
    lams = np.array([schedule(t) for t in range(1000)])
    assert compiled.advance(0, lams) == (1000, pytest.approx(np.full(30, -1)))
    for lam in lams:
        reference.step(lam)
    assert np.abs(compiled.KV - reference.KV).max() <= 1e-12
    assert np.abs(reference.KV - init(30, 400, numpy_generator(0, "init"))).max() > 0.05  # it moved


def test_compiled_pgd_in_R_d_equals_numpy_pgd():
    """The full form (d = 400 coordinates): numpy sums long dot products pairwise, the kernel in order, so they agree
    to rounding (1e-12 after 1000 steps at the manifold preset's settings), not bitwise."""
    compiled, reference = pgd_pair(0.1, 4e-3, init_manifold, simulator="full")
    compiled.advance(0, np.full(1000, 0.1))
    for _ in range(1000):
        reference.step(0.1)
    assert np.abs(compiled.KV - reference.KV).max() <= 1e-12


def test_pgd_at_the_schedule_preset_amplifies_rounding():
    """Why only bitwise-equal implementations agree at the schedule preset: a relative change of 1e-15 in the start
    grows past 1e-3 within 1000 numpy steps (lam near 1 with lr = 4e-3: some repeats oscillate)."""
    a, _ = pgd_pair(1.0, 4e-3, init_sphere)
    b = PopulationPGD(a.eval_task, a.KV * (1 + 1e-15), lr=4e-3, M=a.M, L=10, gamma=GAMMA, kernel=True)
    lams = 1.0 / (1.0 + 1e-4 * np.arange(1000))
    a.advance(0, lams)
    b.advance(0, lams)
    assert np.abs(a.KV - b.KV).max() > 1e-3


def test_the_training_loop_logs_the_same_rows_with_either_pgd():
    """train() advances the compiled PGD between logged steps (odd cadence, inverse schedule): the same rows."""
    rows = {}
    for k in (True, False):
        algo = pgd_pair(1.0, 4e-3, init_sphere, R=5)[0 if k else 1]
        def log(t, lam, a, alive):
            return [dict(step=t, repeat=r, lam=lam, norm_k=1.0, norm_v=1.0, kv=a.vectors()[r].tolist())
                    for r in np.flatnonzero(alive)]

        rows[k] = train(algo, steps=100, log_every=7, schedule=lam_schedule("inverse", 1.0, 0.01), log=log).rows
    assert [r["step"] for r in rows[True][::5]] == [*range(0, 100, 7), 100]
    assert rows[True] == rows[False]


# ----- build and fallback ---------------------------------------------------------------------------------------
@pytest.fixture
def fresh_kernel(tmp_path, monkeypatch):
    """An empty kernel cache in tmp_path, and no kernel loaded yet in this process."""
    monkeypatch.setenv("SLR_CACHE_DIR", str(tmp_path / "cache"))
    slr.training.kernels.reduced_step.cache_clear()
    slr.training.kernels.pgd_step.cache_clear()
    yield tmp_path / "cache"
    slr.training.kernels.reduced_step.cache_clear()
    slr.training.kernels.pgd_step.cache_clear()


def test_kernel_is_built_once_into_the_cache(fresh_kernel):
    path = slr.training.kernels.build()
    assert path.parent == fresh_kernel and path.exists()
    mtime = path.stat().st_mtime_ns
    assert slr.training.kernels.build() == path and path.stat().st_mtime_ns == mtime
    assert [p.name for p in fresh_kernel.iterdir()] == [path.name]  # no temporary file left behind
    assert slr.training.kernels.reduced_step() is not None
    assert slr.training.kernels.pgd_step() is not None
    assert len(list(fresh_kernel.glob("*.so"))) == 2


def test_an_unwritable_cache_falls_back_to_the_temporary_directory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SLR_CACHE_DIR", str(blocker / "cache"))  # cannot be created: a file is in the way
    assert slr.training.kernels.cache_dir().name.startswith("slr-cache-")


def test_without_a_compiler_the_numpy_step_runs(fresh_kernel, monkeypatch, caplog):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    task = Task(30, 4, 0.7, seed=0)
    C0 = init_sphere(5, 30, numpy_generator(0, "init"))
    with caplog.at_level(logging.WARNING, logger="slr.training.kernels"):
        algo = ReducedSGD(task, ERF, C0, lr=1e-2, batch_size=3, projected=True, generator=torch_generator(0, "train"))
        pgd = PopulationPGD(ReducedTask.of(task, 4), C0, lr=1e-2, M=task.M, L=4, gamma=0.7)
    assert algo._kernel is None and algo.kernel == "numpy" and pgd.kernel == "numpy"
    assert "reduced SGD step kernel could not be built" in caplog.text and "/nonexistent/cc" in caplog.text
    assert "population PGD step kernel could not be built" in caplog.text
    algo.step(1.0)
    pgd.step(1.0)
    assert np.isfinite(algo.KV).all() and np.isfinite(pgd.KV).all()
    hist = train(pgd, steps=10, log_every=5, schedule=lambda t: 1.0, log=lambda *a: [])  # the step-by-step loop
    assert hist.steps_done == 10
    with pytest.raises(RuntimeError, match="not available"):
        ReducedSGD(task, ERF, C0, lr=1e-2, batch_size=3, projected=True, generator=torch_generator(0, "train"),
                   kernel=True)
    with pytest.raises(RuntimeError, match="not available"):
        PopulationPGD(ReducedTask.of(task, 4), C0, lr=1e-2, M=task.M, L=4, gamma=0.7, kernel=True)
    assert not any(fresh_kernel.glob("*.so"))


def test_slr_kernel_0_disables_them(fresh_kernel, monkeypatch):
    monkeypatch.setenv("SLR_KERNEL", "0")
    task = Task(30, 4, 0.7, seed=0)
    C0 = init_sphere(5, 30, numpy_generator(0, "init"))
    algo = ReducedSGD(task, ERF, C0, lr=1e-2, batch_size=3, projected=True, generator=torch_generator(0, "train"))
    pgd = PopulationPGD(ReducedTask.of(task, 4), C0, lr=1e-2, M=task.M, L=4, gamma=0.7)
    assert algo._kernel is None and pgd.kernel == "numpy"


def test_exploded_norm_is_the_kernels_threshold():
    """The kernels receive the loop's threshold: a state at 2x the threshold is a divergence in both."""
    task = Task(30, 4, GAMMA, eps=0.1, seed=0)
    algo = ReducedSGD(task, ERF, init_sphere(3, 30, numpy_generator(0, "init")) * 2 * EXPLODED_NORM, lr=1e-9,
                      batch_size=2, projected=False, generator=torch_generator(0, "train"), kernel=True)
    t, at = algo.advance(10, np.ones(5))
    assert t == 11 and (at == 11).all() and np.isnan(algo.KV).all()


def test_without_scipys_c_functions_pgd_runs_its_numpy_step(fresh_kernel, monkeypatch, caplog):
    from scipy.special import cython_special

    monkeypatch.setattr(cython_special, "__pyx_capi__", {})
    task = Task(30, 4, 0.7, seed=0)
    with caplog.at_level(logging.WARNING, logger="slr.training.kernels"):
        pgd = PopulationPGD(ReducedTask.of(task, 4), init_sphere(3, 30, numpy_generator(0, "init")), lr=1e-2,
                            M=task.M, L=4, gamma=0.7)
    assert pgd.kernel == "numpy" and "owens_t" in caplog.text
