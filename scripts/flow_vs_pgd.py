"""Flow vs PGD (docs/dynamics.md): the gradient flow and population PGD from the same starts, PGD's lr halved three
times; the largest overlap gap along the trajectory should shrink in proportion to lr (first order).

    python scripts/flow_vs_pgd.py [--d 400] [--lam 0.1] [--time 20] [--repeats 8] [--init sphere] [--full]

``--full`` runs the d-dimensional PGD (small d) instead of the reduced one."""
from __future__ import annotations

import argparse
import math
import time

import numpy as np


def compare(*, d: int, lam: float, time_: float, repeats: int, init: str, lrs, L: int = 10, gamma2: float = 0.5,
            seed: int = 0, full: bool = False, n_log: int = 20):
    """Rows ``(lr, steps, max gap, max gap / lr, seconds)`` for PGD at each ``lr`` vs the flow (same starts)."""
    import torch

    from slr.core.reduced import ReducedTask
    from slr.core.task import Task
    from slr.training.algorithms import INITS, embed, lam_schedule, overlap_path, population_pgd
    from slr.training.flow import GradientFlow

    gamma = math.sqrt(gamma2)
    task = Task(d, L, gamma, 0.0, seed=seed) if full else ReducedTask(d, L, gamma)
    rtask = ReducedTask(d, L, gamma)
    rng = np.random.default_rng(seed)
    C0 = INITS[init](repeats, d, rng)
    schedule = lam_schedule("constant", lam, 0.0)
    rows = []
    ref = None
    for lr in lrs:
        steps = round(time_ / lr)
        every = steps // n_log
        flow = GradientFlow(rtask, C0, lr=lr, M=task.M, L=L, gamma=gamma, horizon=time_, rtol=1e-10,
                            atol=1e-14 / math.sqrt(d))
        f = overlap_path(flow, steps=steps, log_every=every, schedule=schedule)
        KV0 = embed(C0, task, np.random.default_rng(seed + 1)).numpy() if full else C0
        t0 = time.perf_counter()
        pgd = population_pgd(task, KV0, lr=lr, M=task.M, L=L, gamma=gamma, d=d)
        p = overlap_path(pgd, steps=steps, log_every=every, schedule=schedule)
        sec = time.perf_counter() - t0
        gap = float(np.abs(np.abs(p) - np.abs(f)).max())  # |kappa| etc.: the sign of a repeat is a symmetry
        rows.append((lr, steps, gap, gap / lr, sec))
        ref = f
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, default=400)
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--time", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--init", default="sphere")
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--full", action="store_true")
    a = ap.parse_args()
    lrs = [a.lr / 2**i for i in range(4)]
    rows = compare(d=a.d, lam=a.lam, time_=a.time, repeats=a.repeats, init=a.init, lrs=lrs, full=a.full)
    print(f"flow vs {'full' if a.full else 'reduced'} PGD: d={a.d}, lam={a.lam}, init={a.init}, flow time {a.time}, "
          f"{a.repeats} repeats")
    print("| lr | steps | max overlap gap | gap / lr | PGD s |")
    print("|---|---|---|---|---|")
    for lr, steps, gap, ratio, sec in rows:
        print(f"| {lr:.3g} | {steps} | {gap:.3e} | {ratio:.3g} | {sec:.1f} |")


if __name__ == "__main__":
    main()
