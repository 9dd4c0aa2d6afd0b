"""The SGD-limit presets (``docs/dynamics.md``, "Online SGD: the high-dimensional limit"): ``experiment=sweep_sgd_limit``
and ``experiment=phase_sgd`` as tiny multiruns, and their analysis (:mod:`slr.results.sgd_limit`, the scripts) checked
against numbers computed directly from the jobs' files."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from slr.results import sgd_limit
from slr.results.sweep import read_sweep
from test_sweeps import multirun, script


@pytest.mark.parametrize("d, delta, every, steps", [(400, 1.6, 38, 1520), (1600, 0.4, 600, 24000),
                                                    (25600, 0.08, 32000, 1280000)])
def test_sweep_sgd_limit_runs_to_flow_time_6_capped_at_t_50(make_cfg, d, delta, every, steps):
    cfg = make_cfg("experiment=sweep_sgd_limit", f"task.d={d}", f"train.lr={delta}")
    assert (cfg.train.log_every, cfg.train.steps) == (every, steps)  # t = min(6/delta, 50), 40 logs
    assert (cfg.train.lr_scale, cfg.train.repeats, cfg.train.lam_schedule) == ("d", 32, "constant")


@pytest.fixture(scope="module")
def limit_sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sgd_limit") / "sweep"
    res = multirun(sweep_dir, "experiment=sweep_sgd_limit", "train.init=sphere", "task.d=100,200", "train.lr=1.6",
                   "train.batch_size=5", "train.repeats=8", "eval.n_test=200", "train.log_test_size=0")
    assert res.returncode == 0, res.stderr[-3000:]
    return sweep_dir


def _medians(job_dir, q):
    m = pd.read_csv(job_dir / "metrics.csv")
    x = m.kappa.abs() if q == "abs_kappa" else m.nu.abs() if q == "abs_nu" else m.excess
    return x.groupby(m.step).median()


def test_sweep_sgd_limit_table_is_the_sup_gap_between_chain_and_ode_medians(limit_sweep, tmp_path):
    jobs = read_sweep(limit_sweep)
    assert len(jobs) == 8 and all(j.status == "ok" for j in jobs)  # 2 d x (chain, ODE) x ode_correction
    v = sgd_limit.validation(limit_sweep)
    table = v["table"].set_index("d")
    assert list(table.index) == [100, 200] and not v["skipped"]
    for d in (100, 200):
        folder = {}
        for j in jobs:
            o = j.overrides
            if o["task.d"] == d:
                model = "chain" if o["train.simulator"] == "reduced" else "ode" if o["train.ode_correction"] else "flow"
                folder[model] = j.path
        for q in sgd_limit.QUANTITIES:
            chain = _medians(folder["chain"], q)
            assert chain.index[-1] == round(6 / 1.6 * d / 40) * 40
            for model in ("ode", "flow"):
                other = _medians(folder[model], q)
                assert other.iloc[0] == pytest.approx(chain.iloc[0], rel=1e-12)  # the same initial overlaps
                assert table.loc[d, f"{model}_{q}"] == pytest.approx((chain - other).abs().max(), rel=1e-12)
    slope = v["slopes"].iloc[0]
    for c in ("ode_abs_kappa", "flow_excess"):
        assert slope[c] == pytest.approx(np.log(table.loc[200, c] / table.loc[100, c]) / np.log(2.0), rel=1e-9)
    curves = v["curves"]
    assert set(curves.model) == {"chain", "ode", "flow"} and (curves.t == curves.step / curves.d).all()
    chain = curves[curves.model == "chain"]
    assert (chain.abs_kappa_lo <= chain.abs_kappa).all() and (chain.abs_kappa <= chain.abs_kappa_hi).all()

    res = script("sweep_sgd_limit.py", limit_sweep, "--out", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "figures" / "sgd_limit_B5.png").stat().st_size > 20000
    written = pd.read_csv(tmp_path / "table.csv")
    np.testing.assert_allclose(written.ode_excess, v["table"].ode_excess, rtol=1e-9)
    assert {"chain_s", "ode_s", "flow_s"} <= set(written.columns) and "log-log slopes" in (tmp_path / "table.md").read_text()


def test_phase_classes():
    o = dict(kappa=[0.95, 0.1, 0.95, 0.2, 0.1], nu=[-0.92, 0.1, 0.5, 0.2, 0.1], eta=[0.0, 0.95, 0.0, 0.1, 0.0])
    V = [0.1, 0.1, 0.1, 50.0, np.nan]
    assert list(sgd_limit.classify(o, V, M=5.0)) == ["aligned", "swapped", "stalled", "unstable", "unstable"]
    # a run whose overlaps all fell below the floor on the way is undecided, whatever its end (unless unstable)
    low = [1e-9, 1e-3, 1e-6, 1e-9, 0.2]
    assert list(sgd_limit.classify(o, V, M=5.0, min_overlap=low)) == ["undecided", "swapped", "undecided", "unstable",
                                                                      "unstable"]


@pytest.fixture(scope="module")
def phase_sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("phase") / "sweep"
    res = multirun(sweep_dir, "experiment=phase_sgd", "train.lr=0.08,1.6", "predictor.lam=0.5,2.0", "seed=0,1",
                   "train.steps=4000", "train.log_every=2000", "train.schedule_rate=1e-3", "train.repeats=4",
                   "eval.n_test=200")
    assert res.returncode == 0, res.stderr[-3000:]
    return sweep_dir


def test_phase_sgd_table_counts_the_final_states_of_every_repeat(phase_sweep, tmp_path):
    jobs = read_sweep(phase_sweep)
    assert len(jobs) == 8 and all(j.status == "ok" for j in jobs)
    table = sgd_limit.phase(phase_sweep).set_index(["delta", "lam0"])
    assert sorted(table.index) == [(0.08, 0.5), (0.08, 2.0), (1.6, 0.5), (1.6, 2.0)]
    by_job = {}
    for j in jobs:
        o, V = j.summary["final_overlaps"]["per_repeat"], np.array(j.summary["trained"]["fluctuation_V"])
        low = j.summary["trained"]["min_overlap"]
        by_job[j.overrides["train.lr"], j.overrides["predictor.lam"], j.overrides["seed"]] = [
            "unstable" if not v <= j.summary["task"]["M"] ** 2 else "undecided" if m < 1e-4 else "swapped" if abs(e) >= 0.9
            else "aligned" if min(abs(k), abs(n)) >= 0.9 else "stalled"
            for k, n, e, v, m in zip(o["kappa"], o["nu"], o["eta"], V, low)]
    for (delta, lam0), row in table.iterrows():
        states = by_job[delta, lam0, 0] + by_job[delta, lam0, 1]  # two seeds pooled
        for s in sgd_limit.STATES:
            assert row[s] == pytest.approx(states.count(s) / 8)

    # a job whose solver failed counts as train.repeats unstable repeats, with its message
    broken = tmp_path / "sweep"
    shutil.copytree(phase_sweep, broken)
    job = next(j for j in read_sweep(broken) if j.overrides["train.lr"] == 1.6 and j.overrides["predictor.lam"] == 2.0
               and j.overrides["seed"] == 1)
    summary = json.loads((job.path / "summary.json").read_text())
    (job.path / "summary.json").write_text(json.dumps(dict(status="failed", error="BDF failed at t = 3", name=summary["name"])))
    row = sgd_limit.phase(broken).set_index(["delta", "lam0"]).loc[(1.6, 2.0)]
    assert row.unstable == pytest.approx((by_job[1.6, 2.0, 0].count("unstable") + 4) / 8)
    assert "BDF failed" in row.message and np.isnan(row.seconds)

    res = script("phase_sgd.py", phase_sweep, "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "out" / "figures" / "phase_sgd.png").stat().st_size > 20000
    np.testing.assert_allclose(pd.read_csv(tmp_path / "out" / "phase.csv").set_index(["delta", "lam0"]).aligned,
                               table.aligned)


def test_phase_reads_the_exact_chain_on_the_same_grid(tmp_path):
    """``experiment=phase_sgd train.simulator=reduced``: the chain's jobs (no fluctuation V, no collapse floor) are
    classified from their final overlaps alone, as the ODE's are."""
    sweep_dir = tmp_path / "chain"
    res = multirun(sweep_dir, "experiment=phase_sgd", "train.simulator=reduced", "train.lr=0.08,1.6", "predictor.lam=2.0",
                   "train.steps=2000", "train.log_every=1000", "train.schedule_rate=1e-3", "train.repeats=4",
                   "eval.n_test=200")
    assert res.returncode == 0, res.stderr[-3000:]
    table = sgd_limit.phase(sweep_dir).set_index(["delta", "lam0"])
    assert sorted(table.index) == [(0.08, 2.0), (1.6, 2.0)]
    for j in read_sweep(sweep_dir):
        o = j.summary["final_overlaps"]["per_repeat"]
        states = ["swapped" if abs(e) >= 0.9 else "aligned" if min(abs(k), abs(n)) >= 0.9 else "stalled"
                  for k, n, e in zip(o["kappa"], o["nu"], o["eta"])]
        row = table.loc[(j.overrides["train.lr"], 2.0)]
        for s in sgd_limit.STATES:
            assert row[s] == pytest.approx(states.count(s) / 4), s


def test_a_solver_failure_exits_1_with_its_message_and_a_sweep_goes_on(tmp_path):
    """Past the stability edge (delta = 3.2, lam0 = 4) the fluctuation of M theta blows up and BDF fails: a single run
    exits 1 with the solver's message and no traceback, summary.json says failed; in a sweep its sibling finishes and
    the sweep exits 0 (the phase diagram counts the failed cell as unstable)."""
    import subprocess
    import sys

    from test_sweeps import _env

    cmd = [sys.executable, "-m", "slr", "experiment=phase_sgd", "train.lr=3.2", "predictor.lam=4.0", "train.repeats=2",
           "train.steps=2000", "eval.n_test=200", f"hydra.run.dir={tmp_path / 'run'}"]
    res = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    out = res.stdout + res.stderr
    assert "BDF failed" in out and "Traceback" not in out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"
    res = multirun(tmp_path / "sweep", "experiment=phase_sgd", "train.lr=0.08,3.2", "predictor.lam=4.0",
                   "train.repeats=2", "train.steps=2000", "eval.n_test=200")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(j.status for j in read_sweep(tmp_path / "sweep")) == ["failed", "ok"]


def test_a_run_whose_overlaps_collapse_says_so(make_cfg, tmp_path, caplog):
    """delta = 0.4, lam0 = 1: every overlap falls below 1e-4 on the way; the run warns that the ODE does not decide its
    end state, and records the smallest value per repeat; the paper's settings do not warn."""
    import logging

    from slr.app.run import run

    with caplog.at_level(logging.WARNING, logger="slr"):
        s = run(make_cfg("experiment=phase_sgd", "train.lr=0.4", "predictor.lam=1.0", "train.steps=20000",
                         "train.repeats=2", "eval.n_test=200"), out_dir=tmp_path / "collapse")
    assert max(s["trained"]["min_overlap"]) < 1e-4
    assert "2 of 2 repeats: every overlap fell below 0.0001" in caplog.text and "integration error" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="slr"):
        s = run(make_cfg("experiment=phase_sgd", "train.lr=0.08", "predictor.lam=2.0", "train.steps=20000",
                         "train.repeats=2", "eval.n_test=200"), out_dir=tmp_path / "paper")
    assert min(s["trained"]["min_overlap"]) > 1e-2 and "integration error" not in caplog.text
