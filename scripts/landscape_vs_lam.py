#!/usr/bin/env python
"""The bifurcation picture of a landscape sweep over lam: critical points, their indices and the basins vs lam.

    slr-landscape -m predictor.lam=0.02,0.05,0.1,0.2,0.5,1 task.d=400 landscape.basin_repeats=300
    python scripts/landscape_vs_lam.py SWEEP_DIR            # SWEEP_DIR: the multirun folder of that sweep

Reads every job's ``critical_points.csv`` (its ``lam`` column is the lam at which PGD ended, so a sweep of schedules
works too) and ``summary.json``; links the critical points of neighbouring lam values into families (nearest symmetry
class of the overlaps within ``--link``); writes ``SWEEP_DIR/landscape_vs_lam.csv`` (one row per critical point and
lam, with its ``family``), ``SWEEP_DIR/basins_vs_lam.csv`` (fraction of PGD end points per label and lam, binomial
standard error, unassigned ones as their own label) and ``SWEEP_DIR/figures/landscape_vs_lam.png``: (a) excess of each
family vs lam, (b) its Hessian index, (c) basin fractions vs lam with error bars. Prints the minima and basins per lam.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slr.landscape import class_distance  # noqa: E402
from slr.theory import OVERLAPS  # noqa: E402
from slr.plots.landscape import bifurcation_figure  # noqa: E402
from slr.plots.dynamics import save  # noqa: E402
from slr.results.sweep import find_job_dirs, read_job  # noqa: E402


def read_jobs(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """All critical points of the finished jobs (with ``lam`` and ``job``), the basin fractions per label and lam,
    and the list of jobs left out (with why)."""
    points, basins, left_out = [], [], []
    for job in map(read_job, find_job_dirs(sweep_dir)):
        summary, csv = job.summary or {}, job.path / "critical_points.csv"
        if job.status != "ok" or not csv.is_file():
            left_out.append(f"{job.path}: status {job.status}" + (f" ({job.error})" if job.error else ""))
            continue
        t = pd.read_csv(csv)
        t["job"] = job.name
        points.append(t)
        b = summary.get("basins")
        if b and "basin_fraction" in t:
            n = int(b["repeats"])
            lam = float(t["lam"].iloc[0]) if len(t) else float(summary["landscape_lam"])
            by = t.groupby("label")["basin_fraction"].sum().to_dict()
            if b.get("unassigned"):
                by["unassigned"] = b["unassigned"] / n
            for label, f in by.items():
                basins.append(dict(lam=lam, label=label, fraction=f, se=float(np.sqrt(f * (1 - f) / n)), n=n, job=job.name))
    pts = pd.concat(points, ignore_index=True) if points else pd.DataFrame()
    return pts, pd.DataFrame(basins), left_out


def link_families(points: pd.DataFrame, link: float) -> pd.DataFrame:
    """``points`` with a ``family`` column: going up in lam, each critical point continues the family of the nearest
    point at the previous lam (distance between symmetry classes of the overlaps, at most ``link``; each point of the
    previous lam continues at most one family, nearest pairs first); otherwise it starts a new family."""
    points = points.sort_values(["lam", "excess"]).reset_index(drop=True)
    points["family"] = -1
    prev_idx, n_fam = None, 0
    for lam, g in points.groupby("lam", sort=True):
        idx = g.index.to_numpy()
        if prev_idx is not None and len(prev_idx):
            D = class_distance(points.loc[idx, list(OVERLAPS)].to_numpy(float),
                               points.loc[prev_idx, list(OVERLAPS)].to_numpy(float))
            used_new, used_old = set(), set()
            for flat in np.argsort(D, axis=None):
                i, j = np.unravel_index(flat, D.shape)
                if D[i, j] > link:
                    break
                if i in used_new or j in used_old:
                    continue
                points.loc[idx[i], "family"] = points.loc[prev_idx[j], "family"]
                used_new.add(i)
                used_old.add(j)
        for i in idx:
            if points.loc[i, "family"] < 0:
                points.loc[i, "family"] = n_fam
                n_fam += 1
        prev_idx = idx
    # a family's label: its most frequent one
    main = points.groupby("family")["label"].agg(lambda s: s.value_counts().index[0])
    points["family_label"] = points["family"].map(main)
    return points


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--link", type=float, default=0.25, help="largest overlap distance that continues a family (0.25)")
    ap.add_argument("--max-excess", type=float, default=None, help="leave out critical points above this excess")
    args = ap.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"landscape_vs_lam: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 1
    points, basins, left_out = read_jobs(args.sweep_dir)
    for line in left_out:
        print(f"left out: {line}", file=sys.stderr)
    if points.empty:
        print(f"landscape_vs_lam: no finished slr-landscape job under {args.sweep_dir}", file=sys.stderr)
        return 1
    if args.max_excess is not None:
        points = points[points["excess"] <= args.max_excess]
    points = link_families(points, args.link)
    plot_points = points.assign(label=points["family_label"])
    fig, _ = bifurcation_figure(plot_points, basins if len(basins) else None,
                                title=f"{args.sweep_dir.name}: critical points and basins vs λ "
                                      f"({points['lam'].nunique()} values of λ, {points['family'].nunique()} families)")
    paths = save(fig, args.sweep_dir / "figures" / "landscape_vs_lam", formats=("png",))
    points.to_csv(args.sweep_dir / "landscape_vs_lam.csv", index=False)
    basins.to_csv(args.sweep_dir / "basins_vs_lam.csv", index=False)
    pd.set_option("display.width", 200)
    print("minima per λ (label: excess, zero modes beyond the symmetries marked 'flat'):")
    for lam, g in points.groupby("lam"):
        mins = g[g["index"] == 0]
        desc = ", ".join(f"{r.label}: {r.excess:.4g}" + (" (flat)" if r.zero_modes > r.symmetry_modes else "")
                         for r in mins.itertuples())
        print(f"  λ={lam:<8.4g} {len(g):3d} critical points; minima: {desc}")
    if len(basins):
        print("\nbasin fractions (± s.e.):")
        wide = basins.assign(cell=[f"{f:.3f} ± {s:.3f}" for f, s in zip(basins["fraction"], basins["se"])])
        print(wide.pivot_table(index="lam", columns="label", values="cell", aggfunc="first").fillna("").to_string())
    print("\nwrote " + ", ".join(map(str, [*paths, args.sweep_dir / "landscape_vs_lam.csv",
                                           args.sweep_dir / "basins_vs_lam.csv"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
