"""The examples a user copies run as they are, each in a few seconds: their own model trained by slr
(examples/my_model.py) and a sweep analysed with slr.results and seaborn (examples/analyse_sweep.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from slr.results import load_run, load_sweep

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], cwd=cwd, capture_output=True,
                         text=True, timeout=600, env=dict(os.environ, SLR_OUTPUTS=str(cwd / "outputs"), CI="true"))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def test_my_model_trains_the_users_module_and_it_learns_to_attend(tmp_path):
    run_dir = tmp_path / "run"
    res = _example("my_model.py", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert "predictor.model._target_=my_model.ScoredAttention" in res.stdout  # the command is shown
    run = load_run(run_dir)
    trained = run.summary["excess"]["trained"]
    assert run.status == "ok" and trained["name"] == "trained my_model.ScoredAttention"
    assert run.config.predictor.name == "module" and run.config.task.d == 8
    m = run.metrics.groupby("step")[["test_excess", "attention_on_J0"]].median()  # median over repeats
    first, last = m.iloc[0], m.iloc[-1]
    assert last["test_excess"] < 0.5 * first["test_excess"]  # training lowered the test excess
    L = run.summary["task"]["L"]
    assert trained["attention_on_J0"] > 1.5 / L  # well above uniform attention 1/L: it found the informative token
    assert (run_dir / "figures" / "dynamics.png").is_file()


def test_analyse_sweep_runs_a_sweep_loads_it_and_draws_the_figure(tmp_path):
    res = _example("analyse_sweep.py", "--out", tmp_path / "sweep", cwd=tmp_path)
    sw = load_sweep(tmp_path / "sweep")
    assert len(sw) == 6 and (sw["status"] == "ok").all() and sorted(set(sw["task.d"])) == [6, 10, 16]
    png = tmp_path / "sweep" / "figures" / "analysis.png"
    assert png.stat().st_size > 20_000 and f"wrote {png}" in res.stdout
    # the printed table is the jobs' own numbers
    for path in sw["path"]:
        mc = json.loads((Path(path) / "summary.json").read_text())["excess"]["trained"]["mc"]
        assert f"{mc:.6f}" in res.stdout
    # the example analyses any sweep folder it is given, without running one
    again = _example("analyse_sweep.py", "--sweep", tmp_path / "sweep", cwd=tmp_path)
    assert "$ python -m slr" not in again.stdout and f"wrote {png}" in again.stdout
    assert isinstance(sw.metrics(), pd.DataFrame) and len(sw.metrics()) == 6 * 31 * 4  # jobs x logged steps x repeats
