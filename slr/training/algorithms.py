"""Training of attention on single-location regression (docs/training.md, and docs/reduction.md for the reduced
simulators).

Every algorithm holds the ``R`` repeats' ``(k, v)`` as one array ``KV`` of shape (R, 2, D) and advances it by
one ``step(lam)``; :func:`train` is the one loop over steps around them (schedule, logging, divergence).
``D`` is ``d`` for the full simulators, and 4 for the reduced ones, whose coordinates are on
``(k*, v*, e_1, e_2)`` with ``e_1``, ``e_2`` spanning the parts of ``k``, ``v`` orthogonal to ``k*``, ``v*``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

import slr.training.kernels
from slr.core.predictors import ERF, NUMPY_OPS, TORCH_OPS, Attention, AttentionKind, LeastSquaresLinear
from slr.core.reduced import ReducedTask
from slr.core.seeding import numpy_from_torch
from slr.core.task import Batch, Task, orthonormal_columns
from slr.theory import OVERLAPS, ErfRiskGradient

EXPLODED_NORM = 1e6  # a repeat whose |k| or |v| passes this is declared diverged


# ----- initialisation: canonical coordinates (R, 2, 4) on (k*, v*, e1, e2), exact in distribution for any d -----
def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).sum(-1, keepdims=True))


def init_sphere(R: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """``k``, ``v`` independent and uniform on the sphere of ``R^d``: Gaussian coordinates on ``k*``, ``v*``, the
    rest of ``k`` as one chi-square norm, the rest of ``v`` split along ``k``'s residual and a chi-square norm."""
    C = np.zeros((R, 2, 4))
    C[:, 0, :2] = rng.standard_normal((R, 2))
    C[:, 0, 2] = np.sqrt(rng.chisquare(d - 2, R)) if d > 2 else 0.0
    C[:, 1, :3] = rng.standard_normal((R, 3)) if d > 2 else np.c_[rng.standard_normal((R, 2)), np.zeros(R)]
    C[:, 1, 3] = np.sqrt(rng.chisquare(d - 3, R)) if d > 3 else 0.0
    return _unit(C)


def init_manifold(R: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """On the invariant manifold ``k ⟂ v*``, ``v ⟂ k*``, ``v ⟂ k``: Gaussian vectors projected and normalised."""
    C = np.zeros((R, 2, 4))
    C[:, 0, 0] = rng.standard_normal(R)
    C[:, 0, 2] = np.sqrt(rng.chisquare(d - 2, R)) if d > 2 else 0.0
    C[:, 1, 1] = rng.standard_normal(R)
    C[:, 1, 3] = np.sqrt(rng.chisquare(d - 3, R)) if d > 3 else 0.0
    return _unit(C)


def init_oracle(R: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """``k = k*``, ``v = v*``."""
    C = np.zeros((R, 2, 4))
    C[:, 0, 0] = C[:, 1, 1] = 1.0
    return C


INITS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "sphere": init_sphere, "manifold": init_manifold, "oracle": init_oracle}


def embed(C: np.ndarray, task: Task, rng: np.random.Generator) -> torch.Tensor:
    """Canonical coordinates (R, 2, 4) -> vectors in ``R^d`` (R, 2, d), with ``e1``, ``e2`` uniformly random
    orthonormal vectors orthogonal to ``k*``, ``v*`` (exact in distribution: the task is invariant under rotations
    that fix ``k*`` and ``v*``)."""
    R, d = C.shape[0], task.d
    ks, vs = task.k_star.to(torch.float64).cpu(), task.v_star.to(torch.float64).cpu()
    g = torch.as_tensor(rng.standard_normal((R, d, 2)))
    A = torch.cat([torch.stack([ks, vs], -1).expand(R, d, 2), g], dim=-1)  # (R, d, 4)
    E = orthonormal_columns(A)  # (R, d, 4)
    return torch.as_tensor(C[..., : E.shape[-1]]) @ E.transpose(-1, -2)  # (R, 2, d); d < 4 keeps d coordinates


# ----- lam schedules (docs/training.md) -----------------------------------------------------------------------------
def lam_schedule(kind: str, lam0: float, rate: float) -> Callable[[int], float]:
    """``constant``: ``lam_t = lam0``; ``inverse``: ``lam_t = lam0 / (1 + rate t)``."""
    if kind == "constant":
        return lambda t: lam0
    if kind == "inverse":
        return lambda t: lam0 / (1.0 + rate * t)
    raise ValueError(f"train.lam_schedule must be 'constant' or 'inverse', got {kind!r}")


# ----- shared pieces of the updates -----------------------------------------------------------------------------
def tangent_step(KV, G, lr: float):
    """``k - lr g`` with the tangent gradient ``g = grad - <k, grad> k`` (same for ``v``): a step before the projection."""
    return KV - lr * (G - (KV * G).sum(-1)[..., None] * KV)


def retract(KV, G, lr: float, projected: bool):
    """One step on ``(k, v)`` (numpy or torch, shape (..., 2, D)): ``k <- (k - lr g)/||k - lr g||`` with the
    tangent gradient ``g = grad - <k, grad> k`` (docs/training.md, PGD on the population risk); a plain gradient step
    when not projected."""
    if not projected:
        return KV - lr * G
    N = tangent_step(KV, G, lr)
    return N / ((N * N).sum(-1)[..., None]) ** 0.5


def squared_loss_gradient(kind: AttentionKind, KV: torch.Tensor, X: torch.Tensor, y: torch.Tensor, lam: float):
    """Gradient of ``mean_b (T(X_b) - y_b)^2`` in ``(k, v)`` for each repeat, and the residuals ``T - y``.

    ``KV`` (R, 2, d), ``X`` (R, B, L, d), ``y`` (R, B); ``grad_k = sum alpha_bl X_bl``, ``grad_v = sum beta_bl X_bl``.
    """
    R, B, L, d = X.shape
    P = X @ KV.transpose(-1, -2).unsqueeze(1)  # (R, B, L, 2)
    T, dpk, dpv = kind.output_and_grads(P[..., 0], P[..., 1], lam, TORCH_OPS)
    r = T - y  # (R, B)
    AB = (2.0 / B) * r[:, None, :, None] * torch.stack([dpk, dpv], 1)  # (R, 2, B, L)
    return AB.reshape(R, 2, B * L) @ X.reshape(R, B * L, d), r  # (R, 2, d), (R, B)


# ----- the algorithms -------------------------------------------------------------------------------------------
class Algorithm:
    """State of ``R`` repeats of an attention predictor: ``KV`` (R, 2, D) in the coordinates of ``eval_task``."""

    KV: np.ndarray | torch.Tensor
    kind: AttentionKind
    eval_task: Task | ReducedTask
    stochastic = True  # whether a Monte Carlo test risk is worth logging
    kernel = "torch"  # what computes the steps: "compiled" (C kernel, see advance), "numpy" or "torch"
    defines_directions = True  # overlaps() are those of (k, v)
    log_dtype = torch.float32  # of the logged test excess: its rounding (1e-7) is far below its Monte Carlo error

    def step(self, lam: float) -> None:
        raise NotImplementedError

    def advance(self, t: int, lams: np.ndarray) -> tuple[int, np.ndarray]:
        """Steps ``t, t+1, ...`` at ``lams`` (one per step) in one call of a compiled kernel (``kernel ==
        "compiled"``), checking after every step, as :func:`train` does, whether a repeat diverged: such a repeat
        becomes NaN and is left alone. Returns the step count reached (``t + len(lams)``, or less if no repeat is
        left) and, per repeat, the step count at which it diverged in this call, or -1."""
        raise NotImplementedError

    def vectors(self) -> np.ndarray:
        """A copy of ``KV`` as float64 numpy (R, 2, D) (the reduced SGD updates its state in place)."""
        KV = self.KV
        return KV.detach().to("cpu", torch.float64).numpy() if isinstance(KV, torch.Tensor) else KV.copy()

    def overlaps(self) -> dict[str, np.ndarray]:
        """``kappa, nu, theta, eta, rho`` of the unit vectors and the norms ``|k|``, ``|v|``, each (R,)."""
        KV = self.vectors()
        ks = self.eval_task.k_star.detach().to("cpu", torch.float64).numpy()
        vs = self.eval_task.v_star.detach().to("cpu", torch.float64).numpy()
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            norms = np.sqrt((KV * KV).sum(-1))  # (R, 2)
            U = KV / norms[..., None]
            return dict(kappa=U[:, 0] @ ks, nu=U[:, 1] @ vs, theta=U[:, 1] @ ks, eta=U[:, 0] @ vs,
                        rho=(U[:, 0] * U[:, 1]).sum(-1), norm_k=norms[:, 0], norm_v=norms[:, 1])

    def predictor(self, lam: float, name: str | None = None, select: np.ndarray | None = None,
                  dtype: torch.dtype = torch.float64) -> Attention:
        """The current predictor, batched over repeats (those in ``select``, default all), in ``dtype`` on the
        evaluation task's device."""
        KV = torch.as_tensor(self.vectors(), device=self.eval_task.device, dtype=torch.float64)
        if select is not None:
            KV = KV[torch.as_tensor(select, device=KV.device)]
        KV = KV.to(dtype)
        return Attention(KV[:, 0], KV[:, 1], lam, self.kind, name or f"trained {self.kind.name} attention")

    def closed_form_excess(self, lam: float, o: dict, task: Task) -> np.ndarray | None:
        """The closed-form excess at the overlaps and norms ``o`` (each (R,)), when the attention kind has one."""
        return None if self.kind.excess is None else self.kind.excess(lam, o, task)

    def discard(self, mask: np.ndarray) -> None:
        """Stop the repeats in ``mask`` (diverged): their state becomes NaN and stays so."""
        idx = torch.as_tensor(mask) if isinstance(self.KV, torch.Tensor) else mask
        self.KV[idx] = float("nan")

    def fitted_baselines(self) -> list:
        """Baselines fitted on this algorithm's training data (ERM only)."""
        return []

    def details(self) -> dict:
        """Algorithm-specific entries of the summary's ``trained`` record (the flow's solver and evaluations)."""
        return {}


class FullSGD(Algorithm):
    """Online SGD in ``R^d``: a fresh batch each step, loss ``mean (T(X) - y)^2``, projected or not (docs/training.md,
    Online SGD)."""

    def __init__(self, task: Task, kind: AttentionKind, KV0: torch.Tensor, *, lr: float, batch_size: int,
                 projected: bool, generator: torch.Generator, dtype: torch.dtype):
        self.task, self.eval_task, self.kind = task, task, kind
        self.KV = KV0.to(task.device, dtype)
        self.lr, self.B, self.projected, self.gen, self.dtype = lr, batch_size, projected, generator, dtype

    def step(self, lam: float) -> None:
        X, y, _, _ = self.task.sample((self.KV.shape[0], self.B), self.gen, self.dtype)  # (R, B, L, d)
        G, _ = squared_loss_gradient(self.kind, self.KV, X, y, lam)
        self.KV = retract(self.KV, G, self.lr, self.projected)


class ReducedSGD(Algorithm):
    """Online SGD as the exact Markov chain on the canonical coordinates of ``(k, v)`` (docs/reduction.md §4).

    The state is ``k = (kappa, eta, a, 0)``, ``v = (theta, nu, b, c)`` on ``(k*, v*, e1, e2)`` (the five overlaps,
    and the two norms when not projected). Each step works in an orthonormal frame ``(f1, f2, f3, f4)`` of that
    span (:func:`frames`: ``k`` along ``f1``, ``v`` in ``span{f1, f2}``, ``v*`` in ``span{f1, f2, f3}``). A token
    enters the predictor only through its frame coordinates ``u1``, ``u2`` (``<X, k> = |k| u1``,
    ``<X, v> = <v, f1> u1 + <v, f2> u2``) and the label only through the informative token's ``u1, u2, u3``: those
    are drawn token by token, ``2 L + 2`` normals per sequence with the label noise (instead of ``4 L + 1`` for the
    four coordinates of every token). Given them, the gradients ``grad_k = sum alpha_bl X_bl``,
    ``grad_v = sum beta_bl X_bl`` depend on the rest linearly, through Gaussians independent of what was drawn, so
    the rest is drawn in aggregate, exactly: the noise tokens' ``f3`` parts as ``chol(S_noise) z``, every token's
    ``f4`` part as ``M <k*, f4> (sum_bj alpha_bj, sum_bj beta_bj) + chol(S) z`` (sums over the informative tokens,
    of mean ``M k*``), and the parts outside the span through their Gram matrix ``lr^2 Wishart_2(d - 4, S)``, drawn as
    ``lr (l A)(l A)^T`` with ``S = l l^T`` the out-of-span covariance ``sum s_bl^2 [alpha, beta]^T [alpha, beta]``
    and the Bartlett factor ``A``. The new canonical coordinates are then the Cholesky factor of the Gram matrix of
    the parts of ``k``, ``v`` orthogonal to ``k*``, ``v*``. With ``s = task.n_informative`` informative tokens
    (docs/variant-several-tokens.md) each of them is drawn like the one of ``s = 1`` (its ``u1, u2, u3``), the label
    is the sum of their ``<X_j, v*>``, and they are put first: the predictor is permutation invariant, so only their
    number per sequence matters (exchangeability). For ``s = 1`` the step is bitwise the one-token step.

    Random numbers: numpy's (its SFC64 bit generator, seeded from ``generator``, and its C distribution functions),
    in the order of :meth:`draw`; the tokens and the per-token arithmetic are float32, the state and its update float64.
    :meth:`step` is the numpy reference; :meth:`advance` runs many steps in one call of the compiled kernel
    (``_reduced_step.c``), which draws the same numbers itself and agrees with the reference up to float32
    rounding (``kernel=None``: the kernel if it can be built).
    """

    def __init__(self, task: Task, kind: AttentionKind, C0: np.ndarray, *, lr: float, batch_size: int,
                 projected: bool, generator: torch.Generator, kernel: bool | None = None):
        if task.d < 5:
            raise ValueError(f"the reduced SGD simulator needs d >= 5 (a non-empty complement of the 4-dim span), got d={task.d}")
        self.eval_task, self.kind = ReducedTask.of(task, 4), kind
        self.KV = np.array(C0, dtype=np.float64)
        self.d, self.L, self.M, self.gamma, self.eps = task.d, task.L, task.M, task.gamma, task.eps
        self.s = getattr(task, "n_informative", 1)  # informative tokens per sequence, put first
        self.lr, self.B, self.projected = lr, batch_size, projected
        # its bit generator feeds the kernel too: SFC64, numpy's fastest (about 15% faster steps than PCG64 here)
        self.rng = numpy_from_torch(generator, np.random.SFC64)
        fits = kind.kernel_id is not None and self.B * self.L <= slr.training.kernels.MAX_TOKENS  # the kernel's token
                                                                                                  # buffers
        self._kernel = slr.training.kernels.reduced_step() if fits and kernel is not False else None
        if kernel and self._kernel is None:
            raise RuntimeError(f"the compiled reduced SGD step is not available ({kind.name} attention, "
                               f"batch_size x L = {self.B * self.L} of at most {slr.training.kernels.MAX_TOKENS} tokens; "
                               "a build failure is logged as a warning)")
        self.kernel = "compiled" if self._kernel is not None else "numpy"

    def step(self, lam: float) -> None:
        if self._kernel is not None:
            self.advance(0, np.array([lam]))
            return
        self._numpy_step(lam)

    def advance(self, t: int, lams: np.ndarray) -> tuple[int, np.ndarray]:
        """Steps ``t, t+1, ...`` at ``lams`` in one kernel call; see :meth:`Algorithm.advance`."""
        self.KV = np.ascontiguousarray(self.KV, dtype=np.float64)
        lams = np.ascontiguousarray(lams, dtype=np.float64)
        at = np.full(len(self.KV), -1, dtype=np.int64)
        done = self._kernel(len(self.KV), self.B, self.L, self.s, self.kind.kernel_id, int(self.projected), self.d,
                            self.M, self.gamma, self.eps, self.lr, len(lams), lams.ctypes.data, self.KV.ctypes.data,
                            self.rng.bit_generator.ctypes.bit_generator.value, t, at.ctypes.data, EXPLODED_NORM)
        if done < 0:
            raise MemoryError("the reduced SGD kernel could not allocate its buffers")
        return t + done, at

    def draw(self) -> tuple[np.ndarray, ...]:
        """One step's random numbers, in the kernel's order: ``(u1, u2)`` of every token (R, B, L, 2) float32 (the
        ``s`` informative tokens first), the informative tokens' ``u3`` (R, B, s) and the label noise (R, B), float32;
        four aggregate normals per repeat (R, 4); ``lr`` times the Bartlett factor (R, 2, 2) of ``Wishart_2(d - 4, I)``."""
        R, B, L, rng = len(self.KV), self.B, self.L, self.rng
        U = rng.standard_normal((R, B, L, 2), dtype=np.float32)
        u3 = rng.standard_normal((R, B, self.s), dtype=np.float32)
        xi = rng.standard_normal((R, B), dtype=np.float32)
        z = rng.standard_normal((R, 4))
        return U, u3, xi, z, self.lr * bartlett2(rng, self.d - 4, R)

    def _numpy_step(self, lam: float) -> None:
        U, u3, xi, z, A = self.draw()
        C, B, s, f32 = self.KV, self.B, self.s, np.float32
        F = frames(C)  # (R, 4, 4): column j is f_{j+1} on (k*, v*, e1, e2)
        kk = (C[:, 0] * F[:, :, 0]).sum(-1)[:, None, None].astype(f32)  # |k|
        v1 = (C[:, 1] * F[:, :, 0]).sum(-1)[:, None, None].astype(f32)
        v2 = (C[:, 1] * F[:, :, 1]).sum(-1)[:, None, None].astype(f32)
        m = self.M * F[:, 0, :]  # (R, 4): an informative token's mean M k* in the frame
        mf, w, g = m[:, :3, None, None].astype(f32), F[:, 1, :3, None, None].astype(f32), f32(self.gamma)  # w: v*
        u1, u2 = U[..., 0].copy(), U[..., 1].copy()  # (R, B, L)
        u1[:, :, :s] = mf[:, 0] + g * u1[:, :, :s]
        u2[:, :, :s] = mf[:, 1] + g * u2[:, :, :s]
        u3 = mf[:, 2] + g * u3  # (R, B, s)
        y = (w[:, 0] * u1[:, :, :s] + w[:, 1] * u2[:, :, :s] + w[:, 2] * u3).sum(-1) + f32(self.eps) * xi  # W + noise
        T, dpk, dpv = self.kind.output_and_grads(kk * u1, v1 * u1 + v2 * u2, lam, NUMPY_OPS)  # (R, B), (R, B, L) x2
        r = ((T - y) * (2.0 / B))[:, :, None]
        al, be = dpk * r, dpv * r  # alpha_bl, beta_bl (R, B, L)
        aJ, bJ, an, bn = al[:, :, :s], be[:, :, :s], al[:, :, s:], be[:, :, s:]  # informative (R, B, s), noise tokens

        def informative(x):  # (R, B, s) -> (R,): the sum over the informative tokens, then over the batch
            return x.sum(2).sum(1)

        G = np.empty(C.shape)  # (R, 2, 4): the in-span gradients in the frame
        G[:, 0, 0], G[:, 1, 0] = (al * u1).sum((1, 2)), (be * u1).sum((1, 2))
        G[:, 0, 1], G[:, 1, 1] = (al * u2).sum((1, 2)), (be * u2).sum((1, 2))
        G[:, 0, 2], G[:, 1, 2] = informative(aJ * u3), informative(bJ * u3)
        G[:, 0, 3], G[:, 1, 3] = m[:, 3] * informative(aJ), m[:, 3] * informative(bJ)
        Sn = _gram2((an * an).sum((1, 2)), (an * bn).sum((1, 2)), (bn * bn).sum((1, 2)))
        S = Sn + self.gamma**2 * _gram2(informative(aJ * aJ), informative(aJ * bJ), informative(bJ * bJ))
        G[:, :, 2] += (cholesky2(Sn) @ z[:, :2, None])[..., 0]  # the noise tokens' f3 parts
        G[:, :, 3] += (cholesky2(S) @ z[:, 2:, None])[..., 0]  # every token's f4 part, around its mean
        G = G @ F.transpose(0, 2, 1)  # (R, 2, 4) on (k*, v*, e1, e2)
        if self.projected:  # the out-of-span parts are orthogonal to k and v: only the in-span part is projected
            G -= (C * G).sum(-1)[..., None] * C
        N = C - self.lr * G  # (R, 2, 4): the new k, v but for their out-of-span parts
        out = cholesky2(S) @ A  # (R, 2, 2): out-of-span parts, up to a rotation of the complement
        self.KV = canonical(N, out, normalise=self.projected)


def bartlett2(rng: np.random.Generator, dof: int, R: int) -> np.ndarray:
    """Bartlett factors (R, 2, 2) of ``Wishart_2(dof, I)``: ``[[sqrt(chi2_dof), 0], [N(0,1), sqrt(chi2_(dof-1))]]``,
    drawn in that order (chi-squares of all repeats, then the normals, then the second chi-squares)."""
    A = np.zeros((R, 2, 2))
    A[:, 0, 0] = np.sqrt(rng.chisquare(dof, R))
    A[:, 1, 0] = rng.standard_normal(R)
    if dof > 1:
        A[:, 1, 1] = np.sqrt(rng.chisquare(dof - 1, R))
    return A


def _gram2(s00, s01, s11) -> np.ndarray:
    """Symmetric 2x2 matrices (R, 2, 2), float64, from their entries (R,)."""
    S = np.empty((len(s00), 2, 2))
    S[:, 0, 0], S[:, 0, 1], S[:, 1, 0], S[:, 1, 1] = s00, s01, s01, s11
    return S


def frames(C: np.ndarray) -> np.ndarray:
    """Orthonormal frames (R, 4, 4) of the span of ``(k*, v*, e1, e2)``, column ``j`` the coordinates of
    ``f_{j+1}``: ``k`` along ``f1``, ``v`` in ``span{f1, f2}``, ``v*`` in ``span{f1, f2, f3}``. Gram-Schmidt (each
    vector orthogonalised twice) of ``k, v, v*, k*, e1, e2`` in that order, skipping a vector already in the span
    of the previous ones (residual below 1e-9 of its norm)."""
    R = len(C)
    F = np.zeros((R, 4, 4))
    n = np.zeros(R, dtype=np.int64)
    E = np.eye(4)
    for c in (C[:, 0], C[:, 1], E[1], E[0], E[2], E[3]):
        w = np.array(np.broadcast_to(c, (R, 4)))
        size = np.sqrt((w * w).sum(-1))
        for _ in range(2):
            w = w - (F @ (w[:, None, :] @ F).transpose(0, 2, 1))[..., 0]
        norm = np.sqrt((w * w).sum(-1))
        take = np.flatnonzero((n < 4) & (norm > 1e-9 * size))
        F[take, :, n[take]] = w[take] / norm[take, None]
        n[take] += 1
    return F


def cholesky2(S: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor (R, 2, 2) of positive semi-definite 2x2 matrices (a zero row where ``S`` is zero)."""
    l11 = np.sqrt(S[:, 0, 0])
    l21 = S[:, 0, 1] / np.maximum(l11, 1e-300)
    l = np.zeros_like(S)
    l[:, 0, 0], l[:, 1, 0] = l11, l21
    l[:, 1, 1] = np.sqrt(np.maximum(S[:, 1, 1] - l21 * l21, 0.0))
    return l


def canonical(N: np.ndarray, out: np.ndarray, *, normalise: bool) -> np.ndarray:
    """Canonical coordinates (R, 2, 4) of ``(k, v)`` given their coordinates ``N`` (R, 2, 4) on ``(k*, v*, e1, e2)``
    and their parts ``out`` (R, 2, 2) on two further orthonormal directions: ``k = (k1, k2, a, 0)``,
    ``v = (v1, v2, b, c)`` with ``[[a, 0], [b, c]]`` the Cholesky factor of the Gram matrix of the parts of ``k``, ``v``
    orthogonal to ``k*``, ``v*``; divided by the norms if ``normalise``."""
    rest = np.concatenate([N[:, :, 2:], out], axis=2)  # (R, 2, 4): parts orthogonal to k*, v*
    gram = rest @ rest.transpose(0, 2, 1)
    C = np.empty_like(N)
    C[:, :, :2] = N[:, :, :2]
    C[:, :, 2:] = cholesky2(gram)
    if normalise:
        C /= np.sqrt((C * C).sum(-1))[..., None]
    return C


class FixedTrainingSet:
    """What training on a fixed set shares (ERM of attention and of torch modules): ``data``, ``n_train`` samples per
    repeat drawn once (X (R, n, L, d), y (R, n)), the training risk on it and the baselines fitted to it."""

    data: Batch

    def draw_training_set(self, task: Task, R: int, n_train: int, generator: torch.Generator, dtype: torch.dtype):
        self.data = task.sample((R, n_train), generator, dtype)  # X (R, n, L, d)

    def predict_own(self, lam, X: torch.Tensor) -> torch.Tensor:
        """Each repeat's predictions on its own inputs: ``X`` (R, n, L, d) -> (R, n)."""
        raise NotImplementedError

    def train_loss(self, lam=None) -> np.ndarray:
        """Training risk ``mean (f(X) - y)^2`` per repeat (R,), in float64."""
        with torch.no_grad():
            out = self.predict_own(lam, self.data.X.to(torch.float64))  # (R, n)
            return (out - self.data.y.to(torch.float64)).square().mean(-1).cpu().numpy()

    def fitted_baselines(self) -> list:
        return [LeastSquaresLinear.fit(self.data.X.to(torch.float64), self.data.y.to(torch.float64))]


class ERM(FixedTrainingSet, Algorithm):
    """Full-batch gradient descent or Adam on a fixed training set of ``n_train`` samples per repeat (docs/training.md,
    ERM)."""

    def __init__(self, task: Task, kind: AttentionKind, KV0: torch.Tensor, *, lr: float, n_train: int,
                 projected: bool, optimizer: str, generator: torch.Generator, dtype: torch.dtype):
        self.task, self.eval_task, self.kind = task, task, kind
        self.KV = KV0.to(task.device, dtype)
        self.lr, self.projected = lr, projected
        self.draw_training_set(task, self.KV.shape[0], n_train, generator, dtype)
        self.adam = None
        if optimizer == "adam":
            self.KV.requires_grad_(False)
            self.param = torch.nn.Parameter(self.KV.clone())
            self.adam = torch.optim.Adam([self.param], lr=lr)
        elif optimizer != "gd":
            raise ValueError(f"train.optimizer must be 'gd' or 'adam', got {optimizer!r}")

    def step(self, lam: float) -> None:
        G, _ = squared_loss_gradient(self.kind, self.KV, self.data.X, self.data.y, lam)
        if self.adam is None:
            self.KV = retract(self.KV, G, self.lr, self.projected)
            return
        if self.projected:
            G = G - (self.KV * G).sum(-1)[..., None] * self.KV
        self.param.grad = G
        self.adam.step()
        with torch.no_grad():
            if self.projected:
                self.param /= self.param.norm(dim=-1, keepdim=True)
            self.KV = self.param.detach().clone()

    def predict_own(self, lam: float, X: torch.Tensor) -> torch.Tensor:
        return self.predictor(lam).predict(X)  # k (R, d) on X (R, n, L, d): (R, n)


class PopulationPGD(Algorithm):
    """Projected gradient descent on the closed-form population risk of erf attention (docs/training.md), float64.

    ``grad_k R = R_kappa k* + R_eta v* + R_rho v`` and ``grad_v R = R_nu v* + R_theta k* + R_rho k`` (docs/reduction.md
    §3), so
    the iterates stay in ``span{k0, v0, k*, v*}``: in the reduced form ``D = 4`` and ``k* = e1``, ``v* = e2``.
    :meth:`step` is the numpy reference; :meth:`advance` runs many steps in one call of the compiled kernel
    (``_pgd_step.c``, the same arithmetic), when it applies and can be built (``kernel=None``: if available).
    """

    stochastic = False

    def __init__(self, eval_task, KV0: np.ndarray, *, lr: float, M: float, L: int, gamma: float,
                 kernel: bool | None = None):
        self.eval_task, self.kind = eval_task, ERF
        self.KV = np.array(KV0, dtype=np.float64)
        self.ks = eval_task.k_star.detach().to("cpu", torch.float64).numpy()
        self.vs = eval_task.v_star.detach().to("cpu", torch.float64).numpy()
        self.lr, self.M, self.L, self.gamma = lr, M, L, gamma
        self.n_informative = int(getattr(eval_task, "n_informative", 1))
        self._grad = None
        # the conditions for the compiled step: it implements float64 PGD on the noise-free closed form, s = 1
        applies = self.KV.dtype == np.float64 and self.n_informative == 1
        self._kernel = slr.training.kernels.pgd_step() if applies and kernel is not False else None
        if kernel and self._kernel is None:
            raise RuntimeError("the compiled PGD step is not available (a build failure is logged as a warning)")
        self.kernel = "compiled" if self._kernel is not None else "numpy"

    def gradient(self, lam: float) -> np.ndarray:
        """Euclidean gradient (R, 2, D) of the closed-form risk at ``KV``, in its dtype:
        ``grad_k R = R_kappa k* + R_eta v* + R_rho v``, ``grad_v R = R_nu v* + R_theta k* + R_rho k``."""
        if self._grad is None or self._grad.lam != lam:
            self._grad = ErfRiskGradient(lam, M=self.M, L=self.L, gamma=self.gamma, n_informative=self.n_informative)
        k, v, ks, vs = self.KV[:, 0], self.KV[:, 1], self.ks, self.vs
        Rk, Rn, Rt, Re, Rr = (np.asarray(x, dtype=self.KV.dtype)
                              for x in self._grad(k @ ks, v @ vs, v @ ks, k @ vs, (k * v).sum(-1)))
        G = np.empty_like(self.KV)
        G[:, 0] = Rk[:, None] * ks + Re[:, None] * vs + Rr[:, None] * v
        G[:, 1] = Rn[:, None] * vs + Rt[:, None] * ks + Rr[:, None] * k
        return G

    def step(self, lam: float) -> None:
        self.KV = retract(self.KV, self.gradient(lam), self.lr, True)

    def advance(self, t: int, lams: np.ndarray) -> tuple[int, np.ndarray]:
        """Steps ``t, t+1, ...`` at ``lams`` in one kernel call; see :meth:`Algorithm.advance`."""
        fn, owens_t, erf = self._kernel
        self.KV = np.ascontiguousarray(self.KV, dtype=np.float64)
        lams = np.ascontiguousarray(lams, dtype=np.float64)
        R, _, D = self.KV.shape
        at = np.full(R, -1, dtype=np.int64)
        done = fn(R, D, len(lams), lams.ctypes.data, self.lr, self.M, self.gamma, self.L, self.KV.ctypes.data,
                  self.ks.ctypes.data, self.vs.ctypes.data, owens_t, erf, t, at.ctypes.data, EXPLODED_NORM)
        if done < 0:
            raise MemoryError("the PGD kernel could not allocate its buffer")
        return t + done, at


class PerturbedPGD(PopulationPGD):
    """Population PGD in float32 and/or with an isotropic Gaussian perturbation of every step (numpy only; the
    float64, noise-free PGD is :class:`PopulationPGD`, whose numbers this class never changes).

    One step: ``k <- (k - lr P_k grad_k R + noise xi_k) / ||.||`` (same for ``v``), ``xi_k``, ``xi_v`` independent
    ``N(0, I_d)``: ``noise`` is the standard deviation per coordinate of ``R^d``. In the reduced coordinates
    (``D = 4``) this is exact in distribution: ``xi`` has 4 Gaussian coordinates on ``(k*, v*, e3, e4)`` and a part
    orthogonal to them whose two vectors (for ``k`` and ``v``) enter only through their Gram matrix
    ``noise^2 Wishart_2(d - 4, I)``, drawn by the Bartlett decomposition and folded into new canonical coordinates
    (:func:`canonical`), as in the reduced SGD (docs/reduction.md §4). ``dtype=float32`` keeps the state and the whole
    step in
    single precision (the rounding of the full simulator then lands in all ``d`` coordinates, that of the reduced one
    in 4: the two float32 simulators are not equal in distribution).
    """

    def __init__(self, eval_task, KV0: np.ndarray, *, lr: float, M: float, L: int, gamma: float, d: int,
                 dtype: str = "float64", noise: float = 0.0, rng: np.random.Generator | None = None):
        super().__init__(eval_task, KV0, lr=lr, M=M, L=L, gamma=gamma, kernel=False)  # the numpy step only
        self.dtype, self.noise, self.d, self.rng = np.dtype(dtype), float(noise), int(d), rng
        self.reduced = isinstance(eval_task, ReducedTask)
        if self.noise > 0 and rng is None:
            raise ValueError("PerturbedPGD with noise > 0 needs a random generator")
        if self.reduced and self.noise > 0 and self.d < 5:
            raise ValueError(f"the reduced noisy PGD needs d >= 5, got d={self.d}")
        self.KV = self.KV.astype(self.dtype)
        self.ks, self.vs = self.ks.astype(self.dtype), self.vs.astype(self.dtype)

    def vectors(self) -> np.ndarray:
        return self.KV.astype(np.float64)

    def step(self, lam: float) -> None:
        f = self.dtype.type
        G = self.gradient(lam)
        if self.noise == 0:
            self.KV = retract(self.KV, G, f(self.lr), True)
            return
        N = tangent_step(self.KV, G, f(self.lr))
        R = len(N)
        N = N + (self.noise * self.rng.standard_normal(N.shape)).astype(self.dtype)  # in-span (or all d) coordinates
        if not self.reduced:
            self.KV = N / np.sqrt((N * N).sum(-1))[..., None]
            return
        A = bartlett2(self.rng, self.d - 4, R)  # Wishart_2(d - 4, I): the out-of-span parts of xi_k, xi_v
        self.KV = canonical(N.astype(np.float64), self.noise * A, normalise=True).astype(self.dtype)


def population_pgd(eval_task, KV0: np.ndarray, *, lr: float, M: float, L: int, gamma: float, d: int,
                   dtype: str = "float64", noise: float = 0.0, rng: np.random.Generator | None = None) -> PopulationPGD:
    """The PGD for these settings: :class:`PopulationPGD` for float64 without noise (the path a compiled step can
    serve), :class:`PerturbedPGD` (numpy) for ``dtype=float32`` or ``noise > 0``."""
    if dtype == "float64" and noise == 0:
        return PopulationPGD(eval_task, KV0, lr=lr, M=M, L=L, gamma=gamma)
    return PerturbedPGD(eval_task, KV0, lr=lr, M=M, L=L, gamma=gamma, d=d, dtype=dtype, noise=noise, rng=rng)


class Frozen(Algorithm):
    """No training: the predictor stays at its initialisation (``train=none``)."""

    kernel = None

    def __init__(self, eval_task, kind: AttentionKind, KV0):
        self.eval_task, self.kind, self.KV = eval_task, kind, KV0

    def step(self, lam: float) -> None:  # pragma: no cover - train=none runs zero steps
        raise RuntimeError("train=none takes no steps")


# ----- the loop -------------------------------------------------------------------------------------------------
@dataclass
class History:
    """What the loop observed: logged rows, per-repeat divergence steps and timings."""

    rows: list[dict] = field(default_factory=list)
    diverged_at: np.ndarray | None = None  # (R,) step at which each repeat was found diverged (see train), or -1
    steps_done: int = 0
    seconds: float = 0.0


def train(algo: Algorithm, *, steps: int, log_every: int, schedule: Callable[[int], float],
          log: Callable[[int, float, Algorithm, np.ndarray], list[dict]], progress: bool = False) -> History:
    """Run ``steps`` steps of ``algo``, calling ``log(t, lam_t, algo, alive)`` every ``log_every`` steps and at the end.

    Divergence: a repeat is stopped (:meth:`Algorithm.discard`) and ``diverged_at`` records the step ``t`` at which
    it is found, either after the step whose update made a coordinate of its ``(k, v)`` non-finite or at least
    ``EXPLODED_NORM`` (checked after every step when the state is on the CPU, for a few microseconds a step; at
    the logged steps for a state on a GPU, to keep the device asynchronous), or at a logged step whose numbers for it
    are non-finite or whose norms reach ``EXPLODED_NORM``. Its rows logged before stay, the other repeats go on,
    and the loop stops early when no repeat is left. An algorithm with a compiled kernel (``algo.kernel ==
    "compiled"``) runs the steps between two logged steps in one :meth:`Algorithm.advance` call, which does the
    same per-step check: the rows and the divergence steps are those of the step-by-step loop.
    """
    from tqdm.auto import tqdm

    R = algo.KV.shape[0]
    hist = History(diverged_at=np.full(R, -1))
    alive = np.ones(R, dtype=bool)

    def stop(bad: np.ndarray, t: int) -> None:
        if bad.any():
            hist.diverged_at[bad] = t
            alive[bad] = False
            algo.discard(bad)

    every_step = not isinstance(algo.KV, torch.Tensor) or algo.KV.device.type == "cpu"
    start = time.perf_counter()
    bar = tqdm(total=steps, disable=not progress, unit="step", mininterval=0.5, leave=False)
    t = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while True:
            lam = schedule(t)
            if t % log_every == 0 or t == steps:
                rows = log(t, lam, algo, alive)
                stop(alive & ~_finite_repeats(rows, R), t)
                hist.rows.extend(r for r in rows if alive[r["repeat"]] or hist.diverged_at[r["repeat"]] == t)
                bar.set_postfix_str(_postfix(rows, alive), refresh=False)
            if t == steps or not alive.any():
                break
            if getattr(algo, "continuous", False):  # an ODE: integrated to the next logged step in one call
                n = min(log_every - t % log_every, steps - t)
                t_next, _ = algo.advance_to(t, t + n, schedule)
                bar.update(t_next - t)
                t = t_next
                if algo.stop_step is not None and t >= algo.stop_step:  # until_converged: the last logged step
                    steps = t
                continue
            if algo.kernel == "compiled":  # to the next logged step in one call, same checks in C
                n = min(log_every - t % log_every, steps - t)
                t_next, at = algo.advance(t, np.fromiter(map(schedule, range(t, t + n)), np.float64, n))
                bad = at >= 0
                hist.diverged_at[bad], alive[bad] = at[bad], False
                bar.update(t_next - t)
                t = t_next
                continue
            algo.step(lam)
            t += 1
            if every_step:
                stop(_exploded(algo.KV, alive), t)
            bar.update(1)
    bar.close()
    hist.steps_done, hist.seconds = t, time.perf_counter() - start
    return hist


def overlap_path(algo: Algorithm, *, steps: int, log_every: int, schedule: Callable[[int], float]) -> np.ndarray:
    """The overlaps (n_logged, R, 5) of ``algo`` at every logged step of :func:`train` (``OVERLAPS`` order)."""
    out = []

    def log(t, lam, a, alive):
        o = a.overlaps()
        out.append(np.stack([o[k] for k in OVERLAPS], -1))
        return []

    train(algo, steps=steps, log_every=log_every, schedule=schedule, log=log)
    return np.array(out)


def _exploded(KV: np.ndarray | torch.Tensor, alive: np.ndarray) -> np.ndarray:
    """The live repeats whose state (R, 2, D) has a coordinate that is non-finite or at least ``EXPLODED_NORM``;
    one reduction over the whole state while every repeat is finite (the common case), one per repeat otherwise."""
    if isinstance(KV, torch.Tensor):
        if KV.abs().max().item() < EXPLODED_NORM:  # False for NaN
            return np.zeros_like(alive)
        m = KV.detach().abs().flatten(1).amax(1).numpy()  # (R,)
    else:
        if np.abs(KV).max() < EXPLODED_NORM:
            return np.zeros_like(alive)
        m = np.abs(KV).reshape(len(KV), -1).max(1)  # (R,)
    return alive & ~(m < EXPLODED_NORM)


def _finite_repeats(rows: list[dict], R: int) -> np.ndarray:
    ok = np.ones(R, dtype=bool)
    for row in rows:
        values = [row[k] for k in (*OVERLAPS, "norm_k", "norm_v", "excess", "test_excess", "train_loss") if k in row]
        finite = all(v is None or math.isfinite(v) for v in values)
        ok[row["repeat"]] = finite and all(row.get(k) is None or row[k] < EXPLODED_NORM for k in ("norm_k", "norm_v"))
    return ok


def _postfix(rows: list[dict], alive: np.ndarray) -> str:
    vals = [r.get("excess", float("nan")) for r in rows if alive[r["repeat"]]]
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return f"median excess {np.median(vals):.4g}" if vals else ""
