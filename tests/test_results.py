"""slr.results as a user reads output folders: load_run and load_sweep against the files they read (summary.json,
.hydra/, metrics.csv), tolerance of unfinished jobs, clear errors on folders that are not runs or sweeps, and the
comparison's labels and legend."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig

from slr.results import ResultsError, Sweep, load_run, load_sweep, read_metrics
from slr.results import sweep as sweep_mod

SMALL = ["task.d=6,8", "seed=0", "task.L=3", "train.steps=20", "train.log_every=10", "train.repeats=2",
         "eval.n_test=400", "eval.bayes_is=1000", "figures=false"]


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory) -> Path:
    """Two jobs (d = 6, 8), shared read-only: copy it to damage it."""
    base = tmp_path_factory.mktemp("results")
    sweep_dir = base / "sweep"
    res = subprocess.run([sys.executable, "-m", "slr", "-m", *SMALL, f"hydra.sweep.dir={sweep_dir}"], cwd=base,
                         env=dict(os.environ, SLR_OUTPUTS=str(base / "outputs"), CI="true"), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return sweep_dir


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_load_sweep_is_one_typed_row_per_job_with_every_summary_number(small_sweep):
    sw = load_sweep(small_sweep)
    assert isinstance(sw, Sweep) and len(sw) == 2 and (sw["status"] == "ok").all()
    assert pd.api.types.is_integer_dtype(sw["task.d"]) and sorted(sw["task.d"]) == [6, 8]
    assert pd.api.types.is_integer_dtype(sw["seed"]) and pd.api.types.is_float_dtype(sw["excess.trained.mc"])
    for _, row in sw.iterrows():  # the numbers are the files' numbers
        summary = json.loads((Path(row["path"]) / "summary.json").read_text())
        assert row["excess.trained.mc"] == summary["excess"]["trained"]["mc"]
        assert row["excess.bayes.importance_sampling"] == summary["excess"]["bayes"]["importance_sampling"]
        assert row["task.d"] == summary["task"]["d"]
    assert not any(c.endswith("per_repeat") for c in sw.columns)
    assert len(sw[sw["task.d"] == 8]) == 1 and isinstance(sw[sw["task.d"] == 8], Sweep)  # a filtered sweep is one


def test_sweep_metrics_are_every_jobs_curves_in_long_form(small_sweep):
    sw = load_sweep(small_sweep)
    m = sw.metrics()
    over = ["job", *sw.overrides]  # every override of the command line, swept or not
    assert list(m.columns[: len(over)]) == over and {"task.d", "seed", "task.L"} <= set(over)
    for d in (6, 8):
        own = read_metrics(Path(sw.loc[sw["task.d"] == d, "path"].iloc[0]) / "metrics.csv")
        mine = m[m["task.d"] == d].drop(columns=over).reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, own, check_dtype=False)
    assert sorted(m["step"].unique()) == [0, 10, 20] and set(m["repeat"]) == {0, 1}
    only8 = sw[sw["task.d"] == 8].metrics()
    assert set(only8["task.d"]) == {8} and len(only8) == len(m) / 2


def test_load_run_gives_config_summary_and_metrics(small_sweep):
    job = _job_dirs(small_sweep)[0]
    run = load_run(job)
    assert isinstance(run.config, DictConfig) and run.config.task.d == run.summary["task"]["d"] == run.overrides["task.d"]
    assert run.status == "ok" and run.finished and run.error is None
    pd.testing.assert_frame_equal(run.metrics, read_metrics(job / "metrics.csv"))
    assert run.metrics["kappa"].notna().all() and len(run.metrics) == 3 * 2  # steps 0, 10, 20 x 2 repeats


def test_unfinished_jobs_are_rows_never_fatal(small_sweep, tmp_path):
    work = tmp_path / "sweep"
    shutil.copytree(small_sweep, work)
    a, b = _job_dirs(work)
    (a / "summary.json").write_text(json.dumps({"status": "running", "name": "default"}))
    (b / "summary.json").write_text('{"status": "ok", "excess": {')  # cut short
    missing = work / "task.d=10,seed=0"
    (missing / ".hydra").mkdir(parents=True)  # a job folder that never got further
    sw = load_sweep(work)
    assert dict(zip(sw["job"], sw["status"])) == {a.name: "running", b.name: "corrupt", missing.name: "missing"}
    assert len(sw.problems()) == 3 and len(sw.finished()) == 0 and sw.metrics().empty
    assert len(sw.metrics(include_unfinished=True)) == 2 * 3 * 2  # what the two started jobs logged
    assert "does not parse" in sw.loc[sw["job"] == b.name, "error"].iloc[0]


def test_load_run_refuses_a_half_written_run_and_reads_it_on_request(small_sweep, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(_job_dirs(small_sweep)[0], run_dir)
    (run_dir / "summary.json").write_text(json.dumps({"status": "running", "name": "default"}))
    text = (run_dir / "metrics.csv").read_text()
    (run_dir / "metrics.csv").write_text(text[:-7])  # killed in the middle of a line
    before = sorted(p.name for p in run_dir.rglob("*"))
    with pytest.raises(ResultsError, match=r"unfinished run \(status running.*allow_unfinished=True"):
        load_run(run_dir)
    run = load_run(run_dir, allow_unfinished=True)
    assert run.status == "running" and len(run.metrics) == 3 * 2 - 1  # the cut line is dropped
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # nothing written


def test_folders_that_are_not_runs_or_sweeps_are_refused_clearly(small_sweep, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a sweep")
    with pytest.raises(ResultsError, match="is not a sweep: no job folder"):
        load_sweep(empty)
    with pytest.raises(ResultsError, match="is not a folder"):
        load_sweep(tmp_path / "nowhere")
    with pytest.raises(ResultsError, match="single run folder, not a sweep: use load_run"):
        load_sweep(_job_dirs(small_sweep)[0])
    with pytest.raises(ResultsError, match="not a run folder.*use load_sweep"):
        load_run(small_sweep)
    with pytest.raises(ResultsError, match="not a run folder"):
        load_run(empty)
    assert sorted(p.name for p in empty.iterdir()) == ["notes.txt"]


def test_an_override_swept_in_one_sweep_only_is_labelled_from_the_others_config(small_sweep):
    """Curves of two sweeps, one of which swept train.lr: the other's jobs carry the lr their config used, and no
    label reads ``nan``."""
    jobs = sweep_mod.read_sweep(small_sweep)
    sweep_mod.fill_from_config(jobs, ["train.lr", "task.L", "no.such.key"])
    for j in jobs:
        import yaml

        cfg = yaml.safe_load((j.path / ".hydra" / "config.yaml").read_text())
        assert j.overrides["train.lr"] == cfg["train"]["lr"] and j.overrides["task.L"] == 3
        assert "no.such.key" not in j.overrides
    means = pd.DataFrame([dict(estimator="trained", estimator_name="trained erf attention", value=v, se=0.1, n=1,
                               lam=None, source="Monte Carlo", log10=np.nan, **{"task.d": 6, "train.lr": lr})
                          for v, lr in [(1.0, 0.5), (2.0, np.nan)]])
    labels = sweep_mod.series(means, "task.d", ["train.lr"])["label"].tolist()
    assert labels == ["trained erf attention [train.lr=0.5]", "trained erf attention"]


def test_compare_legend_stays_inside_the_figure():
    from slr.plots.sweeps import excess_vs_parameter

    long = "trained softmax attention [predictor=softmax, predictor.lam=2, train.lr=0.5, task.L=3, task.gamma=0.25]"
    curves = pd.DataFrame([dict(label=lab, estimator=est, value=v * x, se=0.01, source="Monte Carlo", ratio=r,
                                ratio_se=0.1, log10=np.nan, **{"task.d": x})
                           for x in (10, 20, 40)
                           for lab, est, v, r in [("Bayes-optimal", "bayes", 0.01, 1.0), (long, "trained", 1.0, 50.0),
                                                  (long + " again", "trained", 2.0, 90.0)]])
    title = ("sweep_d_asymptotic: excess risk vs token dimension d\nL=10, γ²=0.5, ε=0.1; erf attention trained by flow "
             "(reduced simulator); one seed, ± Monte Carlo s.e.")
    fig, _ = excess_vs_parameter(curves, "task.d", reference="Bayes-optimal", title=title)
    fig.canvas.draw()
    (legend,) = fig.legends
    box, page = legend.get_window_extent(), fig.bbox
    assert box.x0 >= page.x0 and box.x1 <= page.x1 and box.y0 >= page.y0, (box, page)
    assert any("\n" in t.get_text() for t in legend.get_texts())  # the long labels were wrapped
    matplotlib.pyplot.close(fig)
    # the title too (a sweep's names the task and the training), on the narrower figure without a ratio panel
    fig, _ = excess_vs_parameter(curves[curves["label"] != "Bayes-optimal"], "task.d", title=title)
    fig.canvas.draw()
    top, page = fig._suptitle.get_window_extent(), fig.bbox
    assert top.x0 >= page.x0 and top.x1 <= page.x1, (top, page)
    matplotlib.pyplot.close(fig)


def test_the_ratio_to_bayes_and_its_standard_error_match_monte_carlo():
    """``ratio = v / b`` with ``ratio_se = |r| sqrt((se_v/v)^2 + (se_b/b)^2)`` (first-order propagation of two
    independent errors), against the spread of v/b over draws of v and b with those standard errors."""
    rows = [dict(estimator="trained", estimator_name="trained", value=1.0, se=0.02, n=2, lam=np.nan,
                 source="Monte Carlo", log10=np.nan, **{"task.d": 6}),
            dict(estimator="bayes", estimator_name="Bayes-optimal", value=0.25, se=0.004, n=2, lam=np.nan,
                 source="importance sampling", log10=np.nan, **{"task.d": 6})]
    curves = sweep_mod.series(pd.DataFrame(rows), "task.d").set_index("estimator")
    rng = np.random.default_rng(0)
    n = 400_000
    r = rng.normal(1.0, 0.02, n) / rng.normal(0.25, 0.004, n)
    assert curves.loc["trained", "ratio"] == pytest.approx(4.0)
    # the spread of r is known to ~ 1/sqrt(2n) relative; first-order propagation is off by O(se^2/v^2) ~ 1e-3
    assert curves.loc["trained", "ratio_se"] == pytest.approx(r.std(), rel=0.01)
    assert curves.loc["bayes", "ratio"] == pytest.approx(1.0)
