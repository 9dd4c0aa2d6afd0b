"""Online SGD of erf attention through its deterministic high-dimensional limit (``train=sgd train.simulator=ode``):
the ODE of :mod:`slr.theory.sgd_limit` integrated by a stiff solver, all repeats at once (``docs/dynamics.md``)."""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.integrate import BDF
from scipy.sparse import block_diag

from slr.core.predictors import ERF
from slr.core.reduced import ReducedTask
from slr.core.task import Task
from slr.theory import sgd_limit
from slr.theory.flow import canonical_coordinates, overlaps_of
from slr.training.algorithms import Algorithm
from slr.training.flow import SolverFailure


class SGDLimit(Algorithm):
    """``R`` repeats of the limit ODE from their initial overlaps (``V = 0``), advanced between logged steps by a BDF
    solver with the Jacobian's block-diagonal sparsity (repeats are independent). ``lr = delta/d`` and ``t = step/d``,
    so ``train.steps``, ``train.lr`` and the ``lam`` schedule mean what they mean for the chain."""

    stochastic = False  # no Monte Carlo test risk: the logged excess is E R over the fluctuation
    continuous = True  # train() calls advance_to(t, t_next, schedule)
    kernel = "scipy BDF"
    stop_step = None

    def __init__(self, task: Task, C0: np.ndarray, *, lr: float, batch_size: int, schedule: Callable[[int], float],
                 correction: bool = True, horizon: int = 0, rtol: float = 1e-4, atol: float = 1e-6):
        self.eval_task, self.kind, self.schedule = ReducedTask.of(task, 4), ERF, schedule
        self.model = sgd_limit.LimitModel(d=task.d, M=task.M, L=task.L, gamma=task.gamma, eps=task.eps,
                                          delta=lr * task.d, B=batch_size, correction=correction)
        self.y = np.concatenate([overlaps_of(np.asarray(C0, dtype=np.float64)), np.zeros((len(C0), 1))], axis=1)
        self.rtol, self.atol, self.evaluations, self.solver_steps = rtol, atol, 0, 0
        self.calls = 0  # calls of the right-hand side: the Jacobian's columns go in one call (evaluations counts each)
        self.horizon = int(horizon)  # steps: how far one solver runs before it is restarted
        self._solver, self._t, self._live = None, 0, None
        self.min_overlap = np.abs(self.y[:, :4]).max(1)  # (R,) see details()

    @property
    def KV(self) -> np.ndarray:
        """Canonical coordinates (R, 2, 4) at the mean overlaps (for the final evaluation of the predictor)."""
        C = canonical_coordinates(self.y[:, :5])
        C[~np.isfinite(self.y).all(1)] = np.nan
        return C

    def overlaps(self) -> dict[str, np.ndarray]:
        o = self.y[:, :5]
        return dict(kappa=o[:, 0], nu=o[:, 1], theta=o[:, 2], eta=o[:, 3], rho=o[:, 4],
                    norm_k=np.ones(len(o)), norm_v=np.ones(len(o)))

    def fluctuation(self) -> np.ndarray:
        """``V`` (R,), the variance of ``m = M theta`` across runs of the chain at the current time."""
        return self.y[:, 5].copy()

    def closed_form_excess(self, lam: float, o: dict, task: Task) -> np.ndarray:
        """The logged excess: ``E R`` over the fluctuation the ODE carries."""
        return self.expected_excess(lam)

    def details(self) -> dict:
        m = self.model
        return dict(solver="BDF", rtol=self.rtol, atol=self.atol, solver_steps=self.solver_steps,
                    evaluations=dict(rhs=int(self.evaluations), rhs_calls=int(self.calls)), delta=m.delta, ode_correction=m.correction,
                    fluctuation_V=self.fluctuation(), min_overlap=self.min_overlap.copy())

    def step(self, lam: float) -> None:  # pragma: no cover - train() uses advance_to
        raise RuntimeError("the SGD limit advances by advance_to()")

    def advance_to(self, t: int, t_next: int, schedule: Callable[[float], float]) -> tuple[int, np.ndarray]:
        """:meth:`advance` from step ``t`` to ``t_next`` (the loop's interface for ODEs)."""
        return self.advance(t, np.empty(t_next - t))

    def expected_excess(self, lam: float) -> np.ndarray:
        """``E R`` (R,) over the fluctuation of ``m`` (:func:`slr.theory.sgd_limit.expected_excess`)."""
        m = self.model
        return sgd_limit.expected_excess(lam, self.y, d=m.d, L=m.L, gamma=m.gamma, M=m.M)

    def discard(self, mask: np.ndarray) -> None:
        self.y[mask] = np.nan
        self.min_overlap[mask] = np.nan
        self._solver = None

    def advance(self, t: int, lams: np.ndarray) -> tuple[int, np.ndarray]:
        """Integrate from step ``t`` to ``t + len(lams)`` (``lam`` from the schedule, in continuous time). One BDF
        solver runs on to ``horizon`` steps across calls; the state at a logged step is read from its dense output."""
        d, R = self.model.d, len(self.y)
        at = np.full(R, -1, dtype=np.int64)
        end = t + len(lams)
        live = np.isfinite(self.y).all(1)
        if not live.any() or len(lams) == 0:
            return end, at
        if self._solver is None or self._t != t or end > self._solver.t_bound * d or not np.array_equal(live, self._live):
            self._start(t, max(end, self.horizon), live)
        sol = self._solver
        while sol.t < end / d:
            message = sol.step()
            self.solver_steps += 1
            if sol.status == "failed":
                raise SolverFailure(f"BDF failed at t = step/d = {sol.t:.6g} (step {sol.t * d:.0f}): {message}")
            if sol.t <= end / d:  # a step past the end is taken into account at the end, below
                self._note_min_overlap(sol.y, live)
        y = sol.dense_output()(end / d) if sol.t > end / d else sol.y
        self._note_min_overlap(y, live)
        self.y[live] = y.reshape(-1, 6)
        self._t = end
        return end, at

    def _note_min_overlap(self, yflat: np.ndarray, live: np.ndarray) -> None:
        """Keep the smallest ``max(|kappa|, |nu|, |theta|, |eta|)`` each run has reached: once every overlap is far
        below the solver's atol, where the ODE goes next is set by integration error (docs/dynamics.md, "Phase
        diagram")."""
        reached = np.abs(yflat.reshape(-1, 6)[:, :4]).max(1)
        self.min_overlap[live] = np.minimum(self.min_overlap[live], reached)

    def _start(self, t: int, until: int, live: np.ndarray) -> None:
        d, n = self.model.d, int(live.sum())

        def rhs(tau, yflat):  # yflat (6n,) or, for the finite-difference Jacobian, (6n, k): k states in one call
            k = 1 if yflat.ndim == 1 else yflat.shape[1]
            self.evaluations += k
            self.calls += 1
            y = yflat.reshape(n, 6, k).transpose(2, 0, 1).reshape(k * n, 6)
            dy = sgd_limit.limit_rhs(y, self.schedule(tau * d), self.model)
            return dy.reshape(k, n, 6).transpose(1, 2, 0).reshape(yflat.shape)

        self._solver = BDF(rhs, t / d, self.y[live].ravel(), until / d, rtol=self.rtol, atol=self.atol,
                           jac_sparsity=block_diag([np.ones((6, 6))] * n), vectorized=True)
        self._t, self._live = t, live
