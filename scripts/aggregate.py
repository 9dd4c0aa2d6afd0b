#!/usr/bin/env python
"""Aggregate a sweep into one table: ``SWEEP_DIR/summary.csv``, one row per job.

    python scripts/aggregate.py SWEEP_DIR            # e.g. outputs/multirun/2026-01-01/12-00-00_000000
    python scripts/aggregate.py SWEEP_DIR -o out.csv

Columns: ``job`` (folder name), ``status``, ``error``, the job's overrides (``task.d``, ``seed``...), then every number
of its ``summary.json`` under its dotted path (``excess.trained.mc``, ``excess.bayes.importance_sampling``,
``final_overlaps.median_abs.kappa``, ``timings.total_s``...; per-repeat lists are left out) and ``path``.
Failed, running, corrupt and missing jobs get a row with their status and error, are listed on stderr, and do not
stop the others from being aggregated.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slr.results import sweep  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("-o", "--output", type=Path, help="CSV to write (default: SWEEP_DIR/summary.csv)")
    args = ap.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"aggregate: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 1
    jobs = sweep.read_sweep(args.sweep_dir)
    if not jobs:
        print(f"aggregate: no job folder (with .hydra/ or summary.json) under {args.sweep_dir}", file=sys.stderr)
        return 1
    out = args.output or args.sweep_dir / "summary.csv"
    sweep.sweep_table(jobs).to_csv(out, index=False)
    bad = sweep.problems(jobs)
    swept = ", ".join(sweep.swept_keys(jobs)) or "-"
    print(f"{out}: {len(jobs)} jobs, {len(jobs) - len(bad)} finished, swept: {swept}")
    for j in bad:
        print(f"  {j.status:<8} {j.path}: {j.error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
