"""Every predictor of docs/task-and-predictors.md §2 behind one interface: ``predict(X) -> y_hat`` and a ``name``.

``X`` is a tensor (..., L, d) or :class:`slr.core.reduced.ReducedTokens`; a predictor whose vectors carry leading
repeat axes (e.g. ``k`` of shape (R, d)) returns (R, ...): ``X`` (n, L, d) gives (R, n), and ``X`` (R, B, L, d)
gives (R, B). ``in_basis(E)`` re-expresses a predictor in coordinates on an orthonormal basis ``E`` (..., d, r),
which is how the dimension-free sampler of docs/reduction.md §2 evaluates it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol

import numpy as np
import scipy.special
import torch

from slr.theory import OVERLAPS, TWO_OVER_SQRT_PI, bilinear_coefficient, erf_excess, linear_coefficient


class Predictor(Protocol):
    name: str

    def predict(self, X) -> torch.Tensor: ...


def predict_and_attention(p: Predictor, X) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Predictions of ``p`` on ``X`` and its attention weights (None for a predictor without ``attention``), from one
    forward pass when ``p`` has ``predict_and_attention``."""
    if callable(getattr(p, "predict_and_attention", None)):
        return p.predict_and_attention(X)
    return p.predict(X), (p.attention(X) if callable(getattr(p, "attention", None)) else None)


class NotReducible(TypeError):
    """The predictor depends on more of a token than the dimension-free sampler keeps (docs/reduction.md §2)."""


def project(X, U: torch.Tensor) -> torch.Tensor:
    """Projections ``<X_l, u_j>`` of tokens ``X`` (..., L, d) on the columns of ``U`` (P..., d, m): (P..., ..., L, m)."""
    Z = getattr(X, "Z", X)  # reduced tokens: their coordinates on the basis of U
    if Z.dim() == 3 and U.dim() > 2:  # samples (n, L, d) shared by repeats (P...)
        return shared_projection(Z, U)
    return X @ U.unsqueeze(-3)


def shared_projection(X: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """``X @ U.unsqueeze(-3)`` for tokens ``X`` (n, L, d) and a batch of projections ``U`` (P..., d, m), as one
    matrix product (n L, d) @ (d, P m) instead of a broadcast that copies ``X`` once per repeat: (P..., n, L, m)."""
    n, L, d = X.shape
    batch, m = U.shape[:-2], U.shape[-1]
    out = U.transpose(-1, -2).reshape(-1, d) @ X.reshape(n * L, d).T  # (P m, n L)
    return out.reshape(*batch, m, n, L).movedim(-3, -1)  # each projection's (n, L) block stays contiguous


def square_norms(X) -> torch.Tensor:
    """``||X_l||^2`` for every token: (..., L)."""
    return X.square_norms() if hasattr(X, "square_norms") else X.square().sum(-1)


def coordinates(E: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Coordinates ``E^T u`` of a vector ``u`` (..., d) on an orthonormal basis ``E`` (..., d, r): (..., r)."""
    return (E.transpose(-1, -2) @ u.unsqueeze(-1).to(E.dtype)).squeeze(-1)


# ----- attention weights, written once for torch (predictors, full SGD) and numpy (reduced SGD) ------------------
class Ops(NamedTuple):
    erf: Callable
    exp: Callable
    softmax: Callable


TORCH_OPS = Ops(torch.erf, torch.exp, lambda x: torch.softmax(x, dim=-1))
def _erf_numpy(x: np.ndarray) -> np.ndarray:
    """erf of a float64 numpy array through torch's vectorised kernel (several times faster than scipy's for
    arguments of order one, and equal to it within a few ulp)."""
    return torch.erf(torch.from_numpy(x)).numpy()


NUMPY_OPS = Ops(_erf_numpy, np.exp, lambda x: scipy.special.softmax(x, axis=-1))


class AttentionKind(NamedTuple):
    """``T(X) = sum_l w_l <X_l, v>`` with weights ``w`` a function of the scores ``lam <X_l, k>``: its output, its
    gradients in the projections, its normalised attention weights, and its id in the compiled reduced SGD kernel."""

    name: str
    output: Callable  # (pk, pv, lam, ops) -> T
    output_and_grads: Callable  # (pk, pv, lam, ops) -> (T, dT/dpk, dT/dpv)
    weights: Callable  # scores lam <X_l, k> (..., L) -> normalised weights (..., L), torch
    kernel_id: int | None  # the ``kind`` argument of ``reduced_step.c`` (None: no compiled step)
    excess: Callable | None  # (lam, overlaps and norms (R,) each, task) -> closed-form excess (R,); None: no closed
                             # form


def _erf_output(pk, pv, lam, ops=TORCH_OPS):
    return (ops.erf(lam * pk) * pv).sum(-1)


def _erf_output_and_grads(pk, pv, lam, ops=TORCH_OPS):
    """``T = sum_l erf(lam pk_l) pv_l``; ``dT/dpk_l = lam erf'(lam pk_l) pv_l``, ``dT/dpv_l = erf(lam pk_l)``."""
    x = lam * pk
    w = ops.erf(x)
    return (w * pv).sum(-1), (lam * TWO_OVER_SQRT_PI) * ops.exp(-x * x) * pv, w


def _softmax_output(pk, pv, lam, ops=TORCH_OPS):
    return (ops.softmax(lam * pk) * pv).sum(-1)


def _softmax_output_and_grads(pk, pv, lam, ops=TORCH_OPS):
    """``T = sum_l pi_l pv_l``, ``pi = softmax(lam pk)``; ``dT/dpk_l = lam pi_l (pv_l - T)``, ``dT/dpv_l = pi_l``."""
    pi = ops.softmax(lam * pk)
    T = (pi * pv).sum(-1)
    return T, lam * pi * (pv - T[..., None]), pi


def _erf_weights(s: torch.Tensor) -> torch.Tensor:
    """``|erf(s_l)|`` divided by its sum over the tokens (erf weights are signed and unnormalised)."""
    w = torch.erf(s).abs()
    return w / w.sum(-1, keepdim=True)


def _softmax_weights(s: torch.Tensor) -> torch.Tensor:
    return torch.softmax(s, dim=-1)


def _erf_excess(lam: float, o: dict, task) -> np.ndarray:
    """The closed-form excess of erf attention at the overlaps and norms ``o`` (``docs/closed-forms.md``)."""
    return erf_excess(lam, *(o[k] for k in OVERLAPS), d=task.d, L=task.L, gamma=task.gamma, signal=task.signal,
                      norm_k=o["norm_k"], norm_v=o["norm_v"], s=getattr(task, "n_informative", 1))


ERF = AttentionKind("erf", _erf_output, _erf_output_and_grads, _erf_weights, 0, _erf_excess)
SOFTMAX = AttentionKind("softmax", _softmax_output, _softmax_output_and_grads, _softmax_weights, 1, None)
ATTENTION_KINDS = {kind.name: kind for kind in (ERF, SOFTMAX)}


@dataclass(frozen=True)
class Attention:
    """Attention with a learned query: ``T(X) = sum_l w(lam <X_l,k>)_l <X_l,v>`` (docs/task-and-predictors.md §2); erf
    or softmax weights."""

    k: torch.Tensor  # (..., d)
    v: torch.Tensor  # (..., d)
    lam: float
    kind: AttentionKind = ERF
    name: str = "erf attention"

    def predict(self, X) -> torch.Tensor:
        P = project(X, torch.stack([self.k, self.v], dim=-1))  # (..., L, 2)
        return self.kind.output(P[..., 0], P[..., 1], self.lam)

    def attention(self, X) -> torch.Tensor:
        """Normalised attention weights (..., L): ``softmax_l(lam <X_l,k>)``, or ``|erf(lam <X_l,k>)|`` divided by
        its sum over the tokens (:attr:`AttentionKind.weights`)."""
        return self.predict_and_attention(X)[1]

    def predict_and_attention(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        """``(predict(X), attention(X))`` from one projection of the tokens on ``(k, v)`` (the weights come from the
        same projection whether asked for alone or with the predictions, so the two calls agree bitwise)."""
        P = project(X, torch.stack([self.k, self.v], dim=-1))  # (..., L, 2)
        return self.kind.output(P[..., 0], P[..., 1], self.lam), self.kind.weights(self.lam * P[..., 0])

    def in_basis(self, E: torch.Tensor) -> "Attention":
        return dataclasses.replace(self, k=coordinates(E, self.k), v=coordinates(E, self.v))

    @property
    def vectors(self) -> tuple[torch.Tensor, ...]:
        return self.k, self.v


def erf_attention(k, v, lam, name="erf attention") -> Attention:
    """The paper's predictor ``T_{lam,k,v}(X) = sum_l erf(lam <X_l,k>) <X_l,v>`` (docs/task-and-predictors.md §2)."""
    return Attention(k, v, lam, ERF, name)


def softmax_attention(k, v, lam, name="softmax attention") -> Attention:
    """``sum_l softmax_l(lam <X_l,k>) <X_l,v>`` (docs/task-and-predictors.md §2)."""
    return Attention(k, v, lam, SOFTMAX, name)


def oracle(task, lam: float) -> Attention:
    """Erf attention at ``k = k*``, ``v = v*`` (docs/task-and-predictors.md §2)."""
    return erf_attention(task.k_star, task.v_star, lam, name="oracle")


@dataclass(frozen=True)
class BayesOptimal:
    """``f*(X) = sum_l pi_l <X_l,v*>``, ``pi = softmax_l s(X_l)``, ``s(x) = M<x,k*>/gamma^2 + (1-gamma^-2)||x||^2/2``
    (docs/task-and-predictors.md §2).

    Task variants (``docs/variants.md``): ``log_prior`` (L,) adds ``log prior_l`` to the scores; ``s > 1``
    informative tokens give ``f* = sum_l P(l in S | X) <X_l, v*>`` with ``P(S | X) ∝ prod_{j in S} r_l``
    (:func:`subset_posterior`); Student-t tokens (``df`` finite) score a token by its log-likelihood ratio over
    every coordinate (:func:`student_t_log_ratio`), which reads the whole token (no reduced form).
    """

    k_star: torch.Tensor
    v_star: torch.Tensor
    M: float
    gamma: float
    name: str = "Bayes-optimal"
    log_prior: torch.Tensor | None = None  # (L,)
    s: int = 1
    df: float = math.inf

    @classmethod
    def of(cls, task) -> "BayesOptimal":
        prior = getattr(task, "prior", None)
        return cls(task.k_star, task.v_star, task.M, task.gamma,
                   log_prior=None if prior is None else torch.log(prior).to(task.device),
                   s=getattr(task, "n_informative", 1), df=getattr(task, "df", math.inf))

    def posterior(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f*(X), Var(W | X))``: posterior mean and variance of ``W``, the variance as a sum of non-negative terms."""
        P = project(X, torch.stack([self.k_star, self.v_star], dim=-1))  # (..., L, 2)
        y = P[..., 1]
        if self.s > 1:
            return subset_posterior(self.log_ratio(P[..., 0], X), y, self.s)
        pi = torch.softmax(self.log_ratio(P[..., 0], X), dim=-1)
        f = (pi * y).sum(-1)
        return f, (pi * (y - f[..., None]).square()).sum(-1)

    def predict(self, X) -> torch.Tensor:
        return self.posterior(X)[0]

    def attention(self, X) -> torch.Tensor:
        """The posterior ``pi_l = P(l in S | X)`` (..., L) divided by ``s``: Bayes's own attention (sums to 1)."""
        log_r = self.log_ratio(project(X, self.k_star[..., None]).squeeze(-1), X)
        if self.s > 1:
            return inclusion_probabilities(log_r, self.s) / self.s
        return torch.softmax(log_r, dim=-1)

    def predict_and_attention(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f*(X), pi)`` from one projection of the tokens on ``(k*, v*)`` (``pi``: the inclusion probabilities
        divided by ``s``)."""
        P = project(X, torch.stack([self.k_star, self.v_star], dim=-1))  # (..., L, 2)
        log_r = self.log_ratio(P[..., 0], X)
        if self.s > 1:
            incl = inclusion_probabilities(log_r, self.s)
            return (incl * P[..., 1]).sum(-1), incl / self.s
        pi = torch.softmax(log_r, dim=-1)
        return (pi * P[..., 1]).sum(-1), pi

    def log_ratio(self, pk: torch.Tensor, X) -> torch.Tensor:
        """``log prior_l + log r_l`` up to a constant shared by the tokens (..., L), from the projections
        ``pk = <X_l, k*>`` and the tokens' norms (Gaussian tokens) or the tokens themselves (Student-t)."""
        if math.isfinite(self.df):
            score = student_t_log_ratio(X, self.M * self.k_star, self.gamma, self.df)
        else:
            score = (self.M / self.gamma**2) * pk
            if self.gamma != 1.0:
                score = score + 0.5 * (1.0 - self.gamma**-2) * square_norms(X)
        if self.log_prior is not None:
            score = score + self.log_prior.to(score.dtype)
        return score  # scores are O(d) apart: every use is in log space

    def in_basis(self, E: torch.Tensor) -> "BayesOptimal":
        if math.isfinite(self.df):
            raise NotReducible("Bayes with Student-t tokens reads every coordinate; use the full simulator")
        return dataclasses.replace(self, k_star=coordinates(E, self.k_star), v_star=coordinates(E, self.v_star))

    @property
    def vectors(self) -> tuple[torch.Tensor, ...]:
        return self.k_star, self.v_star


@dataclass(frozen=True)
class Linear:
    """``c sum_l <X_l, v*>``; with ``c = gamma^2/(gamma^2+L-1)`` the best affine predictor (docs/task-and-predictors.md
    §2)."""

    v_star: torch.Tensor
    c: float
    name: str = "linear"

    @classmethod
    def of(cls, task) -> "Linear":
        return cls(task.v_star, linear_coefficient(task.L, task.gamma, getattr(task, "n_informative", 1)))

    def predict(self, X) -> torch.Tensor:
        return self.c * project(X, self.v_star[..., None]).squeeze(-1).sum(-1)

    def in_basis(self, E: torch.Tensor) -> "Linear":
        return dataclasses.replace(self, v_star=coordinates(E, self.v_star))

    @property
    def vectors(self) -> tuple[torch.Tensor, ...]:
        return (self.v_star,)


@dataclass(frozen=True)
class Bilinear:
    """``c sum_l <X_l,k*><X_l,v*>`` with the best ``c = M gamma^2/((M^2+gamma^2) gamma^2 + L - 1)``
    (docs/task-and-predictors.md §2)."""

    k_star: torch.Tensor
    v_star: torch.Tensor
    c: float
    name: str = "bilinear"

    @classmethod
    def of(cls, task) -> "Bilinear":
        return cls(task.k_star, task.v_star, bilinear_coefficient(task.d, task.L, task.gamma, task.signal,
                                                                  getattr(task, "n_informative", 1)))

    def predict(self, X) -> torch.Tensor:
        P = project(X, torch.stack([self.k_star, self.v_star], dim=-1))  # (..., L, 2)
        return self.c * (P[..., 0] * P[..., 1]).sum(-1)

    def in_basis(self, E: torch.Tensor) -> "Bilinear":
        return dataclasses.replace(self, k_star=coordinates(E, self.k_star), v_star=coordinates(E, self.v_star))

    @property
    def vectors(self) -> tuple[torch.Tensor, ...]:
        return self.k_star, self.v_star


@dataclass(frozen=True)
class LeastSquaresLinear:
    """Affine predictor ``<vec X, beta> + b`` fitted by (minimum-norm) least squares on a finite sample
    (docs/task-and-predictors.md §2)."""

    beta: torch.Tensor  # (..., L*d)
    intercept: torch.Tensor  # (...)
    name: str = "least-squares linear"

    @classmethod
    def fit(cls, X: torch.Tensor, y: torch.Tensor, name: str = "least-squares linear") -> "LeastSquaresLinear":
        """Fit on ``X`` (..., n, L, d), ``y`` (..., n); the pseudo-inverse gives the minimum-norm interpolator when n <= L d."""
        A = X.flatten(-2)  # (..., n, L d)
        A = torch.cat([A, torch.ones_like(A[..., :1])], dim=-1)
        coef = (torch.linalg.pinv(A) @ y.unsqueeze(-1)).squeeze(-1)  # (..., L d + 1)
        return cls(coef[..., :-1], coef[..., -1], name)

    def predict(self, X) -> torch.Tensor:
        if not isinstance(X, torch.Tensor):
            raise NotReducible(f"{self.name} reads every coordinate of every token; use the full simulator")
        return (X.flatten(-2) @ self.beta.unsqueeze(-1)).squeeze(-1) + self.intercept[..., None]  # (..., n)

    def in_basis(self, E: torch.Tensor):
        raise NotReducible(f"{self.name} reads every coordinate of every token; use the full simulator")


# ----- Bayes for the task variants (docs/variants.md) -------------------------------------------------------------
def student_t_log_ratio(X: torch.Tensor, mean: torch.Tensor, gamma: float, df: float) -> torch.Tensor:
    """``log r_l = sum_j [log f((x_lj - mu_j)/gamma) - log f(x_lj)]`` for the unit-variance Student-t density ``f``,
    up to the constant ``-d log gamma`` shared by the tokens: ``-(df+1)/2 sum_j [log1p(((x - mu)/(gamma c))^2/df)
    - log1p((x/c)^2/df)]``, ``c = sqrt((df-2)/df)`` (..., L)."""
    if not isinstance(X, torch.Tensor):
        raise NotReducible("Bayes with Student-t tokens reads every coordinate; use the full simulator")
    c2df = (df - 2.0)  # (x/c)^2/df = x^2/(df-2)
    inf = torch.log1p((X - mean.to(X.dtype)).square() / (gamma**2 * c2df))  # (..., L, d)
    noise = torch.log1p(X.square() / c2df)
    return -0.5 * (df + 1.0) * (inf - noise).sum(-1)


def subset_posterior(log_r: torch.Tensor, y: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``W = sum_{j in S} y_j`` when ``P(S | X) ∝ prod_{j in S} r_j`` over the sets of size ``s``.

    One pass over the tokens keeps, for every size ``k <= s``, the log normaliser ``log e_k`` of the tokens seen so far
    and the mean ``a_k`` and variance ``c_k`` of ``sum_{j in S} y_j`` over the sets of size ``k``. Adding token ``l``
    mixes the sets without it (weight ``1 - w``) with those holding it (weight ``w = r_l e_{k-1} / e_k'``):
    ``a_k' = (1-w) a_k + w (a_{k-1} + y_l)``, ``c_k' = (1-w) c_k + w c_{k-1} + w (1-w) (a_k - a_{k-1} - y_l)^2``,
    convex combinations of non-negative terms, so nothing cancels. ``log_r``, ``y``: (..., L); returns (...,), (...,).
    """
    batch, L = log_r.shape[:-1], log_r.shape[-1]
    log_e = torch.full((*batch, s + 1), -math.inf, dtype=log_r.dtype, device=log_r.device)
    log_e[..., 0] = 0.0
    a = torch.zeros_like(log_e)
    c = torch.zeros_like(log_e)
    for l in range(L):  # the recursion runs along the tokens; everything else is batched
        lr, yl = log_r[..., l, None], y[..., l, None]  # (..., 1)
        with_l = log_e[..., :-1] + lr  # (..., s): log of r_l e_{k-1}, k = 1..s
        new = torch.logaddexp(log_e[..., 1:], with_l)
        w = torch.exp(with_l - new).nan_to_num(0.0)  # -inf - -inf: no set of that size yet
        a0, a1, c0, c1 = a[..., 1:], a[..., :-1] + yl, c[..., 1:], c[..., :-1]
        a_new = (1 - w) * a0 + w * a1
        c_new = (1 - w) * c0 + w * c1 + w * (1 - w) * (a0 - a1).square()
        log_e = torch.cat([log_e[..., :1], new], -1)
        a = torch.cat([a[..., :1], a_new], -1)
        c = torch.cat([c[..., :1], c_new], -1)
    return a[..., s], c[..., s]


def log_elementary_symmetric(log_r: torch.Tensor, s: int) -> torch.Tensor:
    """``log e_k(r)`` for ``k = 0..s`` (..., s+1), by the recursion ``e_k' = e_k + r_l e_{k-1}`` in log space
    (an empty sum is ``-1e30`` rather than ``-inf``, whose ``logaddexp`` has no gradient; ``exp(-1e30)`` is 0)."""
    log_e = torch.full((*log_r.shape[:-1], s + 1), -1e30, dtype=log_r.dtype, device=log_r.device)
    log_e[..., 0] = 0.0
    for l in range(log_r.shape[-1]):
        log_e = torch.cat([log_e[..., :1], torch.logaddexp(log_e[..., 1:], log_e[..., :-1] + log_r[..., l, None])], -1)
    return log_e


def inclusion_probabilities(log_r: torch.Tensor, s: int) -> torch.Tensor:
    """``P(l in S | X) = r_l e_{s-1}(r without l) / e_s(r)`` (..., L), computed as ``d log e_s / d log r_l`` (the same
    quantity, exactly) by differentiating :func:`log_elementary_symmetric`."""
    with torch.enable_grad():
        x = log_r.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(log_elementary_symmetric(x, s)[..., s].sum(), x)
    return g
