"""Phase diagram of online SGD through its high-dimensional limit (``train.simulator=ode``, ``docs/dynamics.md``):
the final state of the ODE over a grid of step ``delta = lr d`` x initial ``lam0`` of the inverse schedule
``lam_t = lam0 / (1 + rate t)``, from ``--repeats`` sphere starts per cell.

Final states: aligned (``|kappa|, |nu| >= 0.9``), swapped (``|eta| >= 0.9``: the key on ``v*``), unstable (the
fluctuation ``V`` of ``M theta`` exceeds ``M^2``: the step is past the noise's stability edge and the limit breaks
down; the chain is noise-dominated there), stalled (anything else).

    .venv/bin/python scripts/phase_sgd.py --out outputs/phase_sgd      # the paper's SGD task, d = 80, B = 5 (~1 min)

Writes ``phase.csv`` (fractions per cell) and ``figures/phase_sgd.png``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from slr.core.task import Task
from slr.training.algorithms import INITS
from slr.training.sgd_limit import SGDLimit

STATES = ("aligned", "swapped", "stalled", "unstable")


def classify(algo: SGDLimit, M: float) -> np.ndarray:
    o, V = algo.overlaps(), algo.fluctuation()
    out = np.full(len(V), "stalled", dtype=object)
    out[(np.abs(o["kappa"]) >= 0.9) & (np.abs(o["nu"]) >= 0.9)] = "aligned"
    out[np.abs(o["eta"]) >= 0.9] = "swapped"
    out[~np.isfinite(V) | (V > M * M)] = "unstable"
    return out


def cell(delta: float, lam0: float, *, d: int, L: int, gamma: float, eps: float, B: int, steps: int, rate: float,
         repeats: int, seed: int) -> dict:
    task = Task(d, L, gamma, eps, None, seed=seed)
    C0 = INITS["sphere"](repeats, d, np.random.default_rng(seed))
    algo = SGDLimit(task, C0, lr=delta / d, batch_size=B, schedule=lambda s: lam0 / (1.0 + rate * s), horizon=steps)
    start = time.perf_counter()
    try:
        for a in range(0, steps, steps // 20):
            algo.advance(a, np.empty(min(steps // 20, steps - a)))
            if (algo.fluctuation() > task.M**2).all():
                break
        states = classify(algo, task.M)
        message = ""
    except RuntimeError as err:  # a solver failure: past the stability edge, the fluctuation blows up
        states, message = np.full(repeats, "unstable", dtype=object), str(err)
    return dict(delta=delta, lam0=lam0, seconds=time.perf_counter() - start, evaluations=algo.evaluations,
                message=message, **{s: float(np.mean(states == s)) for s in STATES})


def figure(table: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deltas, lams = sorted(table.delta.unique()), sorted(table.lam0.unique())
    colours = {"aligned": "#4C72B0", "swapped": "#DD8452", "stalled": "#8C8C8C", "unstable": "#C44E52"}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for _, r in table.iterrows():
        x, y = deltas.index(r.delta), lams.index(r.lam0)
        left = 0.0
        for s in STATES:  # one horizontal bar per cell, split by the fractions of final states
            if r[s] > 0:
                ax.barh(y, r[s] * 0.9, left=x - 0.45 + left * 0.9, height=0.8, color=colours[s], edgecolor="white", lw=0.3)
                left += r[s]
    ax.set_xticks(range(len(deltas)), [f"{d:g}" for d in deltas])
    ax.set_yticks(range(len(lams)), [f"{lam:g}" for lam in lams])
    ax.set_xlabel("step delta = lr d")
    ax.set_ylabel("initial lam0 of lam_t = lam0 / (1 + rate t)")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()], labels=list(colours),
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="final state (fraction)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/phase_sgd")
    ap.add_argument("--deltas", nargs="+", type=float, default=[0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    ap.add_argument("--lam0", nargs="+", type=float, default=[0.1, 0.25, 0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--d", type=int, default=80)
    ap.add_argument("--L", type=int, default=10)
    ap.add_argument("--gamma", type=float, default=0.5**0.5)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--B", type=int, default=5)
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=1e-4)
    ap.add_argument("--repeats", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    start = time.perf_counter()
    rows = []
    for delta in args.deltas:
        for lam0 in args.lam0:
            rows.append(cell(delta, lam0, d=args.d, L=args.L, gamma=args.gamma, eps=args.eps, B=args.B,
                             steps=args.steps, rate=args.rate, repeats=args.repeats, seed=args.seed))
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items() if k != "message"},
                  flush=True)
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "phase.csv", index=False)
    figure(table, out / "figures" / "phase_sgd.png",
           f"SGD limit ODE: final state after {args.steps} steps\nd={args.d}, L={args.L}, B={args.B}, sphere starts, "
           f"rate={args.rate:g} ({args.repeats} per cell)")
    print(f"{len(rows)} cells in {time.perf_counter() - start:.1f} s; {out / 'figures' / 'phase_sgd.png'}")


if __name__ == "__main__":
    main()
