"""Your own task in slr: copy this file, change ``sample`` (and ``bayes_predict`` if you know your Bayes predictor).

Run it (from the folder holding ``examples/``; any importable module works the same way):

    python -m slr task=custom task._target_=examples.my_task.MyTask +task.mu=3.0 +task.eps=0.1 \\
        predictor=softmax predictor.lam=3.0 train.steps=300 train.repeats=2 eval.n_test=4000

slr builds the class with ``d``, ``L`` and ``seed`` (and every ``+task.NAME=value``), probes it once (shapes,
dtypes, finite values, the same batch under the same generator) and refuses a broken one with the reason. Then it
trains and evaluates any predictor on it exactly as on its own task: the excess risk ``E (f(X) - W)^2``, the excess
over your ``bayes_predict``, the overlaps with your ``k_star``, ``v_star`` and the oracle at ``k*``, ``v*``.

The task here: single-location regression with unit-scale tokens (``gamma = 1``) and an informative token shifted by
``mu k*``. Its Bayes predictor is softmax attention with ``lam k = mu k*``, ``v = v*`` (docs/custom-task.md).
"""
from __future__ import annotations

import torch

from slr.core.task import Batch


class MyTask:
    """``X_l ~ N(0, I_d)``, ``X_J0 ~ N(mu k*, I_d)`` with ``J0`` uniform, ``W = <X_J0, v*>``, ``y = W + eps xi``."""

    def __init__(self, d: int, L: int, seed: int, mu: float = 3.0, eps: float = 0.1):
        self.d, self.L, self.mu, self.eps = d, L, float(mu), float(eps)
        g = torch.Generator().manual_seed(int(seed))
        q, _ = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=torch.float64))
        self.k_star, self.v_star = q[:, 0].contiguous(), q[:, 1].contiguous()  # optional: overlaps and the oracle

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` sequences; every random number comes from ``generator`` (slr checks it)."""
        X = torch.randn(n, self.L, self.d, generator=generator, dtype=torch.float64)  # (n, L, d)
        J0 = torch.randint(0, self.L, (n,), generator=generator)  # (n,)
        X[torch.arange(n), J0] += self.mu * self.k_star
        W = X[torch.arange(n), J0] @ self.v_star  # (n,)
        y = W + self.eps * torch.randn(n, generator=generator, dtype=torch.float64)
        return Batch(X, y, J0, W)

    def bayes_predict(self, X: torch.Tensor) -> torch.Tensor:
        """Optional: ``E[W | X] = sum_l softmax_l(mu <X_l, k*>) <X_l, v*>`` (the likelihood ratio of token l is
        ``exp(mu <X_l, k*> - mu^2/2)``)."""
        pi = torch.softmax(self.mu * (X @ self.k_star.to(X.dtype)), dim=-1)  # (n, L)
        return (pi * (X @ self.v_star.to(X.dtype))).sum(-1)
