#!/usr/bin/env python
"""Analyse a sweep with pandas and seaborn: run a small sweep over the token dimension ``d`` (or point at one you
ran), load it with :mod:`slr.results`, print a table and draw a figure.

    python examples/analyse_sweep.py                      # runs the small sweep into outputs/examples/sweep_d
    python examples/analyse_sweep.py --sweep outputs/multirun/2026-01-01/12-00-00_000000   # analyse yours

Writes ``<sweep>/figures/analysis.png``: (a) the trained predictor's excess risk against the training step, the
median over repeats, one curve per ``d`` (seeds pooled, band: 95% interval over jobs); (b) the final excess of the
trained predictor and of the Bayes-optimal estimator against ``d``, mean over seeds.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from slr.results import load_sweep  # noqa: E402

SWEEP = ["task.d=6,10,16", "seed=0,1", "task.L=4", "train.simulator=reduced", "train.steps=3000",
         "train.log_every=100", "train.repeats=4", "eval.n_test=2000", "eval.bayes_is=2000", "figures=false",
         "name=analyse_sweep"]


def run_sweep(sweep_dir: Path) -> None:
    """``python -m slr -m <SWEEP> hydra.sweep.dir=<sweep_dir>``: six jobs of erf attention trained by SGD
    (the exact reduced simulator: fast at any d)."""
    cmd = [sys.executable, "-m", "slr", "-m", *SWEEP, f"hydra.sweep.dir={sweep_dir}"]
    print("$", " ".join(["python", *cmd[1:]]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def analyse(sweep_dir: Path) -> Path:
    sw = load_sweep(sweep_dir)  # one row per job: overrides as typed columns, status, every summary number
    if len(sw.problems()):
        print("jobs without results:\n" + sw.problems()[["job", "status", "error"]].to_string(index=False))
    done = sw.finished()
    print(done[["task.d", "seed", "excess.trained.mc", "excess.trained.se", "excess.bayes.importance_sampling",
                "timings.total_s"]].to_string(index=False))

    curves = done.metrics()  # every job's metrics.csv, long form, with the job's override columns
    per_step = curves.groupby(["task.d", "seed", "step"], as_index=False)["excess"].median()  # median over repeats
    final = done.melt(id_vars=["task.d", "seed"], var_name="predictor", value_name="excess risk",
                      value_vars=["excess.trained.mc", "excess.bayes.importance_sampling"])
    final["predictor"] = final["predictor"].map({"excess.trained.mc": "trained erf attention (Monte Carlo)",
                                                 "excess.bayes.importance_sampling": "Bayes-optimal (importance sampling)"})

    sns.set_theme(style="whitegrid", context="paper")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    sns.lineplot(per_step, x="step", y="excess", hue="task.d", palette="viridis", errorbar=("pi", 95), ax=a)
    a.set(yscale="log", xlabel="training step", ylabel="excess risk (closed form, units of Y²)",
          title="(a) trained erf attention, median over repeats")
    a.legend(title="token dimension d")
    sns.lineplot(final, x="task.d", y="excess risk", hue="predictor", style="predictor", markers=True, dashes=False,
                 errorbar="se", ax=b)
    b.set(yscale="log", xlabel="token dimension d", ylabel="final excess risk (units of Y²)",
          title="(b) after training, mean ± s.e. over seeds")
    out = Path(sweep_dir) / "figures" / "analysis.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", type=Path, help="analyse this sweep folder instead of running the small sweep")
    ap.add_argument("--out", type=Path, default=Path("outputs/examples/sweep_d"), help="where the small sweep goes")
    args = ap.parse_args(argv)
    if args.sweep is None:
        run_sweep(args.out)
    analyse(args.sweep or args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
