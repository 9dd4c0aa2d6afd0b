#!/usr/bin/env python
"""Your own model in slr: a torch module, and the command that trains it and compares it with the Bayes-optimal
estimator on the single-location regression task.

    python examples/my_model.py                         # a quick run (a few seconds)
    python examples/my_model.py task.d=20 train.steps=3000 +predictor.model.width=64   # any slr override

is the command

    cd examples && python -m slr predictor=module predictor.model._target_=my_model.ScoredAttention \\
        train.optimizer=adam train.lr=0.01 ...

(``python -m slr`` finds ``my_model`` because the working directory is on the path; for the ``slr`` command put the
folder on ``PYTHONPATH``). slr builds one module per repeat with ``ScoredAttention(d=task.d, L=task.L, width=...)``,
checks it on a tiny batch (:func:`slr.models.probe`), trains it and writes the run folder: ``summary.json`` (its excess
risk beside the oracle's, the linear and the Bayes-optimal one), ``metrics.csv`` and ``figures/``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class ScoredAttention(nn.Module):
    """Attention over the tokens with a learned score: each token ``x_l`` (of ``X``, (B, L, d)) gets the score
    ``MLP(x_l)``, the readout is the softmax-weighted mean of the token values ``x_l . v``."""

    def __init__(self, d: int, L: int, width: int = 16):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, 1))
        self.value = nn.Linear(d, 1, bias=False)

    def attention(self, X: torch.Tensor) -> torch.Tensor:
        """The readout's weights on the tokens, (B, L) -> slr reports the mean weight on the informative token."""
        return torch.softmax(self.score(X).squeeze(-1), dim=-1)  # (B, L)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return (self.attention(X) * self.value(X).squeeze(-1)).sum(-1)  # (B,)


# a quick run: small task, few steps, small evaluation; anything on the command line is added after (and wins)
QUICK = ["task.d=8", "task.L=4", "train.steps=400", "train.log_every=50", "train.repeats=4", "train.batch_size=64",
         "train.optimizer=adam", "train.lr=0.01", "eval.n_test=2000", "eval.bayes_is=2000", "name=my_model"]


def command(*overrides: str) -> list[str]:
    """The slr command line that trains :class:`ScoredAttention`."""
    return [sys.executable, "-m", "slr", "predictor=module",
            f"predictor.model._target_={__name__ if __name__ != '__main__' else 'my_model'}.ScoredAttention",
            *QUICK, *overrides]


def main(argv: list[str]) -> int:
    cmd = command(*argv)
    print("$ cd examples &&", " ".join(["python", *cmd[1:]]), flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    return subprocess.run(cmd, cwd=os.getcwd(), env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
