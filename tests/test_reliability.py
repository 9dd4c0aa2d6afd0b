"""Reliability (issue 6): divergence is a result, failures are recorded, outputs survive SIGKILL, numbers reproduce.

In-process runs go through :func:`slr.app.run.run`; what only a process can show (exit codes, the job log, a kill, the
launchers) goes through ``python -m slr`` (or a two-line driver that breaks one function first), launched together
where possible so that they share their ~3 s of imports.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import slr.app.run
from slr.app.config import digest
from slr.io import METRIC_COLUMNS, MetricsWriter, read_json, write_json
from slr.results import read_metrics
from slr.app.job import finished_before
from slr.app.run import run
from slr.core.seeding import numpy_generator, torch_generator
from slr.core.task import Task
from slr.training.algorithms import OVERLAPS, Algorithm, init_sphere, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["task.d=12", "task.L=4", "train.steps=40", "train.log_every=10", "train.repeats=3", "eval.n_test=300",
        "eval.bayes_is=0"]


def strict_json(path: Path) -> dict:
    """The JSON at ``path``, refusing NaN and Infinity (which strict JSON has not)."""
    def refuse(token):
        raise ValueError(f"{path}: non-standard JSON constant {token}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def without_timings(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "timings"}


def env_for(outputs: Path) -> dict:
    env = dict(os.environ, CI="true", SLR_OUTPUTS=str(outputs))
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def launch(args: list[str], outputs: Path, driver: Path | None = None, **kw) -> subprocess.Popen:
    cmd = [sys.executable, str(driver)] if driver else [sys.executable, "-m", "slr"]
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([*cmd, *args], env=env_for(outputs), text=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    return dict(rc=proc.returncode, out=out or "", err=err or "")


def job_folder(sweep: Path, key: str) -> Path:
    """The multirun job folder whose name (its overrides) contains ``key``, e.g. ``seed=1``."""
    matches = [p for p in sweep.iterdir() if p.is_dir() and key in p.name.split(",")]
    assert len(matches) == 1, (key, [p.name for p in sweep.iterdir()])
    return matches[0]


# ----- the train loop on a scripted algorithm: exact divergence steps ----------------------------------------------
class Scripted(Algorithm):
    """Four repeats that misbehave on cue: 1's state turns NaN at step 7, 2's logged excess turns infinite from
    step 10 (its state stays finite), 3's state explodes (finite, 1e7) at step 3; 0 behaves."""

    stochastic = False

    def __init__(self, nan_all_at: int | None = None):
        self.KV = np.tile(np.eye(2, 4), (4, 1, 1))  # (R, 2, D)
        self.t, self.nan_all_at = 0, nan_all_at

    def step(self, lam: float) -> None:
        self.t += 1
        if self.t == 7:
            self.KV[1, 0, 0] = np.nan
        if self.t == 3:
            self.KV[3] *= 1e7
        if self.t == self.nan_all_at:
            self.KV[:] = np.inf


def scripted_log(t, lam, algo, alive):
    rows = []
    for r in np.flatnonzero(alive):
        norm_k, norm_v = np.sqrt((algo.KV[r] ** 2).sum(-1))
        rows.append(dict(step=t, repeat=int(r), lam=lam, **{k: 0.0 for k in OVERLAPS}, norm_k=float(norm_k),
                         norm_v=float(norm_v), excess=math.inf if (r == 2 and t >= 10) else 0.1))
    return rows


def test_train_stops_each_diverged_repeat_at_its_step_and_goes_on_with_the_others():
    algo = Scripted()
    hist = train(algo, steps=20, log_every=5, schedule=lambda t: 1.0, log=scripted_log)
    assert hist.diverged_at.tolist() == [-1, 7, 10, 3]  # state: the exact step; logged numbers: the logged step
    assert hist.steps_done == 20
    steps = {r: [row["step"] for row in hist.rows if row["repeat"] == r] for r in range(4)}
    assert steps == {0: [0, 5, 10, 15, 20], 1: [0, 5], 2: [0, 5, 10], 3: [0]}  # what was logged before stays
    assert np.isnan(algo.KV[1:]).all() and np.isfinite(algo.KV[0]).all()  # discarded repeats stay NaN


def test_train_stops_early_when_every_repeat_diverged():
    hist = train(Scripted(nan_all_at=4), steps=1000, log_every=5, schedule=lambda t: 1.0, log=scripted_log)
    assert hist.steps_done == 4
    assert hist.diverged_at.tolist() == [4, 4, 4, 3]


# ----- divergence through run(): a result, not a failure -----------------------------------------------------------
def test_divergence_of_every_repeat_is_recorded_with_its_step(make_cfg, tmp_path):
    summary = run(make_cfg(*TINY, "train.lr=1e6", "train.projected=false"), out_dir=tmp_path)
    assert summary["status"] == "diverged"
    on_disk = strict_json(tmp_path / "summary.json")  # no NaN/Infinity: non-finite numbers are written as null
    assert on_disk["status"] == "diverged"
    trained = on_disk["trained"]
    assert trained["alive"] == 0 and len(trained["diverged_at"]) == 3
    assert all(1 <= t <= 10 for t in trained["diverged_at"])  # within the first logging interval, exactly
    assert trained["steps_done"] == max(trained["diverged_at"])  # nothing left to train: the loop stopped
    assert on_disk["final_overlaps"]["median"]["kappa"] is None
    for key in ("bayes", "oracle", "oracle_best", "linear", "bilinear"):  # the baselines are still evaluated
        assert math.isfinite(on_disk["excess"][key]["mc"]) and math.isfinite(on_disk["excess"][key]["se"])
    m = read_metrics(tmp_path / "metrics.csv")
    first = m[m.step == 0]
    assert len(first) == 3 and np.isfinite(first[["kappa", "nu", "excess", "test_excess"]].to_numpy()).all()
    assert (tmp_path / "figures" / "dynamics.png").stat().st_size > 10_000  # drawn from what there is


@pytest.mark.parametrize("simulator", ["full", "reduced"])
def test_divergence_of_some_repeats_leaves_the_others_running(make_cfg, tmp_path, simulator):
    cfg = make_cfg("task.d=12", "task.L=4", "train.steps=200", "train.log_every=20", "train.repeats=8",
                   "eval.n_test=300", "eval.bayes_is=0", "figures=false", "train.projected=false", "train.lr=0.1",
                   "predictor.lam=1", "train.lam_schedule=constant",
                   f"train.simulator={simulator}")
    summary = run(cfg, out_dir=tmp_path)
    diverged_at = np.asarray(summary["trained"]["diverged_at"])
    alive = diverged_at < 0
    assert 0 < alive.sum() < 8, "this configuration should make some repeats, not all, diverge"
    assert summary["status"] == "diverged" and summary["trained"]["steps_done"] == 200
    assert len(summary["excess"]["trained"]["per_repeat"]) == alive.sum()
    assert all(math.isfinite(x) for x in summary["excess"]["trained"]["per_repeat"])
    m = read_metrics(tmp_path / "metrics.csv")
    for r in range(8):
        rows = m[m.repeat == r]
        if alive[r]:
            assert rows.step.tolist() == list(range(0, 201, 20))
        else:
            assert rows.step.max() <= diverged_at[r]
            before = rows[rows.step < diverged_at[r]]
            assert len(before) >= 1 and np.isfinite(before[["kappa", "nu", "excess"]].to_numpy()).all()
    strict_json(tmp_path / "summary.json")


def test_resume_counts_a_diverged_run_as_finished(make_cfg, tmp_path):
    """Re-running a diverged config with the same seed diverges again: resume skips it, like an ok run, but not a
    failed or running one, nor one of another config."""
    from slr.app.job import finished_before

    cfg = make_cfg("task.d=12", "task.L=4", "train.steps=30", "train.repeats=2", "train.lr=1e6", "train.projected=false", "eval.n_test=200",
                   "eval.bayes_is=0", "figures=false")
    summary = run(cfg, out_dir=tmp_path)
    assert summary["status"] == "diverged"
    assert finished_before(cfg, tmp_path)["status"] == "diverged"
    assert finished_before(make_cfg("task.d=13"), tmp_path) is None
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for status in ("failed", "running"):
        (tmp_path / "summary.json").write_text(json.dumps({**on_disk, "status": status}))
        assert finished_before(cfg, tmp_path) is None


# ----- failures: recorded in summary.json and the job log --------------------------------------------------------
def test_an_exception_inside_run_is_recorded(make_cfg, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("injected failure in evaluate_final")

    monkeypatch.setattr(slr.app.run, "evaluate_final", broken)
    with caplog.at_level(logging.ERROR, logger="slr"), pytest.raises(RuntimeError, match="injected"):
        run(make_cfg(*TINY), out_dir=tmp_path)
    summary = strict_json(tmp_path / "summary.json")
    assert summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: injected failure in evaluate_final"
    assert summary["trained"]["steps_done"] == 40  # what was known before the failure is kept
    assert len(read_metrics(tmp_path / "metrics.csv")) == 3 * 5
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Traceback" in logged and "injected failure" in logged


DRIVER = '''\
"""python -m slr with evaluate_final broken for seed=1 (a stand-in for an unexpected bug)."""
import slr.app.run

_evaluate_final = slr.app.run.evaluate_final


def evaluate_final(cfg, *args, **kwargs):
    if cfg.seed == 1:
        raise RuntimeError("injected failure in evaluate_final")
    return _evaluate_final(cfg, *args, **kwargs)


slr.app.run.evaluate_final = evaluate_final
slr.app.run.main()
'''


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    """A diverging run, a failing run and a sweep with one failing job, launched together."""
    root = tmp_path_factory.mktemp("processes")
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    procs = {
        "diverged": (launch([*TINY, "train.lr=1e6", "train.projected=false", f"hydra.run.dir={root / 'diverged'}"],
                            root), root / "diverged"),
        "failed": (launch([*TINY, "seed=1", f"hydra.run.dir={root / 'failed'}"], root, driver), root / "failed"),
        "sweep": (launch(["-m", *TINY, "figures=false", "seed=0,1,2", f"hydra.sweep.dir={root / 'sweep'}"], root,
                         driver), root / "sweep"),
    }
    return {name: dict(finish(proc), folder=folder) for name, (proc, folder) in procs.items()}


def test_a_diverged_run_exits_normally(processes):
    r = processes["diverged"]
    assert r["rc"] == 0, r["err"]
    assert "Traceback" not in r["out"] + r["err"]
    assert "3 of 3 repeats diverged" in r["out"]
    summary = strict_json(r["folder"] / "summary.json")
    assert summary["status"] == "diverged" and summary["trained"]["alive"] == 0
    assert (r["folder"] / "figures" / "dynamics.png").exists()


def test_a_failed_run_exits_non_zero_with_its_traceback_in_the_log(processes):
    r = processes["failed"]
    assert r["rc"] == 1
    summary = strict_json(r["folder"] / "summary.json")
    assert summary["status"] == "failed" and "injected failure in evaluate_final" in summary["error"]
    log = (r["folder"] / "slr.log").read_text()
    assert "Traceback" in log and "RuntimeError: injected failure in evaluate_final" in log
    assert (r["out"] + r["err"]).count("Traceback") == 1  # shown once (the log's console line), not twice


def test_a_failed_job_leaves_the_other_jobs_of_its_sweep_intact(processes):
    r, sweep = processes["sweep"], processes["sweep"]["folder"]
    assert r["rc"] != 0
    for seed in (0, 2):
        job = job_folder(sweep, f"seed={seed}")
        assert strict_json(job / "summary.json")["status"] == "ok"
        assert len(read_metrics(job / "metrics.csv")) == 3 * 5
    failed = job_folder(sweep, "seed=1")
    assert strict_json(failed / "summary.json")["status"] == "failed"
    assert "Traceback" in (failed / "slr.log").read_text()


# ----- outputs that survive interruption -------------------------------------------------------------------------
def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_json(path, {"status": "ok"})

    def no_rename(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError):
        write_json(path, {"status": "running"})
    assert read_json(path) == {"status": "ok"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left behind


def test_write_json_is_strict_and_readable_by_others(tmp_path):
    write_json(tmp_path / "s.json", {"a": float("nan"), "b": np.float32(np.inf), "c": np.arange(2),
                                     "d": torch.tensor([1.5, float("nan")]), "e": np.bool_(True)})
    assert strict_json(tmp_path / "s.json") == {"a": None, "b": None, "c": [0, 1], "d": [1.5, None], "e": True}
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0o600


def test_metrics_are_on_disk_as_soon_as_written_and_a_cut_line_is_dropped(tmp_path):
    path = tmp_path / "metrics.csv"
    writer = MetricsWriter(path)
    rows = [dict(step=0, repeat=r, lam=1.0, kappa=0.1 * r, excess=float("nan")) for r in range(3)]
    writer.write(rows)
    assert len(read_metrics(path)) == 3  # flushed: visible before close
    with open(path, "a") as f:
        f.write("10,0,1.0,0.12")  # a line cut short by a kill
    m = read_metrics(path)
    writer.close()
    assert len(m) == 3 and list(m.columns) == list(METRIC_COLUMNS) and m.excess.isna().all()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_run_leaves_files_that_parse(make_cfg, tmp_path, sig):
    """SIGKILL leaves status running; SIGTERM is caught and recorded as failed (exit 143). Either way every file
    parses, the metrics logged so far are kept, and resume would run the job again."""
    overrides = ["train.simulator=reduced", "train.steps=100000000", "train.log_every=200", "train.repeats=4",
                 "eval.bayes_is=0"]
    out = tmp_path / "killed"
    proc = launch([*overrides, f"hydra.run.dir={out}"], tmp_path, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            metrics = out / "metrics.csv"
            if metrics.exists() and metrics.read_text().count("\n") > 1 + 4 * 5:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no metrics within 120 s")
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 143)
    for path in out.rglob("*"):  # every file it left parses
        if path.is_dir():
            continue
        if path.suffix == ".json":
            strict_json(path)
        elif path.suffix == ".csv":
            read_metrics(path)
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif path.suffix == ".log":
            path.read_text()
        else:
            pytest.fail(f"unexpected file {path.relative_to(out)}")
    summary = strict_json(out / "summary.json")
    if sig == signal.SIGKILL:
        assert summary["status"] == "running"
    else:
        assert summary["status"] == "failed" and "SIGTERM" in summary["error"]
        assert "SIGTERM" in (out / "slr.log").read_text()
    m = read_metrics(out / "metrics.csv")
    assert len(m) >= 4 * 5 and (m.step % 200 == 0).all() and np.isfinite(m[["kappa", "excess"]].to_numpy()).all()
    # resume re-runs it: the folder does not hold a finished run of this config
    cfg = make_cfg(*overrides)
    assert summary["config_digest"] == digest(cfg)
    assert finished_before(cfg, out) is None


# ----- reproducibility -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    ["train=sgd"], ["train=sgd", "train.simulator=reduced"], ["train=pgd"], ["train=erm", "train.n_train=50"]],
    ids=["sgd-full", "sgd-reduced", "pgd", "erm"])
def test_same_config_and_seed_give_identical_numbers(make_cfg, tmp_path, overrides):
    cfg = make_cfg(*TINY, *overrides, "figures=false", "seed=3")
    a, b = run(cfg, out_dir=tmp_path / "a"), run(cfg, out_dir=tmp_path / "b")
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    assert without_timings(strict_json(tmp_path / "a" / "summary.json")) == \
        without_timings(strict_json(tmp_path / "b" / "summary.json"))
    assert a["status"] == "ok" and b["config_digest"] == a["config_digest"]


def test_different_seeds_give_different_task_initialisation_and_data(make_cfg, tmp_path):
    t0, t1 = Task(12, 4, 0.7, 0.1, seed=0), Task(12, 4, 0.7, 0.1, seed=1)
    assert not torch.allclose(t0.k_star, t1.k_star) and not torch.allclose(t0.v_star, t1.v_star)
    C0, C1 = (init_sphere(3, 12, numpy_generator(seed, "init")) for seed in (0, 1))
    assert not np.allclose(C0, C1)
    x0 = t0.sample(5, torch_generator(0, "train")).X
    x1 = t0.sample(5, torch_generator(1, "train")).X
    assert not torch.allclose(x0, x1)
    # and through run(): the first logged overlaps (initialisation against k*, v*) and every later number differ
    for seed in (0, 1):
        run(make_cfg(*TINY, "figures=false", f"seed={seed}"), out_dir=tmp_path / str(seed))
    m0, m1 = (read_metrics(tmp_path / str(seed) / "metrics.csv") for seed in (0, 1))
    for col in ("kappa", "nu", "excess", "test_excess"):
        assert not np.allclose(m0[col].to_numpy(), m1[col].to_numpy())


@pytest.mark.slow
def test_basic_and_joblib_launchers_give_identical_numbers(make_cfg, tmp_path):
    """Every simulator and kernel: SGD on the full simulator (torch), on the reduced one (the compiled kernel and
    its numpy Gaussian source), PGD in R^d and in 4 coordinates (compiled); two seeds each."""
    args = ["-m", *TINY, "figures=false", "seed=0,1", "train=sgd,pgd", "train.simulator=full,reduced"]
    procs = {name: launch([*args, f"hydra/launcher={name}", f"hydra.sweep.dir={tmp_path / name}"], tmp_path)
             for name in ("basic", "joblib")}
    results = {name: finish(p) for name, p in procs.items()}
    for name, r in results.items():
        assert r["rc"] == 0, (name, r["err"])
    jobs = sorted(p.name for p in (tmp_path / "basic").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 8
    for job in jobs:
        basic, joblib = (tmp_path / name / job for name in ("basic", "joblib"))
        assert (basic / "metrics.csv").read_bytes() == (joblib / "metrics.csv").read_bytes(), job
        assert without_timings(strict_json(basic / "summary.json")) == \
            without_timings(strict_json(joblib / "summary.json")), job
    for overrides in (["train=sgd", "train.simulator=full"], ["train=sgd", "train.simulator=reduced"]):
        out = tmp_path / "in_process" / overrides[1]
        run(make_cfg(*TINY, "figures=false", "seed=1", *overrides), out_dir=out)
        basic, = [p for p in (tmp_path / "basic").iterdir() if {"seed=1", *overrides} <= set(p.name.split(","))]
        assert (basic / "metrics.csv").read_bytes() == (out / "metrics.csv").read_bytes()
        assert without_timings(strict_json(basic / "summary.json")) == without_timings(strict_json(out / "summary.json"))


# ----- no pickles --------------------------------------------------------------------------------------------------
PICKLING = re.compile(r"\bimport pickle\b|\bfrom pickle\b|\bpickle\.(dump|load)|\b(cloud)?pickle\.|\bdill\b|"
                      r"torch\.(save|load)\(|np\.(save|load)\(|numpy\.(save|load)\(|allow_pickle|"
                      r"(to|read)_pickle\(|joblib\.(dump|load)\(|\.pkl\b|\.pickle\b")


def test_no_code_writes_or_reads_pickles():
    sources = [*(ROOT / "slr").rglob("*.py"), *(ROOT / "scripts").rglob("*.py"), *(ROOT / "slr").rglob("*.yaml")]
    offenders = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in sources
                 for i, line in enumerate(p.read_text().splitlines(), 1) if PICKLING.search(line)]
    assert not offenders, "\n".join(offenders)


def test_a_run_folder_holds_only_plain_files(make_cfg, tmp_path):
    run(make_cfg(*TINY, "train=erm", "train.n_train=50"), out_dir=tmp_path)
    suffixes = {p.suffix for p in tmp_path.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".csv", ".png", ".pdf"}, suffixes
