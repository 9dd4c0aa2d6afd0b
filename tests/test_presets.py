"""The five paper presets (``docs/training.md#the-papers-five-experiments``): their composed configs, and a shrunk run
of each through run(cfg)."""
import json

import pandas as pd
import pytest

from slr.app.run import run

PRESETS = {
    # preset: (algo, d, lam0, lr, steps, log_every, schedule, init)
    "paper_gd_manifold": ("pgd", 400, 0.1, 4e-3, 20000, 200, "constant", "manifold"),
    "paper_gd_sphere_large_lambda": ("pgd", 400, 0.9, 1e-3, 120000, 300, "constant", "sphere"),
    "paper_gd_sphere_small_lambda": ("pgd", 400, 0.1, 4e-3, 20000, 200, "constant", "sphere"),
    "paper_gd_sphere_schedule": ("pgd", 400, 1.0, 4e-3, 120000, 300, "inverse", "sphere"),
    "paper_sgd_sphere_schedule": ("sgd", 80, 2.0, 1e-3, 200000, 500, "inverse", "sphere"),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_has_the_papers_settings(make_cfg, preset):
    algo, d, lam, lr, steps, log_every, schedule, init = PRESETS[preset]
    cfg = make_cfg(f"experiment={preset}")
    assert (cfg.train.algo, cfg.task.d, cfg.task.L, cfg.predictor.lam) == (algo, d, 10, lam)
    assert cfg.task.gamma**2 == pytest.approx(0.5)
    assert (cfg.train.lr, cfg.train.steps, cfg.train.log_every) == (lr, steps, log_every)
    assert (cfg.train.lam_schedule, cfg.train.init, cfg.train.repeats) == (schedule, init, 30)
    assert cfg.name == preset
    if schedule == "inverse":
        assert cfg.train.schedule_rate == pytest.approx(1e-4)
    if algo == "sgd":
        assert (cfg.train.batch_size, cfg.task.eps, cfg.train.log_test_size) == (5, 0.1, 1000)


@pytest.mark.parametrize("preset", PRESETS)
def test_shrunk_preset_runs(make_cfg, preset, tmp_path):
    cfg = make_cfg(f"experiment={preset}", "train.repeats=3", "train.steps=300", "train.log_every=100",
                   "eval.n_test=500", "eval.bayes_is=1000", "train.schedule_rate=0.01", "figures.pdf=true")
    summary = run(cfg, out_dir=tmp_path)
    assert summary["status"] == "ok"
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert sorted(m["step"].unique()) == [0, 100, 200, 300]
    assert m["excess"].notna().all()  # the closed form is logged for PGD and for the SGD preset alike
    if PRESETS[preset][0] == "sgd":
        assert m["test_excess"].notna().all()
    if PRESETS[preset][6] == "inverse":
        assert m.groupby("step")["lam"].first().is_monotonic_decreasing
    for ext in ("png", "pdf"):
        assert (tmp_path / "figures" / f"dynamics.{ext}").stat().st_size > 5000
    assert json.loads((tmp_path / "summary.json").read_text())["name"] == preset
