"""The task variants through ``slr`` (docs/variants.md): what summary.json records, what the table shows, the
transformer's learned positions, and bad input refused with one paragraph, exit 2 and no run folder."""
from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import pytest
import torch

from slr.app.config import ConfigError, check
from slr.app.run import run
from slr.results import read_metrics
from slr.models.transformer import Transformer
from slr.results.tables import comparison_table

TINY = ["task.d=8", "task.L=5", "train.steps=20", "train.log_every=10", "train.repeats=2", "eval.n_test=500",
        "figures=false"]


@pytest.mark.parametrize("overrides, field, text", [
    (["task.prior=[0.5,0.5]"], "task.prior", "list of L=5"),
    (["task.prior=[0.6,0.1,0.1,0.1,-0.1]"], "task.prior", "non-negative"),
    (["task.prior=[0,0,0,0,0]"], "task.prior", "not all zero"),
    (["task.prior=peaked"], "task.prior", "uniform, or a list"),
    (["task.n_informative=6"], "task.n_informative", "between 1 and task.L=5"),
    (["task.n_informative=0"], "task.n_informative", "between 1 and task.L=5"),
    (["task.n_informative=2", "task.prior=[0.6,0.1,0.1,0.1,0.1]"], "task.n_informative", "non-uniform"),
    (["task.tokens=student_t", "task.df=2"], "task.df", "> 2"),
    (["task.tokens=cauchy"], "task.tokens", "gaussian, student_t"),
    (["task.tokens=student_t", "train.simulator=reduced"], "train.simulator", "Gaussian tokens"),
    (["task.tokens=student_t", "eval.simulator=reduced"], "eval.simulator", "Gaussian tokens"),
    (["task.tokens=student_t", "train=pgd", "train.simulator=full"], "train", "closed-form risk"),
    (["task.n_informative=2", "train=flow"], "train", "one informative token"),
    (["predictor=transformer", "predictor.positional=sinusoidal"], "predictor.positional", "none, learned"),
])
def test_bad_variants_are_refused_with_one_paragraph(make_cfg, overrides, field, text):
    with pytest.raises(ConfigError) as err:
        check(make_cfg(*TINY, *overrides))
    msg = str(err.value)
    assert err.value.key == field and text in msg and "\n" not in msg


def test_cli_refuses_a_bad_prior_with_exit_2_and_no_run_folder(tmp_path):
    env = dict(os.environ, SLR_OUTPUTS=str(tmp_path / "outputs"))
    proc = subprocess.run([sys.executable, "-m", "slr", *TINY, "task.prior=[1,2]"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("Invalid configuration: task.prior=[1, 2]") and "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists() or not any(p.is_file() for p in (tmp_path / "outputs").rglob("*"))


def test_a_prior_run_records_its_variant_and_uses_positions(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "task.prior=[0.6,0.1,0.1,0.1,0.1]", "predictor=transformer", "predictor.positional=learned",
                   "train.optimizer=adam")
    s = run(cfg, tmp_path)
    assert s["status"] == "ok" and s["task"]["variant"] == dict(name="prior", prior=[0.6, 0.1, 0.1, 0.1, 0.1])
    assert "attention_on_J0" in s["excess"]["trained"] and s["excess"]["bayes"]["importance_sampling"] > 0
    assert len(read_metrics(tmp_path / "metrics.csv")) > 0


def test_several_informative_tokens_run_with_closed_forms_and_attention_on_the_set(make_cfg, tmp_path):
    s = run(make_cfg(*TINY, "task.n_informative=2", "eval.simulator=reduced", "predictor=softmax"), tmp_path)
    e = s["excess"]
    assert s["task"]["variant"] == dict(name="n_informative", n_informative=2)
    assert e["linear"]["closed_form"] == pytest.approx(2 * 0.5 * 3 / (2 * 0.5 + 3))
    assert 0.0 < e["bayes"]["attention_on_J0"] <= 1.0  # the posterior mass on the informative set, / s
    assert e["bayes"]["attention_on_J0"] > e["linear"].get("attention_on_J0", 0.4)  # Bayes finds the set


def test_several_informative_tokens_train_on_the_reduced_chain(make_cfg, tmp_path):
    """``train=sgd train.simulator=reduced`` with ``s = 2``: the chain of docs/variant-several-tokens.md runs through
    slr, on the compiled kernel when it can be built."""
    s = run(make_cfg(*TINY, "train.simulator=reduced", "task.n_informative=2"), tmp_path)
    assert s["status"] == "ok" and s["task"]["variant"] == dict(name="n_informative", n_informative=2)
    assert s["trained"]["kernel"] in ("compiled", "numpy")
    assert len(read_metrics(tmp_path / "metrics.csv")) > 0


def test_student_t_run_shows_closed_forms_as_not_available(make_cfg, tmp_path):
    s = run(make_cfg(*TINY, "task.tokens=student_t", "task.df=4"), tmp_path)
    e = s["excess"]
    for key in ("trained", "oracle", "oracle_best", "linear", "bilinear"):
        assert "closed_form" not in e[key] and e[key]["closed_form_note"] == "not available for student_t tokens"
    assert s["eval"]["reduced_simulator"] == "not available for student_t tokens"
    assert "not available for student_t tokens" in comparison_table(e)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert len(rows) and ("excess" not in rows or rows["excess"].isna().all())  # no closed-form excess logged


def test_learned_positions_break_permutation_invariance():
    X = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(0))
    perm = torch.tensor([4, 0, 1, 2, 3])
    for positional, invariant in (("none", True), ("learned", False)):
        torch.manual_seed(1)
        model = Transformer(6, 5, d_model=8, positional=positional)
        with torch.no_grad():
            same = torch.allclose(model(X), model(X[:, perm]), atol=1e-6)
        assert same is invariant
    assert tuple(Transformer(6, 5, d_model=8, positional="learned").position.shape) == (5, 8)


VARIANT_PRESETS = ["sweep_s", "sweep_s_pgd", "sweep_s_softmax", "sweep_s_transformer", "sweep_prior", "sweep_prior_transformer",
                   "sweep_df"]


@pytest.mark.parametrize("preset", VARIANT_PRESETS)
def test_variant_presets_compose_and_every_swept_point_is_valid(make_cfg, preset):
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from slr.app.schema import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    values = {o.key_or_group: [str(x) for x in o.sweep_string_iterator()] for o in parsed}
    assert "seed" in values and len(values) >= 2
    for pick in (0, -1):
        job = make_cfg(f"experiment={preset}", *(f"{k}={v[pick]}" for k, v in values.items()))
        check(job)
        assert job.name == preset


def test_a_variant_sweep_runs_resumes_and_compares(tmp_path):
    """A tiny multirun over priors: one folder per job, resume skips them all, compare_bayes puts the prior's weight
    on position 1 on its axis."""
    env = dict(os.environ, SLR_OUTPUTS=str(tmp_path / "outputs"), CI="true")
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "slr", "-m", "task.d=6", "task.L=3", "task.prior=uniform,[0.8,0.1,0.1]",
           "train.steps=20", "train.log_every=10", "train.repeats=2", "eval.n_test=400", "figures=false",
           f"hydra.sweep.dir={sweep_dir}"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run([*cmd, "resume=true"], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skipped") == 2
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, str(root / "scripts" / "compare_bayes.py"), str(sweep_dir)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "prior weight on position 1" in res.stdout and "0.333" in res.stdout and "0.8" in res.stdout


def test_population_pgd_with_several_informative_tokens_reaches_the_oracle(make_cfg, tmp_path):
    """PGD on the closed form for s = 3 (numpy step; the gradient is checked by finite differences in
    test_variants.py) aligns k, v with k*, v*, and the trained closed form matches its Monte Carlo."""
    s = run(make_cfg("task.d=20", "task.L=10", "task.n_informative=3", "train=pgd", "train.init=manifold",
                     "predictor.lam=auto", "train.lam_schedule=constant", "train.steps=3000", "train.lr=0.01",
                     "train.repeats=2", "eval.n_test=20000", "figures=false"), tmp_path)
    med, e = s["final_overlaps"]["median_abs"], s["excess"]["trained"]
    assert med["kappa"] > 0.99 and med["nu"] > 0.99 and s["trained"]["kernel"] == "numpy"
    assert abs(e["mc"] - e["closed_form"]) < 4 * e["se"]
    assert e["closed_form"] == pytest.approx(s["excess"]["oracle_best"]["closed_form"], rel=1e-3)
