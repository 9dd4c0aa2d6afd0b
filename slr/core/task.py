"""The single-location regression task (docs/task-and-predictors.md §1) and its variants (docs/variants.md):
``k*``, ``v*`` and the sampler of ``(X, y, J0)``."""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch

from slr.core.seeding import numpy_from_torch, torch_generator
from slr.theory import signal_norm


TOKEN_LAWS = ("gaussian", "student_t")


class Batch(NamedTuple):
    """Samples of the task: tokens ``X`` (..., L, d), outputs ``y``, latent positions ``J0`` and ``W = <X_J0, v*>``.

    With ``s = n_informative > 1`` informative tokens, ``J0`` is (..., s) (the sorted positions of the set ``S``) and
    ``W = sum_{j in S} <X_j, v*>``.

    ``X`` is a tensor, or :class:`slr.core.reduced.ReducedTokens` for the dimension-free sampler (docs/reduction.md §2).
    """

    X: torch.Tensor
    y: torch.Tensor
    J0: torch.Tensor
    W: torch.Tensor


def orthonormal_columns(A: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt of the columns of ``A`` (..., d, m), by QR with the signs fixed so that column ``j`` has a
    non-negative component on the ``j``-th column of ``A``: a function of ``A`` alone (..., d, min(d, m))."""
    Q, R = torch.linalg.qr(A)
    return Q * torch.where(torch.diagonal(R, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(Q.dtype).unsqueeze(-2)


def as_shape(n: int | tuple[int, ...]) -> tuple[int, ...]:
    """``n`` as a shape tuple (an int is a number of samples)."""
    return (int(n),) if isinstance(n, int) else tuple(int(m) for m in n)


class Task:
    """Single-location regression (docs/task-and-predictors.md §1).

    ``X_{J0} ~ N(M k*, gamma^2 I_d)``, ``X_l ~ N(0, I_d)`` for ``l != J0``, ``J0 ~ Uniform{0..L-1}``,
    ``Y = <X_{J0}, v*> + xi``, ``xi ~ N(0, eps^2)``. ``k*``, ``v*`` are orthonormal, drawn from ``seed``
    (or the first two axes when ``axes="fixed"``). ``signal=None`` means ``M = sqrt(d/2)``.

    Variants (``docs/variants.md``): ``prior`` (L non-negative weights, normalised; None is uniform) is the law of
    ``J0``; ``n_informative = s`` draws a uniformly random set ``S`` of ``s`` informative positions and
    ``W = sum_{j in S} <X_j, v*>`` (``s > 1`` needs the uniform prior); ``tokens="student_t"`` makes every
    coordinate of ``Z`` (noise tokens ``Z``, informative ``M k* + gamma Z``) a Student-t with ``df > 2`` degrees of
    freedom scaled to unit variance.
    """

    def __init__(self, d: int, L: int, gamma: float, eps: float = 0.0, signal: float | None = None, seed: int = 0,
                 *, axes: str = "random", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                 prior: Sequence[float] | None = None, n_informative: int = 1, tokens: str = "gaussian",
                 df: float = math.inf):
        if d < 2:
            raise ValueError(f"d must be >= 2 so that k* and v* can be orthogonal, got {d}")
        if L < 1:
            raise ValueError(f"L must be >= 1, got {L}")
        if not gamma > 0 or not eps >= 0 or (signal is not None and not signal > 0):
            raise ValueError(f"need gamma > 0, eps >= 0 and signal > 0, got {gamma}, {eps}, {signal}")
        if axes not in ("random", "fixed"):
            raise ValueError(f"axes must be 'random' or 'fixed', got {axes!r}")
        if not 1 <= n_informative <= L:
            raise ValueError(f"n_informative must be in 1..L={L}, got {n_informative}")
        if tokens not in TOKEN_LAWS or (tokens == "student_t" and not df > 2):
            raise ValueError(f"tokens must be one of {TOKEN_LAWS} (student_t with df > 2), got {tokens!r}, df={df}")
        if prior is not None:
            w = torch.as_tensor([float(x) for x in prior], dtype=torch.float64)
            if w.shape != (L,) or not torch.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
                raise ValueError(f"prior must be {L} finite non-negative weights, not all zero, got {list(prior)}")
            if n_informative > 1:
                raise ValueError("a non-uniform prior needs n_informative = 1")
            prior = w / w.sum()
        self.prior, self.n_informative, self.tokens = prior, int(n_informative), tokens
        self.df = float(df) if tokens == "student_t" else math.inf
        self.d, self.L, self.gamma, self.eps, self.signal, self.seed = int(d), int(L), float(gamma), float(eps), signal, seed
        self.M = signal_norm(d, signal)
        self.device, self.dtype = torch.device(device), dtype
        if axes == "fixed":
            basis = torch.eye(d, 2, dtype=torch.float64)
        else:  # orthonormalise two Gaussian vectors; the sign fix makes the result a function of the draws only
            basis = orthonormal_columns(torch.randn(d, 2, generator=torch_generator(seed, "task"), dtype=torch.float64))
        self.k_star = basis[:, 0].to(device=self.device, dtype=dtype)  # (d,)
        self.v_star = basis[:, 1].to(device=self.device, dtype=dtype)  # (d,)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.variant().items() if k != "name")
        return f"Task(d={self.d}, L={self.L}, gamma={self.gamma:g}, eps={self.eps:g}, M={self.M:g}{extra})"

    @property
    def gaussian(self) -> bool:
        return self.tokens == "gaussian"

    def variant(self) -> dict:
        """What of the task differs from the paper's (recorded in ``summary.json``); ``name`` is ``paper`` when none."""
        out: dict = {}
        if self.prior is not None:
            out["prior"] = [round(float(p), 12) for p in self.prior]
        if self.n_informative > 1:
            out["n_informative"] = self.n_informative
        if not self.gaussian:
            out.update(tokens=self.tokens, df=self.df)
        return dict(name="+".join(k for k in ("prior", "n_informative", "tokens") if k in out) or "paper", **out)

    def positions(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """The informative positions: ``J0`` (*shape,) drawn from the prior (uniform by default), or for ``s > 1`` a
        uniformly random set of ``s`` positions (*shape, s), sorted."""
        kw = dict(generator=generator, device=self.device)
        if self.n_informative > 1:  # the s smallest of L i.i.d. uniforms sit at a uniformly random s-subset
            return torch.rand(*shape, self.L, **kw).argsort(-1)[..., :self.n_informative].sort(-1).values
        if self.prior is None:
            return torch.randint(0, self.L, shape, **kw)
        n = math.prod(shape)
        return torch.multinomial(self.prior.to(self.device), max(n, 1), replacement=True, generator=generator)[:n].reshape(shape)

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
        """Standardised tokens ``Z`` (*shape, L, d): i.i.d. N(0, 1) coordinates, or Student-t(df) times
        ``sqrt((df-2)/df)`` (unit variance), drawn from a numpy stream seeded by ``generator``."""
        if self.gaussian:
            return torch.randn(*shape, self.L, self.d, dtype=dtype, generator=generator, device=self.device)
        rng = numpy_from_torch(generator) if generator is not None else np.random.default_rng()
        t = rng.standard_t(self.df, (*shape, self.L, self.d)) * math.sqrt((self.df - 2.0) / self.df)
        return torch.as_tensor(t, dtype=dtype, device=self.device)

    def sample(self, n: int | tuple[int, ...], generator: torch.Generator | None = None,
               dtype: torch.dtype | None = None) -> Batch:
        """Draw ``n`` independent sequences (``n`` may be a shape, e.g. ``(repeats, batch)``): ``X`` is (*n, L, d)."""
        shape, dtype = as_shape(n), dtype or self.dtype
        kw = dict(generator=generator, device=self.device)
        X = self.noise(shape, generator, dtype)  # (*n, L, d)
        J0 = self.positions(shape, generator)  # (*n,) or (*n, s)
        informative = torch.nn.functional.one_hot(J0, self.L).bool()  # (*n, L) or (*n, s, L)
        if self.n_informative > 1:
            informative = informative.any(-2)  # (*n, L)
        X[informative] = self.M * self.k_star.to(dtype) + self.gamma * X[informative]
        W = X[informative] @ self.v_star.to(dtype)  # (prod n * s,)
        W = W.reshape(*shape, self.n_informative).sum(-1) if self.n_informative > 1 else W.reshape(shape)
        y = W + self.eps * torch.randn(shape, dtype=dtype, **kw)
        return Batch(X, y, J0, W)
