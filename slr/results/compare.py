"""``slr-compare SWEEP_DIR [SWEEP_DIR...]``: every predictor of a sweep against the Bayes-optimal estimator, as a
figure, a table and a CSV (see ``docs/analysis.md``).

    slr-compare SWEEP_DIR                     # e.g. after slr -m experiment=sweep_d
    slr-compare SWEEP_DIR OTHER_SWEEP_DIR     # add OTHER's trained predictor (e.g. softmax)
    slr-compare SWEEP_DIR --x task.L          # choose the axis instead of detecting it

The x axis is the swept override (the one that varies between jobs, ``seed`` being the replicate axis; with several,
the numeric one with the most values, the others giving one curve each). Every predictor in the summaries is drawn:
trained, oracle at the run's lam and at its best lam, Bayes-optimal (importance sampling when present), linear,
bilinear, least-squares linear... each as the mean over seeds with its standard error (the job's own standard error
with one seed; closed forms are exact and drawn dashed). Panel (b) divides each excess by the Bayes excess where
that is > 0. Writes ``SWEEP_DIR/figures/compare_bayes.{png,pdf}`` and ``compare_bayes.csv`` and prints the table.
Further sweep folders contribute their trained predictor only. Failed, running and corrupt jobs are listed and left out.

Asymptotic references (``--asymptotic``; on by itself for a sweep over ``task.d`` at ``predictor.lam=auto``, such as
``experiment=sweep_d_asymptotic``): the small-lam law of the best oracle ``(4(L-1)/pi)(u*+1)/d ~ (L-1) ln d / d``
(``docs/closed-forms.md#6-the-best-oracle-lam``, ``theory.oracle_asymptotic_excess``) and the excess of the swapped critical point
``k = ±v*`` at each job's lam (``slr.landscape.swapped_point``), both exact, drawn dashed.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from slr.results import sweep


def _constant(jobs, path: str):
    """The value of a summary entry (dotted path) if all finished jobs agree on it, else None."""
    values = set()
    for j in jobs:
        node = j.summary
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values.add(node if not isinstance(node, float) else round(node, 10))
    return values.pop() if len(values) == 1 else None


def describe(jobs, x: str | None) -> str:
    """The fixed task parameters and the training of the finished jobs, for the figure's title."""
    task = []
    for key, label in (("d", "d"), ("L", "L"), ("gamma2", "γ²"), ("eps", "ε")):
        if x != f"task.{key}" and not (key == "gamma2" and x == "task.gamma"):
            v = _constant(jobs, f"task.{key}")
            if v is not None:
                task.append(f"{label}={v:g}")
    trained = dict.fromkeys((t.get("predictor"), t.get("algo"), t.get("simulator"))
                            for t in (j.summary.get("trained") for j in jobs) if isinstance(t, dict))
    by_algo: dict[tuple, list[str]] = {}
    for p, a, s in trained:
        by_algo.setdefault((a, s), []).append(str(p))
    train = ", ".join(f"{' and '.join(ps)} trained by {a} ({s} simulator)" for (a, s), ps in by_algo.items())
    return ", ".join(task) + ("; " if task and train else "") + train


def markers(jobs, x: str | None, curves: pd.DataFrame) -> dict[str, float]:
    """Vertical reference lines that the swept parameter calls for: the least-squares interpolation threshold
    ``n = L d + 1`` on a training-set-size axis, the best oracle lam on a lam axis."""
    out = {}
    if x == "train.n_train" and (curves["estimator"] == "least_squares").any():
        L, d = _constant(jobs, "task.L"), _constant(jobs, "task.d")
        if L and d:
            out[f"n = L·d + 1 = {L * d + 1} (parameters of the linear fit)"] = L * d + 1
    if x == "predictor.lam":
        best = _constant(jobs, "excess.oracle_best.lam")
        if best:
            out[f"best oracle λ = {best:.3g}"] = best
    return out


def asymptotic_references(jobs) -> pd.DataFrame:
    """Rows of :func:`slr.results.sweep.excess_long` for the asymptotic law and the swapped point, one per finished job."""
    from slr import theory
    from slr.landscape import swapped_point

    rows, cache = [], {}
    for j in jobs:
        task, lam = j.summary.get("task", {}), j.summary.get("excess", {}).get("oracle", {}).get("lam")
        if not task or lam is None:
            continue
        d, L, gamma = int(task["d"]), int(task["L"]), float(task["gamma"])
        key = (d, L, gamma, float(task.get("M", 0)), float(lam))
        if key not in cache:
            sp = swapped_point(lam, d=d, L=L, gamma=gamma, signal=task.get("M"))
            cache[key] = (float(theory.oracle_asymptotic_excess(d, L, gamma)), None if sp is None else sp["excess"])
        law, swapped = cache[key]
        base = dict(j.overrides, job=j.name, se=0.0, source="closed form")
        rows.append(dict(base, estimator="law", estimator_name="law (4(L-1)/π)(u*+1)/d ~ (L-1) ln d/d",
                         lam=None, value=law))
        if swapped is not None:
            rows.append(dict(base, estimator="swapped", estimator_name="swapped point k = ±v*", lam=lam,
                             value=swapped))
    return pd.DataFrame(rows)


@dataclass
class Comparison:
    """What :func:`compare_bayes` made: the curves (one row per curve and x value), the printed text, the files
    written and the jobs left out (unfinished)."""

    curves: pd.DataFrame
    text: str
    paths: list[Path] = field(default_factory=list)
    left_out: list[sweep.Job] = field(default_factory=list)
    x: str | None = None


class NothingToCompare(ValueError):
    """No finished job in the sweep folders."""


def compare_bayes(sweep_dir: str | Path, more: Sequence[str | Path] = (), *, x: str | None = None,
                  replicate: str = sweep.REPLICATE, out: str | Path | None = None,
                  asymptotic: bool | None = None, formats: Sequence[str] = ("png", "pdf")) -> Comparison:
    """Compare every predictor of ``sweep_dir`` (and the trained predictors of ``more`` sweeps) with the
    Bayes-optimal estimator: write ``compare_bayes.{png,pdf}`` and ``compare_bayes.csv`` into ``out`` (default
    ``sweep_dir/figures``) and return the :class:`Comparison`. Raises :class:`NothingToCompare` when no job finished,
    :class:`slr.results.ResultsError` when a folder is not a sweep."""
    from slr.plots.dynamics import save
    from slr.plots.sweeps import AXIS_LABELS, excess_bars, excess_vs_parameter
    from slr.results.load import ResultsError

    sweep_dir = Path(sweep_dir)
    for d in (sweep_dir, *map(Path, more)):
        if not d.is_dir():
            raise ResultsError(f"slr-compare: {d} is not a folder")
    main_jobs = sweep.read_sweep(sweep_dir)
    extra_jobs = [j for d in more for j in sweep.read_sweep(Path(d))]
    all_jobs = main_jobs + extra_jobs
    sweep.prior_as_weight(all_jobs)  # a swept position prior: its weight on position 1 is the axis
    if not main_jobs:
        raise ResultsError(f"slr-compare: {sweep_dir} is not a sweep: no job folder (with .hydra/ or summary.json) "
                           "under it")
    done = [j for j in all_jobs if j.status in sweep.FINISHED]
    if not done:
        raise NothingToCompare(f"slr-compare: no finished job under {sweep_dir}")

    axis, groups = sweep.choose_axis(done, replicate)
    if x:
        axis, groups = x, [k for k in sweep.swept_keys(done) if k not in (x, replicate)]
    x = axis
    sweep.fill_from_config(done, [x, *groups])  # an override swept in one sweep only: the others' value from config
    finished = {id(j) for j in done}
    main_done = [j for j in main_jobs if id(j) in finished]
    long = pd.concat([sweep.excess_long(main_done),
                      sweep.excess_long([j for j in extra_jobs if id(j) in finished], keys=["trained"])],
                     ignore_index=True)
    if asymptotic or (asymptotic is None and x == "task.d" and all(j.summary.get("lam_auto") for j in main_done)):
        long = pd.concat([long, asymptotic_references(main_done)], ignore_index=True)
    for g in [x, *groups]:
        if g and g not in long:
            long[g] = None
    curves = sweep.series(sweep.over_replicates(long, x, groups), x, groups)
    bayes = curves.loc[curves["estimator"] == "bayes", "label"]
    reference = bayes.iloc[0] if len(bayes) else None
    n_rep = int(long.groupby(["estimator", *([x] if x else []), *groups], dropna=False).size().max())

    names = ", ".join(sorted({str(j.summary.get("name")) for j in done}))
    spread = f"mean ± s.e. over {n_rep} {replicate}s" if n_rep > 1 else f"one {replicate}, ± Monte Carlo s.e."
    what = describe(done, x)
    title = (f"{names}: excess risk vs {AXIS_LABELS.get(x, x)}\n" if x else f"{names}: excess risk\n") + \
        (f"{what}; {spread}" if len(what) < 110 else textwrap.fill(what, 140) + f"\n{spread}")

    lines = [title.replace("\n", " — "), "", "excess risk (" + spread + "; closed forms exact)"]
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_colwidth", 40):
        lines.append(sweep.wide(curves, x).to_string())
        tiny = curves[(curves["value"] == 0) & np.isfinite(curves["log10"])] if "log10" in curves else curves[:0]
        if len(tiny):  # Bayes excess below the smallest double: 0 in the table and off the log axis, finite in log10
            lines.append("\nbelow the floating-point range (shown as 0; importance sampling, log10 of the excess risk):")
            lines += [f"  {row['label']}" + (f", {x}={row[x]}" if x else "") + f": 10^{row['log10']:.1f}"
                      for _, row in tiny.iterrows()]
        if reference is not None and (curves["ratio"] > 0).any():
            lines += ["", "ratio of excess risk to the Bayes excess risk",
                      sweep.wide(curves[curves["label"] != reference], x, "ratio", "ratio_se").to_string()]
        lines += _diagnostics(done, x, groups)

    out = Path(out) if out is not None else sweep_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    if x:
        fig, _ = excess_vs_parameter(curves, x, reference=reference, title=title, vlines=markers(done, x, curves))
    else:
        fig, _ = excess_bars(curves, reference=reference, title=title)
    paths = list(save(fig, out / "compare_bayes", tuple(formats)))
    cols = [c for c in ["label", "estimator", "estimator_name", x, *groups, "value", "se", "n", "lam", "source",
                        "ratio", "ratio_se"] if c and c in curves]
    curves[cols].to_csv(out / "compare_bayes.csv", index=False)
    paths.append(out / "compare_bayes.csv")
    lines.append("\nwrote " + ", ".join(str(p) for p in paths))
    return Comparison(curves=curves, text="\n".join(lines), paths=paths, left_out=sweep.problems(all_jobs), x=x)


def _diagnostics(done, x: str | None, groups: Sequence[str]) -> list[str]:
    """What the trained predictors converge to, mean over seeds (a table, or nothing)."""
    diag = sweep.trained_diagnostics(done)
    quantities = [q for q in ("attention_on_J0", "abs_kappa", "abs_nu") if q in diag and diag[q].notna().any()]
    if not quantities:
        return []
    by = ["estimator_name", *[g for g in groups if g in diag and  # a group that varies for one predictor
                              diag.groupby("estimator_name")[g].nunique(dropna=False).max() > 1]]
    table = diag.groupby([*by, *([x] if x else [])], dropna=False)[quantities].mean()
    table = table.unstack(by) if x else table
    return ["", "what the trained predictors converge to (medians over repeats, mean over seeds): attention on J0 "
            "(mean weight on the informative token), |kappa|, |nu| (key and value directions; effective ones for a "
            "transformer)", table.to_string(float_format=lambda v: f"{v:.3g}")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="slr-compare", description=__doc__.split("\n")[0].split(": ", 1)[-1])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("more", type=Path, nargs="*", help="further sweeps whose trained predictor is added")
    ap.add_argument("--x", help="override to put on the x axis (default: detected)")
    ap.add_argument("--replicate", default=sweep.REPLICATE, help="override whose values are replicates (default: seed)")
    ap.add_argument("--out", type=Path, help="figure folder (default: SWEEP_DIR/figures)")
    ap.add_argument("--asymptotic", action="store_true", default=None, help="add the asymptotic law and the swapped "
                    "point (default: when the x axis is task.d and every job ran at predictor.lam=auto)")
    args = ap.parse_args(argv)
    from slr.results.load import ResultsError

    try:
        result = compare_bayes(args.sweep_dir, args.more, x=args.x, replicate=args.replicate, out=args.out,
                               asymptotic=args.asymptotic)
    except (ResultsError, NothingToCompare) as exc:
        for j in sweep.problems([j for d in (args.sweep_dir, *args.more) if d.is_dir() for j in sweep.read_sweep(d)]):
            print(f"left out: {j.status:<8} {j.path}: {j.error}", file=sys.stderr)
        print(exc, file=sys.stderr)
        return 1
    for j in result.left_out:
        print(f"left out: {j.status:<8} {j.path}: {j.error}", file=sys.stderr)
    print(result.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
