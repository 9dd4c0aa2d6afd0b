"""Sweeps end to end: tiny multiruns (basic and joblib launchers) as subprocesses, aggregate and compare_bayes on them,
a sweep with a failing job, resume, slr-report, corrupt job folders, and the sweep presets' configs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from slr.results import report
from slr.results import sweep
from slr.app.config import check
from slr.app.schema import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]  # the checkout

# two values of d, two seeds, a few steps: about a second per job
TINY = ["task.d=6,8", "seed=0,1", "task.L=3", "train.steps=20", "train.log_every=10", "train.repeats=2",
        "eval.n_test=400", "eval.bayes_is=1000", "figures=false"]
SWEEP_PRESETS = ["sweep_d", "sweep_d_reduced", "sweep_d_softmax", "sweep_L", "sweep_lam", "sweep_n",
                 "sweep_softmax_gamma1", "sweep_d_asymptotic", "sweep_sgd_limit", "phase_sgd"]


def _env(base: Path) -> dict:
    return dict(os.environ, SLR_OUTPUTS=str(base / "outputs"), CI="true")


def multirun(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m slr -m <overrides> hydra.sweep.dir=<sweep_dir>`` in a subprocess."""
    cmd = [sys.executable, "-m", "slr", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    return subprocess.run(cmd, cwd=sweep_dir.parent, env=_env(sweep_dir.parent), capture_output=True, text=True,
                          timeout=600)


def script(name: str, *args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / name), *map(str, args)]
    return subprocess.run(cmd, env=dict(os.environ, CI="true"), capture_output=True, text=True, timeout=300)


def numbers(csv: Path) -> pd.DataFrame:
    """An aggregate without what may differ between identical runs (timings, paths), indexed by job."""
    df = pd.read_csv(csv).set_index("job").sort_index()
    return df.drop(columns=[c for c in df if c.startswith("timings.") or c == "path"])


def assert_same_numbers(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.index) == list(b.index) and set(a.columns) == set(b.columns)
    b = b[a.columns]
    num = a.select_dtypes("number").columns
    np.testing.assert_allclose(a[num].to_numpy(float), b[num].to_numpy(float), rtol=1e-9, equal_nan=True)
    other = [c for c in a.columns if c not in num]
    assert a[other].fillna("").astype(str).equals(b[other].fillna("").astype(str))


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """The tiny sweep with the basic launcher (shared, read-only: copy it to change it)."""
    sweep_dir = tmp_path_factory.mktemp("basic") / "sweep"
    res = multirun(sweep_dir, *TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    return sweep_dir


def test_basic_multirun_writes_one_folder_per_job_named_by_its_overrides(tiny_sweep):
    jobs = sweep.read_sweep(tiny_sweep)
    assert len(jobs) == 4 and all(j.status == "ok" for j in jobs)
    assert {(j.overrides["task.d"], j.overrides["seed"]) for j in jobs} == {(6, 0), (6, 1), (8, 0), (8, 1)}
    for j in jobs:
        assert f"task.d={j.overrides['task.d']}" in j.name and f"seed={j.overrides['seed']}" in j.name
        assert {"config.yaml", "overrides.yaml", "hydra.yaml"} <= {p.name for p in (j.path / ".hydra").iterdir()}
        assert (j.path / "metrics.csv").is_file() and (j.path / "slr.log").is_file()
        assert j.summary["task"]["d"] == j.overrides["task.d"]
    assert sweep.choose_axis(jobs) == ("task.d", [])


def test_aggregate_and_compare_bayes_on_a_sweep(tiny_sweep, tmp_path):
    work = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, work)
    res = script("aggregate.py", work)
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(work / "summary.csv")
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert {"job", "task.d", "seed", "config_digest", "excess.trained.mc", "excess.trained.se",
            "excess.bayes.importance_sampling", "excess.oracle.closed_form", "excess.linear.closed_form",
            "final_overlaps.median_abs.kappa", "timings.total_s"} <= set(df.columns)
    assert not any(c.endswith("per_repeat") for c in df.columns)  # lists are left out
    assert np.isfinite(df["excess.trained.mc"]).all()

    res = script("compare_bayes.py", work)
    assert res.returncode == 0, res.stderr
    for ext in ("png", "pdf"):
        assert (work / "figures" / f"compare_bayes.{ext}").stat().st_size > 10_000
    curves = pd.read_csv(work / "figures" / "compare_bayes.csv")
    assert set(curves["estimator"]) >= {"trained", "oracle", "oracle_best", "bayes", "linear", "bilinear"}
    assert sorted(curves["task.d"].unique()) == [6, 8] and (curves["n"] == 2).all()  # mean over the two seeds
    # the printed table holds the plotted numbers: the mean over seeds of the trained excess at d = 6
    trained6 = df.loc[df["task.d"] == 6, "excess.trained.mc"].mean()
    assert f"{trained6:.3g}" in res.stdout and "ratio of excess risk to the Bayes excess risk" in res.stdout
    # the Bayes curve uses importance sampling, and the ratio to it is 1 for itself
    bayes = curves[curves["estimator"] == "bayes"]
    assert (bayes["source"] == "importance sampling").all()
    np.testing.assert_allclose(bayes["ratio"], 1.0)


def test_joblib_multirun_gives_the_same_numbers_as_the_basic_launcher(tiny_sweep, tmp_path):
    sweep_dir = tmp_path / "sweep"
    res = multirun(sweep_dir, *TINY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert script("aggregate.py", sweep_dir).returncode == 0
    basic = tmp_path / "basic.csv"
    assert script("aggregate.py", tiny_sweep, "-o", basic).returncode == 0
    assert_same_numbers(numbers(sweep_dir / "summary.csv"), numbers(basic))


def test_a_failing_job_is_reported_and_the_others_aggregated(tmp_path):
    sweep_dir = tmp_path / "sweep"
    res = multirun(sweep_dir, "task.d=6", "task.L=3,0", "train.steps=10", "train.repeats=2", "eval.n_test=200",
                   "eval.bayes_is=500", "figures=false")
    assert res.returncode != 0  # Hydra ends a sweep with a failed job non-zero, after running the others
    res = script("aggregate.py", sweep_dir)
    assert res.returncode == 0
    df = pd.read_csv(sweep_dir / "summary.csv").set_index("task.L")
    assert df.loc[3, "status"] == "ok" and np.isfinite(df.loc[3, "excess.trained.mc"])
    assert df.loc[0, "status"] == "failed" and "task.L" in df.loc[0, "error"]
    assert "failed" in res.stderr and "task.L=0" in res.stderr  # the failed job's folder is named
    refused = json.loads(next(sweep_dir.glob("*task.L=0*/summary.json")).read_text())
    assert refused["status"] == "failed" and "task.L" in refused["error"]  # the refusal is in the job's folder

    res = script("compare_bayes.py", sweep_dir)  # one finished job: a bar chart of its predictors
    assert res.returncode == 0, res.stderr
    assert "left out: failed" in res.stderr
    assert (sweep_dir / "figures" / "compare_bayes.png").is_file()

    text = report.report(sweep_dir)
    assert "1 failed" in text and "job(s) without results" in text and "must be an integer >= 1" in text


def test_resume_reruns_only_the_unfinished_job(tiny_sweep, tmp_path):
    work = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, work)
    before = tmp_path / "before.csv"
    assert script("aggregate.py", work, "-o", before).returncode == 0
    jobs = {j.name: j.path for j in sweep.read_sweep(work)}
    victim = next(n for n in jobs if "seed=1" in n and "task.d=8" in n)
    (jobs[victim] / "summary.json").unlink()
    mtimes = {n: (p / "summary.json").stat().st_mtime_ns for n, p in jobs.items() if n != victim}

    res = multirun(work, *TINY, "resume=true")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("resume:") == 3 and res.stdout.count("skipped") == 3
    assert sorted(p.name for p in work.iterdir() if p.is_dir() and not p.name.startswith(".")) == sorted(jobs)
    for n, t in mtimes.items():
        assert (jobs[n] / "summary.json").stat().st_mtime_ns == t, f"{n} ran again"
        assert "skipped" in (jobs[n] / "slr.log").read_text()
    assert json.loads((jobs[victim] / "summary.json").read_text())["status"] == "ok"
    assert "skipped" not in (jobs[victim] / "slr.log").read_text()

    after = tmp_path / "after.csv"
    assert script("aggregate.py", work, "-o", after).returncode == 0
    assert_same_numbers(numbers(after), numbers(before))


def test_slr_report_on_a_run_folder_and_on_a_sweep_folder(tiny_sweep, capsys):
    run_dir = next(j.path for j in sweep.read_sweep(tiny_sweep)
                   if (j.overrides["task.d"], j.overrides["seed"]) == (8, 0))
    assert report.main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "status: ok" in out
    for row in ("Bayes-optimal (importance sampling)", "trained erf attention [2 repeats]", "oracle, lam=3.45",
                "oracle, best", "linear", "bilinear", "of 2 repeats aligned (|kappa|, |nu| >= 0.9); lam 4 -> 3.45"):
        assert row in out

    res = subprocess.run([sys.executable, "-m", "slr.results.report", str(tiny_sweep)], capture_output=True, text=True,
                         env=dict(os.environ, CI="true"), timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "4 jobs (4 ok)" in lines[0]
    header = next(line for line in lines if "status" in line and "trained" in line)
    assert header.split()[:3] == ["task.d", "seed", "status"] and "Bayes" in header and "linear" in header
    rows = [line.split() for line in lines if line.split()[:1] in (["6"], ["8"])]
    assert sorted((r[0], r[1], r[2]) for r in rows) == [("6", "0", "ok"), ("6", "1", "ok"), ("8", "0", "ok"),
                                                        ("8", "1", "ok")]
    assert "without results" not in res.stdout


def test_corrupt_running_and_missing_job_folders_are_tolerated(tiny_sweep, tmp_path):
    work = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, work)
    paths = sorted(p for p in work.iterdir() if p.is_dir())
    (paths[0] / "summary.json").write_text('{"status": "ok", "excess": {')  # cut short
    (paths[1] / "summary.json").write_text(json.dumps({"status": "running", "name": "default"}))
    (paths[2] / "summary.json").unlink()
    (paths[3] / ".hydra" / "overrides.yaml").write_text("- task.d=[unclosed\n  : -")
    statuses = {j.path: (j.status, j.error) for j in sweep.read_sweep(work)}
    assert statuses[paths[0]][0] == "corrupt" and "does not parse" in statuses[paths[0]][1]
    assert statuses[paths[1]][0] == "running"
    assert statuses[paths[2]][0] == "missing"
    assert statuses[paths[3]][0] == "corrupt" and "overrides.yaml" in statuses[paths[3]][1]

    res = script("aggregate.py", work)
    assert res.returncode == 0
    df = pd.read_csv(work / "summary.csv")
    assert sorted(df["status"]) == ["corrupt", "corrupt", "missing", "running"]
    assert all(str(p) in res.stderr for p in paths)
    text = report.report(work)
    assert "4 job(s) without results" in text and all(str(p) in text for p in paths)
    assert script("compare_bayes.py", work).returncode == 1  # nothing finished: said so, no figure


def test_flatten_and_headline():
    flat = sweep.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": {"f": {"g": "x"}}})
    assert flat == {"a.b": 1, "d": None, "e.f.g": "x"}
    assert sweep.parse_overrides(["task.d=10", "+x=1e-3", "predictor=softmax", "task.signal=null"]) == \
        {"task.d": 10, "x": 1e-3, "predictor": "softmax", "task.signal": None}
    assert sweep.headline({"mc": 1.0, "se": 0.1, "closed_form": 0.9}) == (0.9, 0.0, "closed form")
    assert sweep.headline({"mc": 1.0, "se": 0.1, "closed_form": 0.9, "per_repeat": [1, 1]}) == (1.0, 0.1, "Monte Carlo")
    assert sweep.headline({"mc": 1.0, "se": 0.1, "importance_sampling": 0.5, "importance_sampling_se": 0.01}) == \
        (0.5, 0.01, "importance sampling")


def test_replicates_of_a_bayes_excess_near_and_below_the_floating_point_range():
    """Two seeds' Bayes estimates of order 1e-295 keep a non-zero spread (their squares would underflow), and
    estimates that underflow to 0 carry their log10 to the curves (the figure and table quote it)."""
    rows = [dict(estimator="bayes", estimator_name="Bayes-optimal", value=v, se=0.0, lam=None, source="importance sampling",
                 log10=lg, **{"task.d": d}) for d, v, lg in [(3000, 1.40e-295, -294.85), (3000, 1.46e-295, -294.84),
                                                             (100000, 0.0, -9797.5), (100000, 0.0, -9797.7)]]
    means = sweep.over_replicates(pd.DataFrame(rows), "task.d").set_index("task.d")
    assert means.loc[3000, "se"] == pytest.approx(np.std([1.40, 1.46], ddof=1) / np.sqrt(2) * 1e-295, rel=1e-9)
    assert means.loc[100000, "value"] == 0.0 and means.loc[100000, "log10"] == pytest.approx(-9797.6)


def test_identical_replicates_keep_their_own_standard_error():
    """Every seed of a task shares one importance-sampling Bayes estimate (computed once, cached): their spread is 0
    and says nothing, so the mean over seeds carries the estimate's own standard error."""
    rows = [dict(estimator="bayes", estimator_name="Bayes-optimal", value=2e-40, se=1e-41, lam=None,
                 source="importance sampling", log10=-39.7, **{"task.d": 400, "seed": s}) for s in range(3)]
    means = sweep.over_replicates(pd.DataFrame(rows), "task.d")
    assert means["se"].tolist() == [1e-41] and means["n"].tolist() == [3]


@pytest.mark.parametrize("preset", SWEEP_PRESETS)
def test_sweep_presets_declare_their_sweep_and_every_point_is_valid(preset):
    """Each preset sweeps through ``hydra.sweeper.params``; the first and the last value of every swept key compose
    into a config that passes validation."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={preset}"], return_hydra_config=True)
        params = OmegaConf.to_container(cfg.hydra.sweeper.params)
        assert params and "seed" in params and len(params) >= 2
        for pick in (0, -1):
            point = [f"{k}={str(v).split(',')[pick]}" for k, v in params.items()]
            job = compose(config_name="config", overrides=[f"experiment={preset}", *point])
            check(job)
            assert job.name == preset


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_tiny_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    res = multirun(sweep_dir, "task.d=6", "seed=0,1", "task.L=3", "train.steps=10", "train.repeats=2",
                   "eval.n_test=200", "eval.bayes_is=500", "figures=false", "hydra/launcher=submitit_local",
                   "hydra.launcher.timeout_min=5")
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sweep.read_sweep(sweep_dir)
    assert len(jobs) == 2 and all(j.status == "ok" for j in jobs)
    assert (sweep_dir / ".submitit").is_dir()


def test_slurm_launcher_preset_exposes_the_cluster_options():
    """``hydra/launcher=slurm`` is submitit_slurm with slr's defaults; partition, time and cpus come from the
    command line. (No cluster here: the config is composed and its launcher class imported, not submitted.)"""
    import importlib

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=short",
                                           "hydra.launcher.timeout_min=30", "hydra.launcher.cpus_per_task=4"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert (launcher.partition, launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb) == ("short", 30, 4, 4)
    module, cls = launcher._target_.rsplit(".", 1)
    assert cls == "SlurmLauncher" and hasattr(importlib.import_module(module), cls)
    assert OmegaConf.to_container(launcher, resolve=False)["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"


def test_slr_report_quotes_a_bayes_excess_below_the_float_range(tmp_path):
    bayes = dict(name="Bayes-optimal", mc=0.0, se=0.0, importance_sampling=0.0, importance_sampling_log10=-9797.6)
    jobs = [sweep.Job(tmp_path / f"task.d={d}", {"task.d": d}, dict(status="ok", excess=dict(bayes=dict(bayes, **b))),
                      "ok") for d, b in [(400, dict(importance_sampling=1.9e-40, importance_sampling_log10=-39.7)),
                                         (100000, {})]]
    rows = report.sweep_rows(jobs).set_index("task.d")
    assert rows.loc[400, "Bayes"] == "1.9e-40" and rows.loc[100000, "Bayes"] == "10^-9797.6"
