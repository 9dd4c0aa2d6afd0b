"""The Hydra app end to end: one tiny run into tmp_path, every file of the run folder present and parsing."""
import json

import pandas as pd
import yaml

from slr.run import run


def test_tiny_run_writes_a_complete_run_folder(make_cfg, tmp_path):
    cfg = make_cfg("task.d=12", "task.L=4", "train.steps=40", "train.log_every=10", "train.repeats=3",
                   "eval.n_test=500", "eval.bayes_is=2000")
    summary = run(cfg, out_dir=tmp_path)
    assert summary["status"] == "ok"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["config_digest"] == summary["config_digest"]
    assert set(on_disk["excess"]) >= {"trained", "oracle", "bayes", "linear", "bilinear"}
    for entry in on_disk["excess"].values():
        assert entry["se"] is not None and entry["mc"] is not None
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert len(m) == 3 * 5  # 3 repeats x steps 0, 10, 20, 30, 40
    assert {"step", "repeat", "lam", "kappa", "nu", "theta", "eta", "rho", "dist_to_M", "excess", "test_excess"} <= set(m)
    assert (tmp_path / "figures" / "dynamics.png").stat().st_size > 10_000
