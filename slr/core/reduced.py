"""Exact dimension-free sampling (docs/reduction.md).

A token enters every predictor only through its projections on a few directions (``k*``, ``v*``, ``k``, ``v``)
and, for the Bayes-optimal estimator with ``gamma != 1``, its squared norm. Its component orthogonal to an
orthonormal basis ``E`` of those directions is isotropic Gaussian and independent of the projections, so it is
enough to draw the ``r`` coordinates ``z_l = E^T X_l`` and the residual squared norm ``q_l`` (chi-square with
``d - r`` degrees of freedom, times ``gamma^2`` at ``J0``). The cost does not grow with ``d``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from slr.core.seeding import numpy_from_torch
from slr.core.task import Batch, Task, as_shape, orthonormal_columns
from slr.theory import signal_norm


@dataclass(frozen=True)
class ReducedTokens:
    """Tokens known by their coordinates ``Z`` (..., L, r) on an orthonormal basis and residual norms ``q`` (..., L)."""

    Z: torch.Tensor
    q: torch.Tensor

    def __matmul__(self, U: torch.Tensor) -> torch.Tensor:
        """``<X_l, u_j>`` for the columns of ``U`` given in the same basis: ``Z @ U``."""
        return self.Z @ U

    def square_norms(self) -> torch.Tensor:
        """``||X_l||^2 = ||z_l||^2 + q_l`` (..., L)."""
        return self.Z.square().sum(-1) + self.q


class ReducedTask:
    """The task of docs/task-and-predictors.md §1 in coordinates on ``(k*, v*, e_3, ..., e_r)``: ``k* = e_1``, ``v* =
    e_2`` in ``R^r``.

    ``sample`` is exact in distribution for every quantity that depends on tokens only through their
    coordinates on the basis and their norms (docs/reduction.md).
    """

    def __init__(self, d: int, L: int, gamma: float, eps: float = 0.0, signal: float | None = None, *, r: int = 4,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64, seed: int = 0,
                 prior: torch.Tensor | None = None, n_informative: int = 1):
        if not 2 <= r <= d:
            raise ValueError(f"the reduced basis needs 2 <= r <= d, got r={r}, d={d}")
        if not 1 <= n_informative <= L or (prior is not None and n_informative > 1):
            raise ValueError(f"need 1 <= n_informative <= L and a uniform prior when n_informative > 1, got "
                             f"n_informative={n_informative}, L={L}, prior={prior}")
        self.prior = None if prior is None else torch.as_tensor(prior, dtype=torch.float64)
        if self.prior is not None:
            self.prior = self.prior / self.prior.sum()
        self.n_informative, self.tokens, self.df = int(n_informative), "gaussian", float("inf")
        self.d, self.L, self.gamma, self.eps, self.signal, self.r = int(d), int(L), float(gamma), float(eps), signal, r
        self.seed = seed  # the run's seed (the reduced task itself has no random k*, v*)
        self.M = signal_norm(d, signal)
        self.device, self.dtype = torch.device(device), dtype
        self.k_star = torch.eye(r, dtype=dtype, device=self.device)[0]
        self.v_star = torch.eye(r, dtype=dtype, device=self.device)[1]

    @classmethod
    def of(cls, task, r: int = 4) -> "ReducedTask":
        """The same task seen through an orthonormal basis whose first two vectors are ``k*``, ``v*`` (Gaussian
        tokens only: the complement of the basis is then an independent isotropic Gaussian)."""
        if getattr(task, "tokens", "gaussian") != "gaussian":
            raise ValueError(f"the reduced simulator is not available for {task.tokens} tokens (it needs Gaussian tokens)")
        return cls(task.d, task.L, task.gamma, task.eps, task.signal, r=r, device=task.device, dtype=task.dtype,
                   seed=getattr(task, "seed", 0), prior=getattr(task, "prior", None),
                   n_informative=getattr(task, "n_informative", 1))

    gaussian = True  # the reduced sampler exists for Gaussian tokens only
    variant = Task.variant  # what of the task differs from the paper's (docs/variants.md)

    def __repr__(self) -> str:
        return f"ReducedTask(d={self.d}, L={self.L}, gamma={self.gamma:g}, eps={self.eps:g}, r={self.r})"

    def sample(self, n: int | tuple[int, ...], generator: torch.Generator | None = None,
               dtype: torch.dtype | None = None) -> Batch:
        """``n`` sequences whose tokens are :class:`ReducedTokens`: ``Z`` (*n, L, r), ``q`` (*n, L).

        Drawn by numpy (a generator seeded from ``generator``), whose float64 normals cost about half of torch's:
        this sampler is what the Monte Carlo test excess logged during reduced training draws every few steps.
        With a prior ``J0`` is drawn from it; with ``s > 1`` informative tokens ``J0`` is (*n, s) and ``W`` their sum.
        """
        if self.prior is not None or self.n_informative > 1:
            return self._sample_variant(as_shape(n), generator, dtype or self.dtype)
        shape, dtype = as_shape(n), dtype or self.dtype
        rng = numpy_from_torch(generator) if generator is not None else np.random.default_rng()
        Z = rng.standard_normal((*shape, self.L, self.r))  # (*n, L, r)
        J0 = rng.integers(0, self.L, shape)  # (*n,)
        xi = rng.standard_normal(shape)
        q = rng.chisquare(self.d - self.r, (*shape, self.L)) if self.d > self.r else np.zeros((*shape, self.L))
        at = J0[..., None]  # the informative token: z = M k* + gamma z (k* = e_1), residual norm times gamma^2
        z0 = self.gamma * np.take_along_axis(Z, at[..., None], axis=-2)  # (*n, 1, r)
        z0[..., 0] += self.M
        np.put_along_axis(Z, at[..., None], z0, axis=-2)
        np.put_along_axis(q, at, self.gamma**2 * np.take_along_axis(q, at, axis=-1), axis=-1)
        W = z0[..., 0, 1]  # v* = e_2
        as_tensor = lambda a: torch.as_tensor(a, dtype=dtype, device=self.device)  # noqa: E731
        return Batch(ReducedTokens(as_tensor(Z), as_tensor(q)), as_tensor(W + self.eps * xi),
                     torch.as_tensor(J0, device=self.device), as_tensor(W))

    def _sample_variant(self, shape: tuple[int, ...], generator, dtype) -> Batch:
        """:meth:`sample` with a position prior or a set of ``s`` informative tokens (``docs/variants.md``)."""
        rng = numpy_from_torch(generator) if generator is not None else np.random.default_rng()
        s = self.n_informative
        Z = rng.standard_normal((*shape, self.L, self.r))  # (*n, L, r)
        if s > 1:  # a uniformly random s-subset: the s smallest of L uniforms
            J0 = np.sort(np.argsort(rng.random((*shape, self.L)), axis=-1)[..., :s], axis=-1)  # (*n, s)
            informative = (np.arange(self.L) == J0[..., None]).any(-2)  # (*n, L)
        else:
            J0 = rng.choice(self.L, size=shape, p=self.prior.numpy())  # (*n,)
            informative = np.arange(self.L) == J0[..., None]
        xi = rng.standard_normal(shape)
        q = rng.chisquare(self.d - self.r, (*shape, self.L)) if self.d > self.r else np.zeros((*shape, self.L))
        scale = np.where(informative, self.gamma, 1.0)  # (*n, L)
        Z = Z * scale[..., None]
        Z[..., 0] += self.M * informative  # k* = e_1
        q = q * scale**2
        W = (Z[..., 1] * informative).sum(-1)  # v* = e_2
        as_tensor = lambda a: torch.as_tensor(a, dtype=dtype, device=self.device)  # noqa: E731
        return Batch(ReducedTokens(as_tensor(Z), as_tensor(q)), as_tensor(W + self.eps * xi),
                     torch.as_tensor(J0, device=self.device), as_tensor(W))


def span_basis(k_star: torch.Tensor, v_star: torch.Tensor, *vectors: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (..., d, 2 + len(vectors)) whose first columns are ``k*``, ``v*`` and whose span holds ``vectors``.

    Gram-Schmidt by QR with the signs fixed so that column j has a non-negative component on the j-th input;
    a vector already in the span of the previous ones gets an arbitrary orthonormal completion.
    """
    columns = [k_star, v_star, *vectors]
    batch = torch.broadcast_shapes(*(c.shape[:-1] for c in columns))
    A = torch.stack([c.to(torch.float64).expand(*batch, c.shape[-1]) for c in columns], dim=-1)  # (..., d, m)
    return orthonormal_columns(A)
