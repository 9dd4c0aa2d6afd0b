"""``slr-aggregate SWEEP_DIR``: a sweep as one table, ``SWEEP_DIR/summary.csv``, one row per job
(:func:`slr.results.load_sweep`'s table).

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

from slr.results.load import ResultsError, Sweep, load_sweep


def aggregate(sweep_dir: str | Path, output: str | Path | None = None) -> tuple[Sweep, Path]:
    """Write the sweep's table to ``output`` (default ``SWEEP_DIR/summary.csv``); return it and the CSV's path."""
    table = load_sweep(sweep_dir)
    out = Path(output) if output is not None else Path(sweep_dir) / "summary.csv"
    table.to_csv(out, index=False)
    return table, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="slr-aggregate", description=__doc__.split("\n")[0].split(": ", 1)[-1])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("-o", "--output", type=Path, help="CSV to write (default: SWEEP_DIR/summary.csv)")
    args = ap.parse_args(argv)
    try:
        table, out = aggregate(args.sweep_dir, args.output)
    except ResultsError as exc:
        print(f"slr-aggregate: {exc}", file=sys.stderr)
        return 1
    bad = table.problems()
    swept = [k for k in table.overrides if table[k].astype(str).nunique() > 1]
    print(f"{out}: {len(table)} jobs, {len(table) - len(bad)} finished, swept: {', '.join(swept) or '-'}")
    for _, j in bad.iterrows():
        print(f"  {j['status']:<8} {j['path']}: {j['error']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
