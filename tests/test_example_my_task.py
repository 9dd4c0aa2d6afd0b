"""examples/my_task.py, the custom task users copy: its command runs through ``slr`` (summary, table, overlaps, the
oracle equal to the task's Bayes predictor), its Bayes formula against the Gaussian posterior written from the
densities, and broken tasks refused at config time with the reason (docs/custom-task.md)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from slr.app.config import ConfigError, check
from slr.app.run import run
from slr.core.task import Batch
from slr.results.tables import comparison_table

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["task=custom", "task._target_=examples.my_task.MyTask", "+task.mu=3.0", "+task.eps=0.1",
           "predictor=softmax", "predictor.lam=3.0", "train.steps=300", "train.repeats=2", "eval.n_test=4000"]


@pytest.fixture
def importable(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))


def test_the_example_command_runs(make_cfg, importable, tmp_path):
    s = run(make_cfg(*COMMAND, "figures=false"), tmp_path)
    e = s["excess"]
    assert s["status"] == "ok" and s["task"]["variant"]["name"] == "custom" and s["task"]["variant"]["bayes"]
    assert 0 < e["bayes"]["mc"] < e["trained"]["mc"]
    # the oracle at lam = mu with k*, v* is the task's Bayes predictor: no excess over it, on the same samples
    assert abs(e["oracle"]["over_bayes"]) < 1e-12 and e["oracle"]["mc"] == pytest.approx(e["bayes"]["mc"])
    assert math.isfinite(s["final_overlaps"]["median"]["kappa"])
    assert "Bayes-optimal (the task's)" in comparison_table(e)


def test_the_example_bayes_is_the_posterior_mean(importable):
    """``softmax(mu <X_l,k*>)`` against the posterior from the Gaussian densities of the whole sequence."""
    from examples.my_task import MyTask

    task = MyTask(d=6, L=4, seed=1, mu=2.0)
    X = task.sample(50, torch.Generator().manual_seed(0)).X
    mu = task.mu * task.k_star
    logp = torch.stack([-0.5 * ((X[:, l] - mu) ** 2).sum(-1) - 0.5 * (X.square().sum((-1, -2)) - X[:, l].square().sum(-1))
                        for l in range(4)], -1)  # (n, L): log density of the sequence given J0 = l, up to a constant
    post = torch.softmax(logp, -1)
    assert torch.allclose(task.bayes_predict(X), (post * (X @ task.v_star)).sum(-1), atol=1e-12)


class WrongShape:
    def __init__(self, d, L, seed):
        self.d, self.L = d, L

    def sample(self, n, generator):
        X = torch.randn(n, self.L, self.d + 1, generator=generator)
        return Batch(X, X[:, 0, 0], torch.zeros(n, dtype=torch.long), X[:, 0, 0])


class NotFinite(WrongShape):
    def sample(self, n, generator):
        X = torch.randn(n, self.L, self.d, generator=generator)
        X[0, 0, 0] = math.nan
        return Batch(X, X[:, 0, 1], torch.zeros(n, dtype=torch.long), X[:, 0, 1])


class NotReproducible(WrongShape):
    def sample(self, n, generator):
        X = torch.randn(n, self.L, self.d)  # the global stream, not the generator given
        return Batch(X, X[:, 0, 1], torch.zeros(n, dtype=torch.long), X[:, 0, 1])


class BadBayes(NotFinite):
    def sample(self, n, generator):
        X = torch.randn(n, self.L, self.d, generator=generator)
        return Batch(X, X[:, 0, 1], torch.zeros(n, dtype=torch.long), X[:, 0, 1])

    def bayes_predict(self, X):
        return X[..., 0]  # (n, L), not (n,)


@pytest.mark.parametrize("target, reason", [
    ("no_such_module.Task", "building it with d=10, L=5, seed=0 failed"),
    ("test_example_my_task.WrongShape", "X of shape (7, 5, 10)"),
    ("test_example_my_task.NotFinite", "non-finite values in X"),
    ("test_example_my_task.NotReproducible", "not reproducible"),
    ("test_example_my_task.BadBayes", "bayes_predict must map X"),
])
def test_a_broken_task_is_refused_with_the_reason(make_cfg, target, reason):
    with pytest.raises(ConfigError) as err:
        check(make_cfg("task=custom", f"task._target_={target}"))
    assert err.value.key == "task._target_" and reason in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, field", [(["train=pgd", "train.simulator=full"], "train.algo"),
                                              (["predictor.lam=auto"], "predictor.lam"),
                                              (["eval.simulator=reduced"], "eval.simulator")])
def test_what_needs_the_paper_task_is_refused_for_a_custom_task(make_cfg, importable, overrides, field):
    with pytest.raises(ConfigError) as err:
        check(make_cfg(*COMMAND, *overrides))
    assert err.value.key == field


class Plain:
    """A task with neither bayes_predict nor k*, v*: W is the first coordinate of the informative token."""

    def __init__(self, d, L, seed, scale=1.0):
        self.d, self.L, self.scale = d, L, scale

    def sample(self, n, generator):
        X = torch.randn(n, self.L, self.d, generator=generator, dtype=torch.float64)
        J0 = torch.randint(0, self.L, (n,), generator=generator)
        W = self.scale * X[torch.arange(n), J0, 0]
        return Batch(X, W, J0, W)


def test_a_task_without_bayes_or_directions_runs_and_leaves_them_empty(make_cfg, tmp_path):
    s = run(make_cfg("task=custom", "task._target_=test_example_my_task.Plain", "+task.scale=2.0", "predictor.lam=1.0",
                     "train.steps=20", "train.repeats=2", "eval.n_test=500", "figures=false"), tmp_path)
    e = s["excess"]
    assert s["status"] == "ok" and set(e) == {"bayes", "trained"}
    assert math.isnan(e["bayes"]["mc"]) and math.isnan(e["trained"]["over_bayes"]) and e["trained"]["mc"] > 0
    assert e["trained"]["closed_form_note"] == "not available for a custom task"
    assert all(math.isnan(v) for v in s["final_overlaps"]["per_repeat"]["kappa"])
    assert "not given" in comparison_table(e)
