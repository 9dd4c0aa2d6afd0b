"""The Hydra app end to end: one tiny run into tmp_path, every file of the run folder present and parsing."""
import json

import pandas as pd
import yaml

from slr.app.run import run


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


def test_a_softmax_run_compares_with_the_softmax_oracle(make_cfg, tmp_path):
    """The oracle at the run's lam has the trained predictor's kind (no erf closed form for it); the best-lam
    oracle stays erf's, with its closed form."""
    cfg = make_cfg("predictor=softmax", "predictor.lam=2", "task.d=12", "task.L=4", "train.steps=20",
                   "train.repeats=2", "eval.n_test=4000", "eval.bayes_is=0")
    excess = run(cfg, out_dir=tmp_path)["excess"]
    assert (tmp_path / "figures" / "dynamics.png").exists()  # its reference line is the softmax oracle's MC
    assert excess["oracle"]["name"] == "softmax oracle" and "closed_form" not in excess["oracle"]
    assert "closed_form" in excess["oracle_best"]
    import math

    from slr import theory
    erf_oracle = theory.oracle_excess(2.0, d=12, L=4, gamma=0.5**0.5)
    z = abs(excess["oracle"]["mc"] - erf_oracle) / excess["oracle"]["se"]
    assert z > 4 and math.isfinite(z)  # a softmax oracle, not erf's


def test_trajectory_panel_spans_the_outcomes():
    """Panel (c) shows the least, a middle and the most aligned repeat, not the first three."""
    import pandas as pd

    from slr.plots.dynamics import _spread_repeats
    final = {0: 0.5, 1: 1.9, 2: 0.1, 3: 1.0, 4: 1.5}  # |kappa| + |nu| at the last step
    m = pd.DataFrame([dict(step=s, repeat=r, kappa=(f / 2 if s else 0.0), nu=-(f / 2 if s else 0.0))
                      for r, f in final.items() for s in (0, 10)])
    assert _spread_repeats(m, 3) == [2, 3, 1]
    assert _spread_repeats(m, 10) == [2, 0, 3, 4, 1] and _spread_repeats(m, 0) == []


def test_comparison_table_shows_one_bayes_number_and_says_which():
    from slr.results.tables import comparison_table

    row = dict(name="Bayes-optimal", mc=0.0, se=0.0, importance_sampling=0.0, importance_sampling_se=0.0,
               importance_sampling_log10=-9797.63, importance_sampling_rel_se=0.031)
    underflowed = comparison_table({"bayes": row}).splitlines()[1]
    assert "10^-9797.6 ± 3.1%" in underflowed and "(importance sampling)" in underflowed
    tiny = dict(row, mc=6.1e-13, se=4.3e-13, importance_sampling=1.5e-40, importance_sampling_se=2e-42,
                importance_sampling_log10=-39.8)
    line = comparison_table({"bayes": tiny}).splitlines()[1]
    assert "1.5e-40 ± 2e-42" in line and "(importance sampling)" in line and "6.1e-13" not in line
    plain = comparison_table({"bayes": dict(name="Bayes-optimal", mc=0.0114, se=0.0003)}).splitlines()[1]
    assert "0.0114 ± 0.0003" in plain and "(Monte Carlo)" in plain


def test_alignment_line_counts_aligned_and_swapped_repeats():
    from slr.results.tables import alignment_line

    per = dict(kappa=[0.97, -0.98, 0.1, 0.95], nu=[0.99, -0.99, 0.2, 0.5], eta=[0.0, 0.0, 0.97, 0.0])
    line = alignment_line(dict(final_overlaps=dict(per_repeat=per),
                               trained=dict(steps_done=100, lam_initial=4.0, lam_final=0.5)))
    assert "2 of 4 repeats aligned" in line and "1 with k on ±v*" in line and "lam 4 -> 0.5" in line
    assert "median |kappa| 0.960" in line
    assert alignment_line({}) is None


# ----- figures: PNG by default, PDF on request, none with figures=false -------------------------------------------
SMALL = ["task.d=12", "task.L=4", "train.steps=20", "train.log_every=10", "train.repeats=2", "eval.n_test=300",
         "eval.bayes_is=0"]


def test_figures_are_png_by_default_and_pdf_on_request(make_cfg, tmp_path):
    run(make_cfg(*SMALL), out_dir=tmp_path / "png")
    assert [p.name for p in (tmp_path / "png" / "figures").iterdir()] == ["dynamics.png"]
    run(make_cfg(*SMALL, "figures.pdf=true"), out_dir=tmp_path / "pdf")
    assert sorted(p.name for p in (tmp_path / "pdf" / "figures").iterdir()) == ["dynamics.pdf", "dynamics.png"]
    assert (tmp_path / "pdf" / "figures" / "dynamics.pdf").read_bytes().startswith(b"%PDF")


def test_figures_false_writes_no_figure_and_slr_report_reads_the_run(make_cfg, tmp_path, capsys):
    from slr.results.report import main as report

    summary = run(make_cfg(*SMALL, "train.simulator=reduced", "figures=false"), out_dir=tmp_path)
    assert summary["status"] == "ok" and summary["timings"]["figures_s"] < 0.1
    assert not (tmp_path / "figures").exists()
    assert report([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "status: ok" in out and "reduced simulator, compiled step" in out
    assert "trained erf attention [2 repeats]" in out  # the comparison table


def test_the_summary_says_which_kernel_trained(make_cfg, tmp_path):
    """``trained.kernel``: the compiled C step (reduced SGD, PGD) or numpy's (no compiler), torch for the full
    simulator's SGD and ERM, none without training."""
    expected = {("train=sgd",): "torch", ("train=sgd", "train.simulator=reduced"): "compiled",
                ("train=pgd",): "compiled", ("train=pgd", "train.simulator=full"): "compiled",
                ("train=erm", "train.n_train=20"): "torch", ("train=none",): None}
    for i, (overrides, kernel) in enumerate(expected.items()):
        cfg = make_cfg(*SMALL, "figures=false", *overrides, *(["train.steps=0"] if "train=none" in overrides else []))
        assert run(cfg, out_dir=tmp_path / str(i))["trained"]["kernel"] == kernel, overrides


# ----- start-up: what --help, a refused config and slr-report import --------------------------------------------
def test_the_app_and_slr_report_start_without_torch_or_matplotlib():
    """Importing the app, composing a config and refusing it load neither torch nor matplotlib (nor pandas, scipy,
    seaborn); slr-report adds pandas (its tables), not torch or matplotlib: ``slr --help``, a config error and
    ``slr-report`` answer in about a second (``docs/throughput.md#5-what-a-run-costs-measured``)."""
    import subprocess
    import sys

    code = """
import sys
import slr, slr.app.run, slr.app.config
from hydra import compose, initialize_config_dir
with initialize_config_dir(config_dir=str(slr.app.schema.CONF_DIR), version_base="1.3"):
    cfg = compose(config_name="config", overrides=["task.d=1"])
try:
    slr.app.config.check(cfg)
except slr.app.config.ConfigError:
    pass
heavy = lambda: ",".join(sorted(m for m in ("torch", "matplotlib", "pandas", "scipy", "seaborn") if m in sys.modules))
print(heavy() or "none")
import slr.results.report
print(heavy())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["none", "pandas"]


def test_the_init_names_of_the_config_are_those_of_train():
    from slr.app.schema import INIT_NAMES
    from slr.training.algorithms import INITS

    assert tuple(INITS) == INIT_NAMES
