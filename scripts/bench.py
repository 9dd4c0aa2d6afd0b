#!/usr/bin/env python
"""Benchmarks of slr, reported as ratios measured in one run (this machine is noisy; ratios are what carry over).

    python scripts/bench.py            # everything, including the five paper experiments at full scale (~1 min)
    python scripts/bench.py --quick    # the micro-benchmarks only (~30 s)

Measures (single torch thread, as in every job):
  sgd_reduced_vs_full  time per online-SGD step, paper configuration (d=80, L=10, 30 repeats, batch 5):
                       full simulator (float32 tokens) over the exact reduced one (SPEC 6)       target >= 10
                       (the reduced step is the compiled kernel of slr/kernel.py; numpy_us: its numpy fallback)
  sgd_reduced_vs_full_300  the same with 300 repeats
  sgd_reduced_d        reduced SGD step at d=100000 over d=80                                    target <= 1.3
  pgd_reduced_vs_full  population PGD step at d=400, 30 repeats: full R^d over 4 coordinates
  zeta_quadrature      zeta(t, g) by quadrature (as the paper's code) over the Owen's-T closed form
  modules_looped_vs_stacked  time per online Adam step of train.repeats transformers (predictor=transformer's
                       defaults, d_model=16): a loop over the repeats over one vmap over their stacked parameters,
                       at experiment=transformer's batch (32) and a large one (256), d=20 L=5 and d=80 L=10,
                       8 and 30 repeats
  paper                the five presets of SPEC 5 through scripts/reproduce_paper.py (2 jobs): wall time,
                       per-experiment seconds and steps per second                               target <= 60 s
Results are printed and written to outputs/bench/<date>_<time>.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slr import theory  # noqa: E402
from slr.config import outputs_dir  # noqa: E402
from slr.predictors import ERF  # noqa: E402
from slr.reduced import ReducedTask  # noqa: E402
from slr.seeding import numpy_generator, torch_generator  # noqa: E402
from slr.task import Task  # noqa: E402
from slr.train import FullSGD, PopulationPGD, ReducedSGD, embed, init_sphere  # noqa: E402

GAMMA = 0.5**0.5


def per_step(algo, lam: float, steps: int, repeats: int = 3) -> float:
    """Best of ``repeats`` timings of ``steps`` steps, in seconds per step (after a warm-up)."""
    for _ in range(min(steps, 300)):
        algo.step(lam)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            algo.step(lam)
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def sgd_pair(d: int, R: int = 30, B: int = 5, L: int = 10, full: bool = True, kernel: bool | None = None):
    task = Task(d, L, GAMMA, 0.1, seed=0)
    rng = numpy_generator(0, "init")
    C0 = init_sphere(R, d, rng)
    reduced = ReducedSGD(task, ERF, C0, lr=1e-3, batch_size=B, projected=True, generator=torch_generator(0, "train"),
                         kernel=kernel)
    if not full:
        return reduced, None
    full_sgd = FullSGD(task, ERF, embed(C0, task, rng), lr=1e-3, batch_size=B, projected=True,
                       generator=torch_generator(0, "train"), dtype=torch.float32)
    return reduced, full_sgd


def bench_sgd(steps: int) -> dict:
    reduced, full = sgd_pair(80)
    t_red, t_full = per_step(reduced, 2.0, steps), per_step(full, 2.0, max(steps // 5, 200))
    t_numpy = per_step(sgd_pair(80, full=False, kernel=False)[0], 2.0, steps)
    big, _ = sgd_pair(100_000, full=False)
    t_big = per_step(big, 2.0, steps)
    reduced300, full300 = sgd_pair(80, R=300)
    t_red300, t_full300 = per_step(reduced300, 2.0, max(steps // 5, 200)), per_step(full300, 2.0, max(steps // 30, 50))
    return {
        "sgd_reduced_vs_full": dict(full_us=t_full * 1e6, reduced_us=t_red * 1e6, ratio=t_full / t_red, target=">= 10",
                                    numpy_us=t_numpy * 1e6, numpy_ratio=t_full / t_numpy),
        "sgd_reduced_vs_full_300": dict(full_us=t_full300 * 1e6, reduced_us=t_red300 * 1e6, ratio=t_full300 / t_red300),
        "sgd_reduced_d": dict(d80_us=t_red * 1e6, d100000_us=t_big * 1e6, ratio=t_big / t_red, target="<= 1.3"),
    }


def bench_pgd(steps: int) -> dict:
    task = Task(400, 10, GAMMA, seed=0)
    rng = numpy_generator(0, "init")
    C0 = init_sphere(30, 400, rng)
    kw = dict(lr=4e-3, M=task.M, L=10, gamma=GAMMA)
    reduced = PopulationPGD(ReducedTask.of(task, 4), C0, **kw)
    full = PopulationPGD(task, embed(C0, task, rng).numpy(), **kw)
    t_red, t_full = per_step(reduced, 0.1, steps), per_step(full, 0.1, steps)
    return {"pgd_reduced_vs_full": dict(full_us=t_full * 1e6, reduced_us=t_red * 1e6, ratio=t_full / t_red)}


def bench_zeta() -> dict:
    from scipy.integrate import quad
    from scipy.special import erf

    t, g = np.linspace(-3, 3, 50), 0.7

    def by_quadrature():
        return [quad(lambda z: erf(ti + g * z) ** 2 * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), -np.inf, np.inf)[0]
                for ti in t]

    start = time.perf_counter()
    q = by_quadrature()
    t_quad = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(100):
        z = theory.zeta(t, g)
    t_closed = (time.perf_counter() - start) / 100
    return {"zeta_quadrature": dict(quad_ms=t_quad * 1e3, closed_ms=t_closed * 1e3, ratio=t_quad / t_closed,
                                    max_abs_diff=float(np.max(np.abs(np.asarray(q) - z))))}


def bench_paper() -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_paper", ROOT / "scripts" / "reproduce_paper.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = Path(outputs_dir()) / "bench" / ("paper_" + dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f"))
    start = time.perf_counter()
    mod.main(["--out", str(out)])
    wall = time.perf_counter() - start
    table = mod.collect(out)
    return {"paper": dict(wall_s=wall, target="<= 60 s", per_experiment=table[
        ["experiment", "status", "steps", "seconds", "steps_per_s"]].to_dict("records"))}


def bench_modules(steps: int) -> dict:
    """Stacked (vmap over the repeats' stacked parameters) vs looped repeats of the transformer, online Adam."""
    from slr.models import Transformer
    from slr.train_modules import OnlineTraining, build

    out = {}
    for d, L, R, B in [(20, 5, 8, 256), (20, 5, 8, 32), (20, 5, 30, 32), (80, 10, 8, 256), (80, 10, 8, 32)]:
        task = Task(d, L, GAMMA, 0.1, seed=0)
        times = {}
        for use_vmap in (True, False):
            modules = build(task, lambda: Transformer(d, L, d_model=16), R, np.arange(R))
            algo = OnlineTraining(task, modules, batch_size=B, optimizer="adam", lr=0.01, weight_decay=0.0,
                                  steps=10**9, warmup_steps=0, lr_decay="constant",
                                  generator=torch_generator(0, "train"), dtype=torch.float32, name="transformer",
                                  use_vmap=use_vmap)
            n = max(20, steps * 8 // (R * B))
            times[use_vmap] = per_step(algo, None, n, repeats=2)
        out[f"modules_looped_vs_stacked_d{d}_R{R}_B{B}"] = dict(
            stacked_ms=times[True] * 1e3, looped_ms=times[False] * 1e3, ratio=times[False] / times[True])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the full-scale paper experiments")
    ap.add_argument("--steps", type=int, default=3000, help="timed steps per micro-benchmark")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    for name, fn in [("sgd", lambda: bench_sgd(args.steps)), ("pgd", lambda: bench_pgd(args.steps)),
                     ("zeta", bench_zeta), ("modules", lambda: bench_modules(args.steps))] + (
                         [] if args.quick else [("paper", bench_paper)]):
        print(f"[bench] {name} ...", flush=True)
        results.update(fn())
    print()
    for key, r in results.items():
        shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items() if k != "per_experiment"}
        print(f"{key:<22}", "  ".join(f"{k}={v}" for k, v in shown.items()))
        for row in r.get("per_experiment", []):
            print(f"{'':<24}{row['experiment']:<32}{row['status']:<8}{row['steps']!s:>8} steps "
                  f"{row['seconds'] or float('nan'):7.1f} s  {row['steps_per_s'] or float('nan'):8.0f} steps/s")
    path = Path(outputs_dir()) / "bench" / (dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S") + ".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(machine_threads=torch.get_num_threads(), results=results), indent=2, default=str))
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
