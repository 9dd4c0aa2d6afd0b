"""The default job (``python -m slr``, the README's first command) shows erf attention learning (issue 12)."""
import json

import pytest

from slr import theory
from slr.app.run import run


@pytest.mark.slow
def test_the_default_job_aligns_and_beats_the_linear_predictor(make_cfg, tmp_path):
    cfg = make_cfg("eval.n_test=5000")  # only the final Monte Carlo is shrunk
    assert (cfg.name, cfg.train.algo, cfg.task.d, cfg.train.lam_schedule) == ("default", "sgd", 80, "inverse")
    summary = run(cfg, out_dir=tmp_path)
    med = summary["final_overlaps"]["median_abs"]
    assert med["kappa"] >= 0.9 and med["nu"] >= 0.9, med
    linear = theory.linear_excess(cfg.task.L, cfg.task.gamma)
    trained = summary["excess"]["trained"]
    assert trained["mc"] + 4 * trained["se"] < linear and trained["closed_form"] < linear
    assert summary["excess"]["linear"]["closed_form"] == pytest.approx(linear)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "ok"
    assert (tmp_path / "figures" / "dynamics.png").stat().st_size > 5000
