"""A user's own task behind slr's task interface (``docs/custom-task.md``).

The user writes a class built with ``d``, ``L``, ``seed`` (and any extra keys) whose ``sample(n, generator)`` returns a
:class:`slr.core.task.Batch` (``X`` (n, L, d), ``y`` (n,), ``J0`` (n,) or (n, s), ``W`` (n,): ``y`` minus its noise),
and optionally ``bayes_predict(X) -> (n,)`` (its Bayes-optimal predictor) and ``k_star``, ``v_star`` (d,) (then the
overlaps and the oracle are reported). :class:`UserTask` adapts it: any sample shape, float64 or float32, and a
reference predictor for the evaluator. :func:`probe` checks it once before a run, as a user's module is checked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from slr.core.seeding import torch_generator
from slr.core.task import Batch, as_shape


class TaskError(ValueError):
    """A user's task cannot be built, or its samples or predictions break the contract."""


@dataclass(frozen=True)
class UserBayes:
    """The user's ``bayes_predict`` as a predictor; without one, NaN (the excess over Bayes is then not available).

    It has no posterior variance: the evaluator then averages ``(f(X) - W)^2`` itself, and the excess over Bayes
    is the paired difference ``(f - W)^2 - (f* - W)^2``."""

    predict_fn: Callable | None
    name: str = "Bayes-optimal (the task's)"

    def predict(self, X) -> torch.Tensor:
        if self.predict_fn is None:
            return torch.full(X.shape[:-2], math.nan, dtype=X.dtype, device=X.device)
        flat = X.reshape(-1, *X.shape[-2:])
        return torch.as_tensor(self.predict_fn(flat), dtype=X.dtype, device=X.device).reshape(X.shape[:-2])


class UserTask:
    """slr's view of a user's task object: ``d``, ``L``, ``seed``, ``k_star``, ``v_star``, ``sample`` of any shape."""

    tokens, prior, df, signal, gaussian = "custom", None, math.inf, None, False
    gamma = eps = M = math.nan  # the paper's parameters mean nothing here: closed forms are not available

    def __init__(self, obj: Any, d: int, L: int, seed: int, target: str = "", device: str | torch.device = "cpu"):
        self.obj, self.d, self.L, self.seed, self.target = obj, int(d), int(L), seed, target
        self.device, self.dtype = torch.device(device), torch.float64
        ks, vs = getattr(obj, "k_star", None), getattr(obj, "v_star", None)
        self.directions = ks is not None and vs is not None  # overlaps and the oracle are reported only then
        if self.directions:
            ks, vs = (torch.as_tensor(u, dtype=torch.float64).reshape(-1) for u in (ks, vs))
        else:  # directions for the initialisations only (overlaps with them are not reported)
            g = torch.randn(d, 2, generator=torch_generator(seed, "task"), dtype=torch.float64)
            q = torch.linalg.qr(g)[0]
            ks, vs = q[:, 0], q[:, 1]
        self.k_star, self.v_star = ks.to(self.device), vs.to(self.device)
        self.n_informative = int(getattr(obj, "n_informative", 1))
        self.bayes = UserBayes(getattr(obj, "bayes_predict", None) if callable(getattr(obj, "bayes_predict", None))
                               else None)

    def __repr__(self) -> str:
        return f"UserTask({self.target}, d={self.d}, L={self.L})"

    def variant(self) -> dict:
        return dict(name="custom", target=self.target, bayes=self.bayes.predict_fn is not None,
                    directions=self.directions)

    def sample(self, n, generator: torch.Generator | None = None, dtype: torch.dtype | None = None) -> Batch:
        """``prod(n)`` sequences from the user's ``sample``, reshaped to ``n`` (an int or a shape)."""
        shape, dtype = as_shape(n), dtype or self.dtype
        b = self.obj.sample(math.prod(shape), generator)
        X = torch.as_tensor(b.X).to(self.device, dtype).reshape(*shape, self.L, self.d)
        J0 = torch.as_tensor(b.J0).to(self.device)
        J0 = J0.reshape(*shape, *J0.shape[1:])
        return Batch(X, torch.as_tensor(b.y).to(self.device, dtype).reshape(shape), J0,
                     torch.as_tensor(b.W).to(self.device, dtype).reshape(shape))


def probe(task: UserTask, n: int = 7) -> None:
    """Check a user's task on a small sample: ``sample(n, generator)`` returns a Batch of the right shapes, floating and
    finite, the same under the same generator; ``bayes_predict`` maps X to n finite numbers; ``k_star``, ``v_star`` are
    (d,). Raises :class:`TaskError` naming what is wrong."""
    d, L = task.d, task.L
    draws = []
    for _ in range(2):
        try:
            b = task.obj.sample(n, torch.Generator().manual_seed(0))
        except Exception as exc:
            raise TaskError(f"sample({n}, generator) failed ({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
        if not isinstance(b, Batch):
            raise TaskError(f"sample must return slr.core.task.Batch(X, y, J0, W), it returned {type(b).__name__}")
        for name, want in (("X", (n, L, d)), ("y", (n,)), ("W", (n,))):
            t = getattr(b, name)
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != want:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise TaskError(f"sample({n}) must give {name} of shape {want}, it gave {got}")
            if not t.is_floating_point():
                raise TaskError(f"sample must give a floating-point {name}, it gave {t.dtype}")
            if not torch.isfinite(t).all():
                raise TaskError(f"sample gave non-finite values in {name}")
        if not isinstance(b.J0, torch.Tensor) or b.J0.shape[:1] != (n,) or b.J0.dim() > 2 or \
                b.J0.is_floating_point() or (b.J0.numel() and not (0 <= int(b.J0.min()) <= int(b.J0.max()) < L)):
            raise TaskError(f"sample must give J0 of shape ({n},) or ({n}, s), integer positions in 0..{L - 1}")
        draws.append(b)
    if not all(torch.equal(getattr(draws[0], k), getattr(draws[1], k)) for k in ("X", "y", "J0", "W")):
        raise TaskError("sample is not reproducible: two calls with generators seeded alike gave different batches "
                        "(draw every random number from the generator given)")
    for name in ("k_star", "v_star"):
        u = getattr(task.obj, name, None)
        if u is not None and (not isinstance(u, torch.Tensor) or tuple(u.shape) != (d,) or not torch.isfinite(u).all()):
            raise TaskError(f"{name} must be a finite tensor of shape ({d},)")
    if task.bayes.predict_fn is not None:
        X = draws[0].X.to(torch.float64)
        try:
            f = task.bayes.predict_fn(X)
        except Exception as exc:
            raise TaskError(f"bayes_predict failed ({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
        if not isinstance(f, torch.Tensor) or tuple(f.shape) != (n,) or not torch.isfinite(f).all():
            got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise TaskError(f"bayes_predict must map X ({n}, {L}, {d}) to {n} finite numbers, it gave {got}")
