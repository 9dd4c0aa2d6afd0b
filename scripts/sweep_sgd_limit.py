"""Validate the SGD-limit ODE (``train.simulator=ode``) against the exact reduced chain at growing ``d``
(``docs/dynamics.md``, section "Online SGD: the high-dimensional limit").

For each start (``manifold``, ``sphere``), step ``delta = lr d``, batch ``B`` and ``d``: ``--repeats`` runs of the exact
reduced chain and the ODE from the same initial overlaps (with and without its second-order correction), logged at
``--logs`` times up to ``t = step/d = min(--flow-time / delta, --max-t)`` (the same flow time ``delta t`` unless capped), at
constant ``lam``. The gap is the sup over logged steps of |median over repeats of the chain - median of the ODE runs|
for ``|kappa|``, ``|nu|`` and the excess; its log-log slope in ``d`` is fitted over the ``d`` given.

    .venv/bin/python scripts/sweep_sgd_limit.py --out outputs/sweep_sgd_limit          # the full grid (~20 min per start on 2 shared cores; --inits one start)
    .venv/bin/python scripts/sweep_sgd_limit.py --d 400 1600 --deltas 1.6 --batches 5  # one row

Writes ``curves.csv`` (every logged median), ``table.csv``, ``table.md`` and ``figures/sgd_limit_B<B>.png``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from slr.core.predictors import ERF
from slr.core.task import Task
from slr.theory import erf_excess
from slr.training.algorithms import INITS, ReducedSGD
from slr.training.sgd_limit import SGDLimit

QUANTITIES = ("abs_kappa", "abs_nu", "excess")


def medians(o: dict, excess: np.ndarray) -> dict:
    return dict(abs_kappa=float(np.median(np.abs(o["kappa"]))), abs_nu=float(np.median(np.abs(o["nu"]))),
                excess=float(np.median(excess)))


def one_setting(init: str, delta: float, B: int, d: int, *, lam: float, repeats: int, horizon: float, logs: int,
                L: int, gamma: float, eps: float, seed: int) -> tuple[list[dict], dict]:
    """Chain and ODE (corrected, plain flow) curves of one setting, and the wall times."""
    task = Task(d, L, gamma, eps, None, seed=seed)
    C0 = INITS[init](repeats, d, np.random.default_rng(seed))
    steps = max(int(round(horizon * d)), logs)
    marks = np.linspace(0, steps, logs + 1).round().astype(int)
    lr = delta / d
    rows, times = [], {}

    def log(kind, algo, t):
        o = algo.overlaps()
        ex = algo.expected_excess(lam) if isinstance(algo, SGDLimit) else erf_excess(
            lam, o["kappa"], o["nu"], o["theta"], o["eta"], o["rho"], d=d, L=L, gamma=gamma)
        q = medians(o, ex)
        if kind == "chain":  # the chain's 10-90% band over repeats
            for name, x in (("abs_kappa", np.abs(o["kappa"])), ("abs_nu", np.abs(o["nu"])), ("excess", ex)):
                q[name + "_lo"], q[name + "_hi"] = (float(v) for v in np.quantile(x, [0.1, 0.9]))
        rows.append(dict(init=init, delta=delta, B=B, d=d, model=kind, step=int(t), t=t / d, **q))

    algos = {"chain": ReducedSGD(task, ERF, C0, lr=lr, batch_size=B, projected=True,
                                 generator=torch.Generator().manual_seed(seed + 1)),
             "ode": SGDLimit(task, C0, lr=lr, batch_size=B, schedule=lambda s: lam),
             "flow": SGDLimit(task, C0, lr=lr, batch_size=B, schedule=lambda s: lam, correction=False)}
    for kind, algo in algos.items():
        start = time.perf_counter()
        log(kind, algo, 0)
        for a, b in zip(marks[:-1], marks[1:]):
            algo.advance(int(a), np.full(int(b - a), lam))
            log(kind, algo, b)
        times[kind] = time.perf_counter() - start
    return rows, times


def gaps(curves: pd.DataFrame) -> pd.DataFrame:
    """Sup over logged steps of |median chain - ODE| per setting, for the ODE and the plain flow."""
    out = []
    for key, g in curves.groupby(["init", "delta", "B", "d"]):
        chain = g[g.model == "chain"].set_index("step")
        row = dict(zip(["init", "delta", "B", "d"], key))
        for kind in ("ode", "flow"):
            other = g[g.model == kind].set_index("step")
            for q in QUANTITIES:
                row[f"{kind}_{q}"] = float((chain[q] - other[q]).abs().max())
        out.append(row)
    return pd.DataFrame(out)


def slopes(table: pd.DataFrame) -> pd.DataFrame:
    """Least-squares slope of log gap against log d, per (init, delta, B) and column."""
    cols = [c for c in table.columns if c.startswith(("ode_", "flow_")) and not c.endswith("_s")]
    rows = []
    for key, g in table.groupby(["init", "delta", "B"]):
        row = dict(zip(["init", "delta", "B"], key))
        for c in cols:
            y = np.log(np.maximum(g[c].to_numpy(), 1e-12))
            row[c] = float(np.polyfit(np.log(g.d.to_numpy()), y, 1)[0]) if len(g) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def figure(curves: pd.DataFrame, B: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = curves[curves.B == B]
    combos = sorted({(i, dl) for i, dl in zip(sub.init, sub.delta)})
    ds = sorted(sub.d.unique())
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, len(ds)))
    fig, axes = plt.subplots(len(combos), 3, figsize=(13, 2.6 * len(combos)), squeeze=False)
    labels = {"abs_kappa": "median |kappa|", "abs_nu": "median |nu|", "excess": "median excess risk"}
    for r, (init, delta) in enumerate(combos):
        for c, q in enumerate(QUANTITIES):
            ax = axes[r, c]
            for colour, d in zip(colours, ds):
                g = sub[(sub.init == init) & (sub.delta == delta) & (sub.d == d)]
                ch, od, fl = (g[g.model == m] for m in ("chain", "ode", "flow"))
                ax.fill_between(ch.t, ch[q + "_lo"], ch[q + "_hi"], color=colour, alpha=0.12, lw=0)
                ax.plot(ch.t, ch[q], color=colour, lw=1.0, alpha=0.8, label=f"chain d={d}")
                ax.plot(od.t, od[q], color=colour, lw=1.6, ls="--", label=f"ODE d={d}")
                ax.plot(fl.t, fl[q], color=colour, lw=0.8, ls=":")
            ax.set_title(f"{init}, delta={delta:g}, B={B}", fontsize=9)
            ax.set_xlabel("t = step / d")
            ax.set_ylabel(labels[q])
    axes[0, 0].legend(fontsize=6, ncol=2)
    fig.suptitle("SGD limit: chain median (solid) with its 10-90% band, ODE (dashed), plain flow at step delta (dotted)",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(df: pd.DataFrame, fmt: str) -> str:
    """A pipe table of ``df`` (numbers in ``fmt``)."""
    cells = [[format(v, fmt) if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/sweep_sgd_limit")
    ap.add_argument("--inits", nargs="+", default=["manifold", "sphere"])
    ap.add_argument("--deltas", nargs="+", type=float, default=[0.08, 0.4, 1.6])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 5])
    ap.add_argument("--d", nargs="+", type=int, default=[400, 1600, 6400, 25600])
    ap.add_argument("--repeats", type=int, default=32)
    ap.add_argument("--flow-time", type=float, default=6.0, help="horizon in delta t (flow time): t = flow-time/delta")
    ap.add_argument("--max-t", type=float, default=50.0, help="but t at most this (the chain's cost is d t steps)")
    ap.add_argument("--logs", type=int, default=40)
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--L", type=int, default=10)
    ap.add_argument("--gamma", type=float, default=0.5**0.5)
    ap.add_argument("--eps", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, walls = [], []
    for init in args.inits:
        for delta in args.deltas:
            for B in args.batches:
                for d in args.d:
                    r, times = one_setting(init, delta, B, d, lam=args.lam, repeats=args.repeats,
                                           horizon=min(args.flow_time / delta, args.max_t), logs=args.logs, L=args.L, gamma=args.gamma,
                                           eps=args.eps, seed=args.seed)
                    rows += r
                    walls.append(dict(init=init, delta=delta, B=B, d=d, **{f"{k}_s": v for k, v in times.items()}))
                    print(f"{init} delta={delta:g} B={B} d={d}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()),
                          flush=True)
                pd.DataFrame(rows).to_csv(out / "curves.csv", index=False)
    curves = pd.DataFrame(rows)
    table = gaps(curves).merge(pd.DataFrame(walls), on=["init", "delta", "B", "d"])
    table.to_csv(out / "table.csv", index=False)
    sl = slopes(table)
    sl.to_csv(out / "slopes.csv", index=False)
    with open(out / "table.md", "w") as fh:
        fh.write(f"sup over logged steps of |median chain - median ODE| ({args.repeats} repeats, lam={args.lam}, "
                 f"horizon t = min({args.flow_time}/delta, {args.max_t})); flow = the ODE without its correction\n\n")
        fh.write(markdown(table, ".3g") + "\n\nlog-log slopes in d\n\n")
        fh.write(markdown(sl, ".2f") + "\n")
    for B in sorted(curves.B.unique()):
        figure(curves, int(B), out / "figures" / f"sgd_limit_B{B}.png")
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
