"""The population gradient flow of erf attention, integrated as the ODE of the five overlaps (docs/dynamics.md).

``dk/dt = -P_k grad_k R``, ``dv/dt = -P_v grad_v R`` with ``t = lr x step``: PGD's continuous-time limit, exact at any
``d`` (:mod:`slr.theory.flow`). All repeats are one stacked system of ``5 R`` equations with a block-diagonal analytic
Jacobian, integrated by one of scipy's stiff solvers (BDF, Radau, LSODA), stepped by hand so that the loop of
:func:`slr.training.algorithms.train` logs it at the same steps as PGD.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from slr.core.predictors import ERF
from slr.theory import ErfRiskJet
from slr.theory.flow import canonical_coordinates, drift_from_gradient, jacobian_from_jet, overlaps_of, riemannian_grad_norm
from slr.training.algorithms import Algorithm

SOLVERS = ("BDF", "Radau", "LSODA")


def default_atol(d: float) -> float:
    """``1e-9/sqrt(d)``: a billionth of the size of the overlaps of a start uniform on the sphere. Much smaller
    tolerances reach the rounding noise of the fast overlaps (``theta``, ``eta``, ``rho`` at ``O(1/M)``) and BDF gives
    up ("required step size is less than spacing between numbers"; seen at ``1e-12/sqrt(d)``, ``d = 1e9``)."""
    return 1e-9 / math.sqrt(d)


class SolverFailure(RuntimeError):
    """The ODE solver gave up; the message is the solver's."""


class GradientFlow(Algorithm):
    """``R`` repeats of the gradient flow from canonical coordinates ``C0`` (R, 2, 4); ``KV`` is always a valid pair of
    unit vectors (the overlaps projected onto the Gram matrices of unit vectors, :func:`canonical_coordinates`)."""

    stochastic = False
    continuous = True  # train() calls advance_to(t, t_next, schedule) instead of step()

    def __init__(self, eval_task, C0: np.ndarray, *, lr: float, M: float, L: int, gamma: float, horizon: float,
                 method: str = "BDF", rtol: float = 1e-8, atol: float = 1e-12, grad_tol: float | None = None):
        if method not in SOLVERS:
            raise ValueError(f"method must be one of {SOLVERS}, got {method!r}")
        self.eval_task, self.kind = eval_task, ERF
        self.lr, self.M, self.L, self.gamma = float(lr), float(M), int(L), float(gamma)
        self.horizon, self.method, self.rtol, self.atol, self.grad_tol = horizon, method, rtol, atol, grad_tol
        self.o = overlaps_of(canonical_coordinates(overlaps_of(np.asarray(C0, dtype=float))))  # (R, 5)
        self.R = len(self.o)
        self.kernel = f"scipy {method}"
        self.solver = None
        self.schedule: Callable[[float], float] | None = None
        self.converged_at = np.full(self.R, np.nan)  # flow time at which each repeat's gradient norm fell below grad_tol
        self.grad_norm = np.full(self.R, np.nan)
        self.nfev = self.njev = self.nlu = self.nsteps = 0
        self.all_converged = False
        self.stop_step: int | None = None  # with grad_tol: the step count at which the run ends (all converged)

    # ----- the state seen by the logger and the evaluator ------------------------------------------------------------
    @property
    def KV(self) -> np.ndarray:
        return canonical_coordinates(self.o)

    def overlaps(self) -> dict[str, np.ndarray]:
        o = overlaps_of(self.KV)
        ones = np.ones(self.R)
        return dict(kappa=o[:, 0], nu=o[:, 1], theta=o[:, 2], eta=o[:, 3], rho=o[:, 4], norm_k=ones, norm_v=ones.copy())

    def discard(self, mask: np.ndarray) -> None:
        self.o[mask] = np.nan

    def step(self, lam: float) -> None:  # pragma: no cover - train() uses advance_to
        raise RuntimeError("the gradient flow advances by advance_to()")

    # ----- the ODE ---------------------------------------------------------------------------------------------------
    def _lam(self, tau: float) -> float:
        return float(self.schedule(tau / self.lr))

    def _jet(self, tau: float, y: np.ndarray):
        o = y.reshape(self.R, 5)
        jet = ErfRiskJet(self._lam(tau), M=self.M, L=self.L, gamma=self.gamma)
        G, H = jet.derivatives(*o.T)
        return o, G, H

    def _fun(self, tau: float, y: np.ndarray) -> np.ndarray:
        o, G, _ = self._jet(tau, y)
        return drift_from_gradient(o, G).ravel()

    def _jac(self, tau: float, y: np.ndarray):
        from scipy.sparse import bsr_matrix

        o, G, H = self._jet(tau, y)
        blocks = jacobian_from_jet(o, G, H)  # (R, 5, 5)
        if self.method == "LSODA":
            J = np.zeros((5 * self.R, 5 * self.R))
            for r in range(self.R):  # a dense matrix for LSODA (no sparse Jacobians there)
                J[5 * r:5 * r + 5, 5 * r:5 * r + 5] = blocks[r]
            return J
        return bsr_matrix((blocks, np.arange(self.R), np.arange(self.R + 1)), shape=(5 * self.R,) * 2).tocsc()

    def _start(self, tau0: float) -> None:
        import scipy.integrate

        cls = getattr(scipy.integrate, self.method)
        self.solver = cls(self._fun, tau0, self.o.ravel().copy(), self.horizon, rtol=self.rtol, atol=self.atol,
                          jac=self._jac)

    def _check_convergence(self, tau: float, y: np.ndarray) -> None:
        if self.grad_tol is None:
            return
        o, G, _ = self._jet(tau, y)
        self.grad_norm = riemannian_grad_norm(o, G)
        new = np.isnan(self.converged_at) & (self.grad_norm <= self.grad_tol)
        self.converged_at[new] = tau
        self.all_converged = not np.isnan(self.converged_at).any()

    def advance_to(self, t: int, t_next: int, schedule: Callable[[float], float]) -> tuple[int, np.ndarray]:
        """Integrate from flow time ``lr t`` to ``lr t_next`` (steps of PGD) and set the state there; with a gradient
        tolerance, stop at the first solver step where every repeat is below it (the step count reached is then the
        first whole step after that time). Returns ``(t_reached, diverged (R,) = -1)``."""
        self.schedule = schedule
        if self.stop_step is not None:
            t_next = min(t_next, self.stop_step)
        tau_next = min(self.lr * t_next, self.horizon)
        if self.solver is None:
            self._start(self.lr * t)
        s = self.solver
        if self.grad_tol is not None and t == 0 and self.nsteps == 0:
            self._check_convergence(s.t, s.y)
            if self.all_converged:
                self.stop_step = t_next = 1
                tau_next = min(self.lr, self.horizon)
        while s.t < tau_next:
            msg = s.step()
            self.nsteps += 1
            if s.status == "failed" or not np.isfinite(s.y).all():
                raise SolverFailure(f"{self.method} failed at flow time {s.t:.6g} (step {s.t / self.lr:.0f}): "
                                    f"{msg or 'non-finite state'}")
            if not self.all_converged:
                self._check_convergence(s.t, s.y)
                if self.all_converged:  # the run ends at the first whole step after this time
                    self.stop_step = max(t + 1, math.ceil(s.t / self.lr - 1e-9))
                    t_next = min(t_next, self.stop_step)
                    tau_next = min(self.lr * t_next, self.horizon)
        y = s.dense_output()(tau_next) if s.t > tau_next and s.t_old is not None else s.y
        self.o = overlaps_of(canonical_coordinates(y.reshape(self.R, 5)))
        self.nfev, self.njev, self.nlu = s.nfev, s.njev, s.nlu
        return t_next, np.full(self.R, -1)

    def details(self) -> dict:
        """What the summary records about the integration."""
        out = dict(solver=self.method, rtol=self.rtol, atol=self.atol, solver_steps=self.nsteps,
                   evaluations=dict(rhs=int(self.nfev), jacobian=int(self.njev), lu=int(self.nlu)),
                   flow_time=float(self.solver.t) if self.solver is not None else 0.0)
        if self.grad_tol is not None:
            out.update(grad_tol=self.grad_tol, converged=int((~np.isnan(self.converged_at)).sum()),
                       converged_at_time=self.converged_at.tolist(),
                       converged_at_step=(self.converged_at / self.lr).tolist(),
                       final_grad_norm=self.grad_norm.tolist())
        return out
