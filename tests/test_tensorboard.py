"""logger=tensorboard: event files beside metrics.csv holding, at every logged step, the median over repeats of each
column and each repeat's own value (read back with tensorboard's EventAccumulator and compared with metrics.csv);
refused with the install command when the extra is missing; an unknown logger refused."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slr.app.config import ConfigError, check, digest
from slr.app.run import run
from slr.results import load_run, load_sweep

TINY = ["task.d=6", "task.L=3", "train.steps=20", "train.log_every=10", "train.repeats=3", "eval.n_test=400",
        "eval.bayes_is=1000", "figures=false"]


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (event_file,) = folder.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(event_file))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _assert_events_match_metrics(folder: Path) -> None:
    m = load_run(folder).metrics
    events = _events(folder)
    logged = [c for c in m.columns if c not in ("step", "repeat") and m[c].notna().any()]
    assert logged and {f"median/{c}" for c in logged} <= set(events)
    for c in logged:
        median = m.groupby("step")[c].median()
        steps, values = zip(*events[f"median/{c}"])
        assert list(steps) == list(median.index)
        np.testing.assert_allclose(values, median.to_numpy(), rtol=1e-6)  # event files hold float32
        for r, rows in m.groupby("repeat"):
            steps, values = zip(*events[f"repeat_{r}/{c}"])
            assert list(steps) == rows["step"].tolist()
            np.testing.assert_allclose(values, rows[c].to_numpy(), rtol=1e-6)


def test_a_run_writes_the_median_and_every_repeat_beside_metrics_csv(make_cfg, tmp_path):
    pytest.importorskip("tensorboard")
    cfg = make_cfg(*TINY, "logger=tensorboard")
    run(cfg, tmp_path)
    assert (tmp_path / "metrics.csv").is_file()
    events = _events(tmp_path)
    assert {"median/kappa", "repeat_0/kappa", "repeat_2/nu", "median/excess"} <= set(events)
    _assert_events_match_metrics(tmp_path)


def test_the_default_writes_no_event_file_and_the_logger_does_not_change_the_digest(make_cfg, tmp_path):
    cfg = make_cfg(*TINY)
    assert cfg.logger == "csv"
    run(cfg, tmp_path)
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    assert digest(make_cfg(*TINY, "logger=tensorboard")) == digest(cfg)  # same numbers: resume finds them


def test_an_unknown_logger_is_refused(make_cfg):
    with pytest.raises(ConfigError, match=r"logger='wandb' is not allowed; logger must be one of csv, tensorboard"):
        check(make_cfg(*TINY, "logger=wandb"))


def _slr(args, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slr", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, SLR_OUTPUTS=str(cwd / "outputs"), CI="true", **env))


def test_without_the_extra_tensorboard_is_refused_with_the_install_command(tmp_path):
    """A tensorboard that cannot be imported (a stand-in package first on the path) is what a user without the
    extra has: exit 2, the install command, no run folder."""
    fake = tmp_path / "fake" / "tensorboard"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named tensorboard')\n")
    res = _slr([*TINY, "logger=tensorboard"], tmp_path, PYTHONPATH=str(fake.parent))
    assert res.returncode == 2, res.stderr[-2000:]
    assert "pip install 'slr[tensorboard]'" in res.stderr and "logger='tensorboard'" in res.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_every_job_of_a_sweep_gets_its_event_file(tmp_path):
    pytest.importorskip("tensorboard")
    sweep_dir = tmp_path / "sweep"
    res = _slr(["-m", *TINY, "task.d=6,8", "logger=tensorboard", f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    sw = load_sweep(sweep_dir)
    assert len(sw) == 2 and (sw["status"] == "ok").all() and "logger" not in sw.columns  # not a parameter
    for path in sw["path"]:
        _assert_events_match_metrics(Path(path))
