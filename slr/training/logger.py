"""What is logged every ``log_every`` steps of closed-form attention: the overlaps, the closed-form excess, the
Monte Carlo test excess of stochastic algorithms and ERM's training loss, one row per live repeat."""
from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from slr.core.task import Task
from slr.io import MetricsWriter
from slr.training.algorithms import Algorithm


class StepLogger:
    """Makes the metrics rows of one logged step (one per live repeat) and appends them to ``metrics.csv``."""

    def __init__(self, cfg: DictConfig, task: Task, writer: MetricsWriter):
        self.task, self.writer = task, writer
        self.n_test = int(cfg.train.get("log_test_size", 0))
        self.test_set = None  # drawn at the first logged step, on the algorithm's evaluation task

    def __call__(self, t: int, lam: float, algo: Algorithm, alive: np.ndarray) -> list[dict]:
        from slr import theory
        from slr.core.predictors import ERF
        from slr.training.algorithms import ERM, OVERLAPS

        o = algo.overlaps()
        cols = {k: o[k] for k in (*OVERLAPS, "norm_k", "norm_v")}
        cols["dist_to_M"] = np.sqrt(o["theta"] ** 2 + o["eta"] ** 2 + o["rho"] ** 2)
        if hasattr(algo, "expected_excess"):  # the SGD limit: E R over the fluctuation it carries
            cols["excess"] = algo.expected_excess(lam)
        elif algo.kind is ERF:
            cols["excess"] = theory.erf_excess(lam, *(o[k] for k in OVERLAPS), d=self.task.d, L=self.task.L,
                                               gamma=self.task.gamma, signal=self.task.signal,
                                               norm_k=o["norm_k"], norm_v=o["norm_v"])
        if algo.stochastic and self.n_test > 0:
            cols["test_excess"] = self._test_excess(algo, lam)
        if isinstance(algo, ERM):
            cols["train_loss"] = algo.train_loss(lam)
        rows = [dict(step=t, repeat=r, lam=lam, **{k: float(v[r]) for k, v in cols.items()})
                for r in np.flatnonzero(alive)]
        self.writer.write(rows)
        return rows

    def _test_excess(self, algo: Algorithm, lam: float) -> np.ndarray:
        """Monte Carlo excess of each repeat on the run's logged test set (the same sequences at every step)."""
        import dataclasses

        import torch

        if self.test_set is None:
            from slr.core.evaluate import LoggedTestSet

            self.test_set = LoggedTestSet(algo.eval_task, self.n_test, self.task.seed, dtype=torch.float32)
        p = algo.predictor(lam)
        return self.test_set.excess(dataclasses.replace(p, k=p.k.float(), v=p.v.float()))

