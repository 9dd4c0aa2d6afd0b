"""train=flow (docs/dynamics.md): the gradient flow against population PGD (first order in lr, reduced and full d),
the run's files and summary, until_converged, schedules, huge d, and a solver failure."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from slr.app.run import run
from slr.core.reduced import ReducedTask
from slr.core.task import Task
from slr.results import read_metrics
from slr.training.algorithms import INITS, embed, lam_schedule, overlap_path, population_pgd
from slr.training.flow import GradientFlow

L, GAMMA = 10, math.sqrt(0.5)
TINY = ["train=flow", "task.d=60", "train.repeats=3", "train.steps=400", "train.log_every=100", "eval.n_test=500",
        "eval.bayes_is=0", "figures=false", "predictor.lam=0.1", "train.lam_schedule=constant"]


def _gaps(d: int, time_: float, lrs, *, full: bool, init: str = "sphere", R: int = 4) -> list[float]:
    """Largest |overlap| gap along the path between PGD at each lr and the flow, from the same starts."""
    task = Task(d, L, GAMMA, seed=0) if full else ReducedTask(d, L, GAMMA)
    C0 = INITS[init](R, d, np.random.default_rng(0))
    sched = lam_schedule("constant", 0.1, 0.0)
    flow = GradientFlow(ReducedTask(d, L, GAMMA), C0, lr=lrs[-1], M=task.M, L=L, gamma=GAMMA, horizon=time_,
                        rtol=1e-11, atol=1e-14)
    steps = round(time_ / lrs[-1])
    ref = overlap_path(flow, steps=steps, log_every=steps // 10, schedule=sched)
    gaps = []
    for lr in lrs:
        steps = round(time_ / lr)
        KV0 = embed(C0, task, np.random.default_rng(1)).numpy() if full else C0
        p = overlap_path(population_pgd(task, KV0, lr=lr, M=task.M, L=L, gamma=GAMMA, d=d), steps=steps,
                         log_every=steps // 10, schedule=sched)
        gaps.append(float(np.abs(np.abs(p) - np.abs(ref)).max()))
    return gaps


def test_pgd_approaches_the_flow_in_proportion_to_lr():
    lrs = [4e-3, 2e-3, 1e-3, 5e-4]
    gaps = _gaps(200, 6.0, lrs, full=False)
    ratio = np.array(gaps) / np.array(lrs)
    assert gaps[0] > 1e-5  # the comparison sees something
    np.testing.assert_allclose(ratio, ratio[-1], rtol=0.15)  # gap = C lr + o(lr)


def test_full_dimensional_pgd_follows_the_flow():
    lrs = [2e-3, 1e-3]
    gaps = _gaps(12, 3.0, lrs, full=True, R=3)
    assert gaps[1] < 0.65 * gaps[0] and gaps[0] < 0.5 * 2e-3 * 50


def test_flow_run_files_and_summary(make_cfg, tmp_path):
    s = run(make_cfg(*TINY), out_dir=tmp_path)
    assert s["status"] == "ok"
    tr = s["trained"]
    assert tr["algo"] == "flow" and tr["solver"] == "BDF" and tr["evaluations"]["rhs"] > 0
    assert tr["steps_done"] == 400 and tr["flow_time"] >= 400 * 0.004 - 1e-12
    rows = read_metrics(tmp_path / "metrics.csv")
    assert sorted(set(rows["step"])) == [0, 100, 200, 300, 400]
    assert (rows["excess"] >= 0).all()
    # a valid Gram matrix of unit vectors at every logged step
    k2 = rows["kappa"] ** 2 + rows["eta"] ** 2
    v2 = rows["theta"] ** 2 + rows["nu"] ** 2
    assert (k2 <= 1 + 1e-12).all() and (v2 <= 1 + 1e-12).all()
    again = run(make_cfg(*TINY), out_dir=tmp_path / "again")
    assert again["final_overlaps"]["median"] == s["final_overlaps"]["median"]


def test_until_converged_stops_and_records_the_time(make_cfg, tmp_path):
    s = run(make_cfg(*TINY, "train.init=manifold", "train.steps=100000", "train.until_converged=true",
                     "train.grad_tol=1e-6"), out_dir=tmp_path)
    tr = s["trained"]
    assert tr["converged"] == 3 and tr["steps_done"] < 100000
    assert max(tr["converged_at_step"]) <= tr["steps_done"] and max(tr["final_grad_norm"]) <= 1e-6
    rows = read_metrics(tmp_path / "metrics.csv")
    assert rows["step"].max() == tr["steps_done"]


def test_schedule_is_honoured(make_cfg, tmp_path):
    s = run(make_cfg(*TINY, "train.lam_schedule=inverse", "train.schedule_rate=0.01", "predictor.lam=1.0"),
            out_dir=tmp_path)
    rows = read_metrics(tmp_path / "metrics.csv")
    np.testing.assert_allclose(rows["lam"], 1.0 / (1.0 + 0.01 * rows["step"]))
    assert s["trained"]["lam_final"] == pytest.approx(1.0 / 5.0)


def test_flow_at_a_trillion_dimensions(make_cfg, tmp_path):
    s = run(make_cfg(*TINY, "task.d=1000000000000", "predictor.lam=auto", "train.lr=1", "train.steps=40",
                     "train.log_every=20"), out_dir=tmp_path)
    assert s["status"] == "ok"
    cf = np.asarray(s["excess"]["trained"]["closed_form_per_repeat"])
    assert (cf >= 0).all() and np.isfinite(cf).all()


def test_solver_failure_is_a_failed_status(make_cfg, tmp_path, monkeypatch):
    def broken(self, tau, y):
        return np.full_like(y, np.nan) if tau > 0.1 else np.zeros_like(y)

    monkeypatch.setattr(GradientFlow, "_fun", broken)
    s = run(make_cfg(*TINY), out_dir=tmp_path)
    assert s["status"] == "failed" and "BDF failed" in s["error"]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def test_the_jet_gradient_without_the_hessian_is_the_same():
    """``ErfRiskJet.derivatives(..., hessian=False)`` (what the drift uses) returns the gradient of the full call, bit
    for bit, also when kappa is shared by points that differ in the other overlaps (the SGD limit's sigma points)."""
    from slr.theory.closed_forms import ErfRiskJet

    jet = ErfRiskJet(0.7, M=math.sqrt(200), L=10, gamma=math.sqrt(0.5))
    rng = np.random.default_rng(0)
    kappa = rng.uniform(-1, 1, 6)
    rest = rng.uniform(-0.5, 0.5, (4, 2, 6))  # nu, theta, eta, rho at two points per kappa
    G, H = jet.derivatives(np.broadcast_to(kappa, (2, 6)), *rest)
    G2, H2 = jet.derivatives(kappa, *rest, hessian=False)
    assert H2 is None and H.shape == (2, 6, 5, 5)
    np.testing.assert_array_equal(G, G2)
