#!/usr/bin/env python
"""Reproduce the paper's five training-dynamics experiments (``docs/training.md#the-papers-five-experiments``) and
collect their figures in one place.

    python scripts/reproduce_paper.py                 # all five, full scale, 2 parallel jobs
    python scripts/reproduce_paper.py --jobs 1        # one after the other
    python scripts/reproduce_paper.py -- train.repeats=5 train.steps=2000   # extra overrides for every job

Runs ``python -m slr -m experiment=... hydra/launcher=joblib`` into ``outputs/paper/<date>_<time>/``, copies
each job's four-panel figure to ``<sweep>/figures/<preset>.png`` (and ``.pdf`` with ``-- figures.pdf=true``), and
prints per experiment the final
medians of |kappa|, |nu|, the excess risk and the distance to the manifold, how many repeats aligned
(|kappa| and |nu| >= 0.9), how many ended with k on v* instead (|eta| = |<k,v*>| >= 0.9: at small lam the erf is
nearly linear and the risk nearly symmetric in k and v) and the job's wall time; the table is also written to ``<sweep>/paper.csv``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slr.app.schema import outputs_dir  # noqa: E402
from slr.io import read_json  # noqa: E402

# longest first, so that two workers finish together
PRESETS = ["paper_sgd_sphere_schedule", "paper_gd_sphere_schedule", "paper_gd_sphere_large_lambda",
           "paper_gd_manifold", "paper_gd_sphere_small_lambda"]
ALIGNED = 0.9


def collect(sweep: Path) -> pd.DataFrame:
    """One row per preset from the job folders of ``sweep``; figures copied to ``sweep/figures``."""
    rows = []
    (sweep / "figures").mkdir(exist_ok=True)
    for preset in PRESETS:
        job = next((p for p in sweep.iterdir() if p.is_dir() and f"experiment={preset}" in p.name), None)
        s = read_json(job / "summary.json") if job else None
        if s is None:
            rows.append(dict(experiment=preset, status="missing"))
            continue
        for ext in ("png", "pdf"):
            fig = job / "figures" / f"dynamics.{ext}"
            if fig.exists():
                shutil.copy(fig, sweep / "figures" / f"{preset}.{ext}")
        per = s.get("final_overlaps", {}).get("per_repeat", {})
        k, v = np.abs(np.asarray(per.get("kappa", []), float)), np.abs(np.asarray(per.get("nu", []), float))
        trained = s.get("excess", {}).get("trained", {})
        rows.append(dict(
            experiment=preset, status=s["status"], repeats=s.get("trained", {}).get("repeats"),
            steps=s.get("trained", {}).get("steps_done"),
            abs_kappa=float(np.median(k)) if k.size else np.nan, abs_nu=float(np.median(v)) if v.size else np.nan,
            excess=trained.get("closed_form", trained.get("mc")),
            oracle=s.get("excess", {}).get("oracle", {}).get("closed_form"),
            dist_to_M=s.get("final_overlaps", {}).get("median", {}).get("dist_to_M"),
            aligned=int(((k >= ALIGNED) & (v >= ALIGNED)).sum()),
            k_on_v_star=int((np.abs(np.asarray(per.get("eta", []), float)) >= ALIGNED).sum()),
            seconds=s.get("timings", {}).get("total_s"),
            steps_per_s=s.get("timings", {}).get("steps_per_s")))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2, help="parallel jobs (joblib workers); default 2")
    ap.add_argument("--out", type=Path, default=None, help="sweep folder (default outputs/paper/<date>_<time>)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job (after --)")
    args = ap.parse_args(argv)
    sweep = args.out or Path(outputs_dir()) / "paper" / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    cmd = [sys.executable, "-m", "slr", "-m", "experiment=" + ",".join(PRESETS),
           "hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}", f"hydra.sweep.dir={sweep}",
           *args.overrides]
    print("running:", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    table = collect(sweep)
    table.to_csv(sweep / "paper.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
    print(f"\nall five: {wall:.1f} s wall with {args.jobs} parallel job(s); figures in {sweep / 'figures'}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
