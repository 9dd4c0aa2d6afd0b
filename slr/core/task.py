"""The single-location regression task (docs/task-and-predictors.md §1): ``k*``, ``v*`` and the sampler of ``(X, y,
J0)``."""
from __future__ import annotations

from typing import NamedTuple

import torch

from slr.core.seeding import torch_generator
from slr.theory import signal_norm


class Batch(NamedTuple):
    """Samples of the task: tokens ``X`` (..., L, d), outputs ``y``, latent positions ``J0`` and ``W = <X_J0, v*>``.

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
    """

    def __init__(self, d: int, L: int, gamma: float, eps: float = 0.0, signal: float | None = None, seed: int = 0,
                 *, axes: str = "random", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64):
        if d < 2:
            raise ValueError(f"d must be >= 2 so that k* and v* can be orthogonal, got {d}")
        if L < 1:
            raise ValueError(f"L must be >= 1, got {L}")
        if not gamma > 0 or not eps >= 0 or (signal is not None and not signal > 0):
            raise ValueError(f"need gamma > 0, eps >= 0 and signal > 0, got {gamma}, {eps}, {signal}")
        if axes not in ("random", "fixed"):
            raise ValueError(f"axes must be 'random' or 'fixed', got {axes!r}")
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
        return f"Task(d={self.d}, L={self.L}, gamma={self.gamma:g}, eps={self.eps:g}, M={self.M:g})"

    def sample(self, n: int | tuple[int, ...], generator: torch.Generator | None = None,
               dtype: torch.dtype | None = None) -> Batch:
        """Draw ``n`` independent sequences (``n`` may be a shape, e.g. ``(repeats, batch)``): ``X`` is (*n, L, d)."""
        shape, dtype = as_shape(n), dtype or self.dtype
        kw = dict(generator=generator, device=self.device)
        X = torch.randn(*shape, self.L, self.d, dtype=dtype, **kw)  # (*n, L, d)
        J0 = torch.randint(0, self.L, shape, **kw)  # (*n,)
        informative = torch.nn.functional.one_hot(J0, self.L).bool()  # (*n, L)
        X[informative] = self.M * self.k_star.to(dtype) + self.gamma * X[informative]
        W = X[informative] @ self.v_star.to(dtype)  # (prod n,)
        W = W.reshape(shape)
        y = W + self.eps * torch.randn(shape, dtype=dtype, **kw)
        return Batch(X, y, J0, W)
