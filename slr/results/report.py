"""``slr-report PATH``: what a run folder or a sweep folder holds, in the terminal.

For a run folder: its status (and error), task, training and the comparison table of every predictor. For a sweep
folder: one row per job with the swept parameters, the status and the main numbers (trained excess, Monte Carlo
mean ± s.e., and the closed forms or estimates of the oracle, best oracle, Bayes, linear and bilinear predictors),
then the jobs that failed, are still running, are corrupt or missing, with their folder and error.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from slr.results import sweep
from slr.io import underflowed_log10

# (summary key, column title) of the main numbers of a sweep row, after the trained predictor's
BASELINES = (("oracle", "oracle"), ("oracle_best", "oracle best"), ("bayes", "Bayes"), ("linear", "linear"),
             ("bilinear", "bilinear"), ("least_squares", "least sq."))


def _num(v, digits: int = 4) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}g}"


def run_report(job: sweep.Job) -> str:
    """Status, task, training, timings and the comparison table of one run folder."""
    from slr.results.tables import alignment_line, comparison_table

    s = job.summary or {}
    lines = [f"run {job.path}", f"status: {job.status}" + (f"  ({job.error})" if job.error else "")]
    if s.get("name") or s.get("config_digest"):
        lines.append(f"name: {s.get('name')}   config digest: {s.get('config_digest')}")
    if job.overrides:
        lines.append("overrides: " + " ".join(f"{k}={v}" for k, v in job.overrides.items()))
    if isinstance(s.get("task"), dict):
        variant = s["task"].get("variant") or {}
        lines.append("task: " + ", ".join(f"{k}={_num(v)}" for k, v in s["task"].items() if k != "variant")
                     + "".join(f", {k}={v}" for k, v in variant.items() if k != "name"))
    t = s.get("trained")
    if isinstance(t, dict):
        kernel = f", {t['kernel']} step" if t.get("kernel") else ""  # compiled, numpy or torch
        lines.append(f"trained: {t.get('predictor')} by {t.get('algo')} ({t.get('simulator')} simulator{kernel}), "
                     f"{t.get('steps_done')} steps, "
                     + (f"final lam {_num(t.get('lam_final'))}, " if t.get("lam_final") is not None else "")
                     + f"{t.get('alive')}/{t.get('repeats')} repeats alive")
    med = (s.get("final_overlaps") or {}).get("median_abs")
    if isinstance(med, dict):
        lines.append("final overlaps (median |.| over repeats): "
                     + ", ".join(f"{k}={_num(v, 3)}" for k, v in med.items() if k not in ("norm_k", "norm_v")))
    if isinstance(s.get("timings"), dict):
        lines.append("timings: " + ", ".join(f"{k}={v if isinstance(v, bool) else _num(v, 3)}"
                                             for k, v in s["timings"].items()))
    if isinstance(s.get("excess"), dict) and s["excess"]:
        try:
            lines += ["", comparison_table(s["excess"])]
            aligned = alignment_line(s)
            if aligned:
                lines.append(aligned)
        except (KeyError, TypeError, ValueError) as exc:  # a summary from an older or damaged run
            lines.append(f"(comparison table unavailable: {type(exc).__name__}: {exc})")
    elif job.status not in sweep.FINISHED:
        lines.append(f"no excess risks: see {job.path / 'slr.log'}")
    return "\n".join(lines)


def sweep_rows(jobs: list[sweep.Job]) -> pd.DataFrame:
    """One row per job: the swept parameters, status, the trained excess (mc ± se, and its median closed form),
    the headline number of each baseline (:func:`slr.results.sweep.headline`) and the wall time."""
    keys = sweep.swept_keys(jobs) or list(dict.fromkeys(k for j in jobs for k in j.overrides))
    rows = []
    for j in jobs:
        row = {k: j.overrides.get(k, "") for k in keys}
        row["status"] = j.status
        excess = (j.summary or {}).get("excess") or {}
        tr = excess.get("trained") or {}
        row["trained (MC ± se)"] = f"{_num(tr.get('mc'))} ± {_num(tr.get('se'), 2)}" if tr.get("mc") is not None else ""
        row["trained closed form"] = _num(tr.get("closed_form"))
        for key, title in BASELINES:
            if key in excess:
                tiny = underflowed_log10(excess[key])  # below the float range: quoted by its log10
                row[title] = f"10^{tiny:.1f}" if tiny is not None else _num(sweep.headline(excess[key])[0])
        total = ((j.summary or {}).get("timings") or {}).get("total_s")
        row["time (s)"] = _num(total, 3)
        rows.append(row)
    order = [*keys, "status", "trained (MC ± se)", "trained closed form", *(t for _, t in BASELINES), "time (s)"]
    table = pd.DataFrame(rows, columns=[c for c in order if any(c in r for r in rows)])
    return table.fillna("")


def sweep_report(path: Path, jobs: list[sweep.Job]) -> str:
    """The job table of a sweep, then its problems."""
    done = [j for j in jobs if j.status in sweep.FINISHED]
    counts = pd.Series([j.status for j in jobs]).value_counts().to_dict()
    lines = [f"sweep {path}: {len(jobs)} jobs (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"]
    names = sorted({str((j.summary or {}).get("name")) for j in done})
    if names:
        lines.append("experiment: " + ", ".join(names))
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_colwidth", 30):
        lines += ["", sweep_rows(jobs).to_string(index=False)]
    lines.append("(Bayes: importance sampling when available; oracle, linear, bilinear: closed forms; "
                 "trained: mean over repeats ± one standard error)")
    bad = sweep.problems(jobs)
    if bad:
        lines += ["", f"{len(bad)} job(s) without results:"]
        lines += [f"  {j.status:<8} {j.path}\n           {j.error}" for j in bad]
    return "\n".join(lines)


def report(path: Path) -> str:
    """The report of a run folder or of a sweep folder."""
    path = Path(path)
    if sweep.is_job_dir(path):
        return run_report(sweep.read_job(path))
    jobs = sweep.read_sweep(path)
    if not jobs:
        raise FileNotFoundError(f"no run or job folder (with .hydra/ or summary.json) under {path}")
    return sweep_report(path, jobs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="slr-report", description="Status and main numbers of a run or a sweep folder.")
    ap.add_argument("path", type=Path, help="a run folder (outputs/runs/...) or a sweep folder (outputs/multirun/...)")
    args = ap.parse_args(argv)
    if not args.path.is_dir():
        print(f"slr-report: {args.path} is not a folder", file=sys.stderr)
        return 1
    try:
        print(report(args.path))
    except FileNotFoundError as exc:
        print(f"slr-report: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
