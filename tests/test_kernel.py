"""The compiled reduced-SGD step (slr/_reduced_step.c) against the numpy step it replaces, and its build.

Both consume the same random numbers, so their trajectories agree up to float32 rounding; the numpy step is the
one the statistical tests of SPEC 6 (test_reduced.py) were first written against, and they now run the kernel.
"""
import logging

import numpy as np
import pytest

import slr.kernel
from helpers import one_thread_per_module  # noqa: F401  (autouse: one torch thread in this module)
from slr.predictors import ERF, SOFTMAX
from slr.seeding import numpy_generator, torch_generator
from slr.task import Task
from slr.train import ReducedSGD, init_sphere


def pair(kind, projected, R=40, d=30, L=4, B=3, lr=1e-2, gamma=0.5**0.5):
    task = Task(d, L, gamma, eps=0.1, seed=0)
    C0 = init_sphere(R, d, numpy_generator(0, "init"))
    return [ReducedSGD(task, kind, C0, lr=lr, batch_size=B, projected=projected, generator=torch_generator(0, "train"),
                       kernel=k) for k in (True, False)]


@pytest.mark.parametrize("projected", [True, False])
@pytest.mark.parametrize("kind", [ERF, SOFTMAX], ids=lambda k: k.name)
def test_kernel_follows_the_numpy_step(kind, projected):
    compiled, numpy_step = pair(kind, projected)
    assert compiled._kernel is not None and numpy_step._kernel is None
    start = compiled.vectors()
    for t in range(400):  # two refills of the token block
        compiled.step(1.0)
        numpy_step.step(1.0)
        if t == 0:
            np.testing.assert_allclose(compiled.KV, numpy_step.KV, atol=2e-7, rtol=0)
    np.testing.assert_allclose(compiled.KV, numpy_step.KV, atol=2e-5, rtol=0)
    assert np.abs(compiled.KV - start).max() > 0.1  # the chain moved
    if projected:
        np.testing.assert_allclose(np.linalg.norm(compiled.KV, axis=-1), 1.0, atol=1e-12)
    assert np.all(compiled.KV[:, 0, 3] == 0)  # canonical: k has no e2 coordinate


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


def test_vectors_is_a_copy_of_the_state_updated_in_place():
    compiled, _ = pair(ERF, True)
    before = compiled.vectors()
    compiled.step(1.0)
    assert not np.array_equal(before, compiled.KV)


@pytest.fixture
def fresh_kernel(tmp_path, monkeypatch):
    """An empty kernel cache in tmp_path, and no kernel loaded yet in this process."""
    monkeypatch.setenv("SLR_CACHE_DIR", str(tmp_path / "cache"))
    slr.kernel.reduced_step.cache_clear()
    yield tmp_path / "cache"
    slr.kernel.reduced_step.cache_clear()


def test_kernel_is_built_once_into_the_cache(fresh_kernel):
    path = slr.kernel.build()
    assert path.parent == fresh_kernel and path.exists()
    mtime = path.stat().st_mtime_ns
    assert slr.kernel.build() == path and path.stat().st_mtime_ns == mtime
    assert [p.name for p in fresh_kernel.iterdir()] == [path.name]  # no temporary file left behind
    assert slr.kernel.reduced_step() is not None


def test_an_unwritable_cache_falls_back_to_the_temporary_directory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SLR_CACHE_DIR", str(blocker / "cache"))  # cannot be created: a file is in the way
    assert slr.kernel.cache_dir().name.startswith("slr-cache-")


def test_without_a_compiler_the_numpy_step_runs(fresh_kernel, monkeypatch, caplog):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    task = Task(30, 4, 0.7, seed=0)
    C0 = init_sphere(5, 30, numpy_generator(0, "init"))
    with caplog.at_level(logging.WARNING, logger="slr.kernel"):
        algo = ReducedSGD(task, ERF, C0, lr=1e-2, batch_size=3, projected=True, generator=torch_generator(0, "train"))
    assert algo._kernel is None
    assert "could not be built" in caplog.text and "/nonexistent/cc" in caplog.text
    algo.step(1.0)
    assert np.isfinite(algo.KV).all()
    with pytest.raises(RuntimeError, match="not available"):
        ReducedSGD(task, ERF, C0, lr=1e-2, batch_size=3, projected=True, generator=torch_generator(0, "train"),
                   kernel=True)
    assert not any(fresh_kernel.glob("*.so"))


def test_slr_kernel_0_disables_it(fresh_kernel, monkeypatch):
    monkeypatch.setenv("SLR_KERNEL", "0")
    task = Task(30, 4, 0.7, seed=0)
    algo = ReducedSGD(task, ERF, init_sphere(5, 30, numpy_generator(0, "init")), lr=1e-2, batch_size=3,
                      projected=True, generator=torch_generator(0, "train"))
    assert algo._kernel is None
