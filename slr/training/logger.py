"""The one step logger of every model family: what is logged every ``log_every`` steps, one row per live repeat.

A row holds the overlaps of ``(k, v)`` (or of a module's effective directions, when it defines them), the closed-form
excess (when the predictor has one), the Monte Carlo excess on the run's logged test set with its standard error
(stochastic training), the mean attention on ``J0`` on that set (when the writer has the column), and the training
loss on a fixed training set (ERM).
"""
from __future__ import annotations

import numpy as np

from slr.core.task import Task
from slr.io import MetricsWriter
from slr.training.algorithms import OVERLAPS, Algorithm, FixedTrainingSet


class StepLogger:
    """Makes the metrics rows of one logged step (one per live repeat) and appends them to ``metrics.csv``."""

    def __init__(self, task: Task, writer: MetricsWriter, n_test: int):
        self.task, self.writer, self.n_test = task, writer, int(n_test)
        self.attention = "attention_on_J0" in writer.columns
        self.test_set = None  # drawn at the first logged step, on the algorithm's evaluation task

    def __call__(self, t: int, lam: float | None, algo: Algorithm, alive: np.ndarray) -> list[dict]:
        cols = {}
        if algo.defines_directions and getattr(self.task, "directions", True):  # a user's task may have no k*, v*
            o = algo.overlaps()
            cols = {k: o[k] for k in (*OVERLAPS, "norm_k", "norm_v")}
            cols["dist_to_M"] = np.sqrt(o["theta"] ** 2 + o["eta"] ** 2 + o["rho"] ** 2)
            # the closed form assumes Gaussian tokens
            excess = algo.closed_form_excess(lam, o, self.task) if getattr(self.task, "gaussian", True) else None
            if excess is not None:
                cols["excess"] = excess
        if algo.stochastic and self.n_test > 0:
            cols.update(self._test_excess(algo, lam))
        if isinstance(algo, FixedTrainingSet):
            cols["train_loss"] = algo.train_loss(lam)
        rows = [dict(step=t, repeat=r, lam=lam, **{k: float(v[r]) for k, v in cols.items()})
                for r in np.flatnonzero(alive)]
        self.writer.write(rows)
        return rows

    def _test_excess(self, algo: Algorithm, lam: float | None) -> dict:
        """Monte Carlo excess of each repeat on the run's logged test set (the same sequences at every step), its
        standard error, and the attention on ``J0`` when logged."""
        if self.test_set is None:
            from slr.core.evaluate import LoggedTestSet

            self.test_set = LoggedTestSet(algo.eval_task, self.n_test, self.task.seed, dtype=algo.log_dtype)
        m = self.test_set.excess(algo.predictor(lam, dtype=algo.log_dtype), attention=self.attention)
        cols = dict(test_excess=m.excess, test_excess_se=m.se)
        if m.attention_on_J0 is not None:
            cols["attention_on_J0"] = m.attention_on_J0
        return cols
