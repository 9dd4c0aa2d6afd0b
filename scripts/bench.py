#!/usr/bin/env python
"""Benchmarks of slr, reported as ratios measured in one run (this machine is noisy; ratios are what carry over).

    python scripts/bench.py                        # everything, the five paper experiments included (~2 min)
    python scripts/bench.py --quick                # the micro-benchmarks and the short job only (~1 min)
    python scripts/bench.py --baseline DIR         # also measure the slr checkout DIR (e.g. a git worktree of an
                                                   # older commit) the same way, interleaved: before/after ratios

Measures (single torch thread, as in every job):
  sgd_reduced_vs_full  time per online-SGD step, paper configuration (d=80, L=10, 30 repeats, batch 5):
                       full simulator (float32 tokens) over the exact reduced one (docs/reduction.md) target >= 10
                       (reduced: the compiled kernel, many steps per call; numpy_us: its numpy fallback)
  sgd_reduced_vs_full_300  the same with 300 repeats
  sgd_reduced_d        reduced SGD step at d=100000 over d=80                                    target <= 1.3
  pgd_reduced_vs_full  population PGD step at d=400, 30 repeats: full R^d over 4 coordinates (compiled)
  pgd_compiled_vs_numpy  PGD step at d=400, 30 repeats, 4 coordinates: numpy step over the compiled kernel
  zeta_quadrature      zeta(t, g) by quadrature (as the paper's code) over the Owen's-T closed form
  steps                steps as the training loop runs them (slr.training.algorithms.train, logging off), in this checkout and,
                       with --baseline, in DIR: PGD at the GD presets' settings (target >= 5x DIR's steps/s) and
                       reduced SGD at the SGD preset's and at the short job's (target >= 2x)
  job                  the short job `python -m slr task.d=1000 train.simulator=reduced train.steps=20000
                       train.lr=1e-3 predictor.lam=0.1 train.init=manifold`: process wall minus timings.train_s
                       (target <= 3 s; cold: the Bayes excess computed, warm: from the cache), and its training
                       with the default logging over training with train.log_every=20000 (target <= 2)
  startup              process wall of `slr --help`, of a refused config (`slr task.d=1`) and of `slr-report RUN`
  modules_looped_vs_stacked  time per online Adam step of train.repeats transformers (predictor=transformer's
                       defaults, d_model=16): a loop over the repeats over one vmap over their stacked parameters,
                       at experiment=transformer's batch (32) and a large one (256), d=20 L=5 and d=80 L=10,
                       8 and 30 repeats
  flow_sphere_1e9      the gradient flow (train=flow) of 30 repeats from the sphere at d=1e9 to convergence (every
                       Riemannian gradient norm below grad_tol): at lam=0.1 (grad_tol 1e-8) and at lam=auto
                       (grad_tol 1e-12); wall seconds, solver steps and evaluations                  target <= 5 s
  sgd_limit            experiment=paper_sgd_sphere_schedule's training (d=80, 30 repeats, batch 5, 200000 steps,
                       lam_t = 2/(1 + 1e-4 t), sphere starts; logging off) through the SGD-limit ODE
                       (train.simulator=ode) and through the exact reduced chain (compiled): seconds, ratio,
                       final median |kappa|, |nu|                                                 target >= 20
  paper                the paper's five presets (docs/training.md) through scripts/reproduce_paper.py (2 jobs): wall
  time,
                       per-experiment seconds and steps per second                               target <= 15 s
Results are printed and written to outputs/bench/<date>_<time>.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slr import theory  # noqa: E402
from slr.app.schema import outputs_dir  # noqa: E402
from slr.core.predictors import ERF  # noqa: E402
from slr.core.reduced import ReducedTask  # noqa: E402
from slr.core.seeding import numpy_generator, torch_generator  # noqa: E402
from slr.core.task import Task  # noqa: E402
from slr.training.algorithms import FullSGD, PopulationPGD, ReducedSGD, embed, init_sphere  # noqa: E402

GAMMA = 0.5**0.5
JOB = ["task.d=1000", "train.simulator=reduced", "train.steps=20000", "train.lr=1e-3", "predictor.lam=0.1",
       "train.init=manifold"]


def per_step(algo, lam: float, steps: int, repeats: int = 3) -> float:
    """Best of ``repeats`` timings of ``steps`` steps, in seconds per step (after a warm-up); a compiled algorithm
    advances in calls of 500 steps, as the training loop does between logged steps."""
    def run(n):
        if algo.kernel == "compiled":
            for start in range(0, n, 500):
                algo.advance(start, np.full(min(500, n - start), lam))
        else:
            for _ in range(n):
                algo.step(lam)

    run(min(steps, 300))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(steps)
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
    t_numpy = per_step(sgd_pair(80, full=False, kernel=False)[0], 2.0, max(steps // 10, 100))
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
    numpy_step = PopulationPGD(ReducedTask.of(task, 4), C0, **kw, kernel=False)
    full = PopulationPGD(task, embed(C0, task, rng).numpy(), **kw)
    t_red, t_full = per_step(reduced, 0.1, 10 * steps), per_step(full, 0.1, steps)
    t_numpy = per_step(numpy_step, 0.1, max(steps // 3, 300))
    return {"pgd_reduced_vs_full": dict(full_us=t_full * 1e6, reduced_us=t_red * 1e6, ratio=t_full / t_red),
            "pgd_compiled_vs_numpy": dict(compiled_us=t_red * 1e6, numpy_us=t_numpy * 1e6, ratio=t_numpy / t_red)}


def bench_flow() -> dict:
    import math

    from slr.theory import best_oracle_lam
    from slr.training.algorithms import lam_schedule, train
    from slr.training.flow import GradientFlow, default_atol

    d, L = 10**9, 10
    task = ReducedTask(d, L, GAMMA)
    out = {}
    for name, lam, tol in (("lam_0.1", 0.1, 1e-8), ("lam_auto", best_oracle_lam(d=d, L=L, gamma=GAMMA)[0], 1e-12)):
        C0 = init_sphere(30, d, numpy_generator(0, "init"))
        start = time.perf_counter()
        flow = GradientFlow(task, C0, lr=1000.0, M=task.M, L=L, gamma=GAMMA, horizon=1e11,
                            atol=default_atol(d), grad_tol=tol)
        train(flow, steps=10**8, log_every=10**8, schedule=lam_schedule("constant", lam, 0.0), log=lambda *a: [])
        info = flow.details()
        out[name] = dict(seconds=time.perf_counter() - start, converged=info["converged"],
                         flow_time=max(info["converged_at_time"]), solver_steps=info["solver_steps"],
                         rhs=info["evaluations"]["rhs"], jacobians=info["evaluations"]["jacobian"])
    return {"flow_sphere_1e9": out}


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


# ----- the same measurement in this checkout and in a baseline, each in its own process ----------------------------
STEPS_SNIPPET = r'''
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
import slr
from slr.core.predictors import ERF
from slr.core.reduced import ReducedTask
from slr.core.seeding import numpy_generator, torch_generator
from slr.core.task import Task
from slr.training.algorithms import PopulationPGD, ReducedSGD, init_manifold, init_sphere, train
G = 0.5 ** 0.5


def loop(algo, steps, log_every, lam):
    """Seconds per step of slr.training.algorithms.train with logging off (what a job's training costs between logged steps)."""
    train(algo, steps=min(steps, 500), log_every=log_every, schedule=lambda t: lam, log=lambda *a: [])  # warm-up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        train(algo, steps=steps, log_every=log_every, schedule=lambda t: lam, log=lambda *a: [])
        best = min(best, (time.perf_counter() - start) / steps)
    return best


scale = float(sys.argv[1])
task = Task(400, 10, G, seed=0)
reduced = ReducedTask.of(task, 4)
pgd = PopulationPGD(reduced, init_sphere(30, 400, numpy_generator(0, "init")), lr=4e-3, M=task.M,
                    L=10, gamma=G)
out = dict(slr=slr.__file__, pgd_us=loop(pgd, int(3000 * scale), 200, 0.1) * 1e6)
for name, d, R, B, lr, lam, init, every in [("sgd_preset_us", 80, 30, 5, 1e-3, 2.0, init_sphere, 500),
                                            ("sgd_job_us", 1000, 8, 32, 1e-3, 0.1, init_manifold, 50)]:
    task = Task(d, 10, G, 0.1, seed=0)
    algo = ReducedSGD(task, ERF, init(R, d, numpy_generator(0, "init")), lr=lr, batch_size=B, projected=True,
                      generator=torch_generator(0, "train"))
    out[name] = loop(algo, int(1000 * scale), every, lam) * 1e6
print(json.dumps(out))
'''


def _env(root: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(root), CI="true", PYTHONUNBUFFERED="1")


def steps_in(root: Path, scale: float) -> dict:
    """Microseconds per step of PGD and of the reduced SGD (two configurations) as ``root``'s training loop runs them."""
    proc = subprocess.run([sys.executable, "-c", STEPS_SNIPPET, str(scale)], cwd=root, env=_env(root),
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wall(cmd: list[str], root: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True)
    return time.perf_counter() - start, proc


def job_in(root: Path, out: Path, *extra: str) -> dict:
    """The short job in ``root``: process wall, its timings, and the non-training part."""
    folder = out / ("job_" + "_".join(e.replace("=", "-") for e in extra) if extra else "job")
    seconds, proc = wall([sys.executable, "-m", "slr", *JOB, *extra, f"hydra.run.dir={folder}"], root)
    if proc.returncode != 0:
        raise RuntimeError(f"the short job failed in {root}:\n{proc.stderr[-2000:]}")
    t = json.loads((folder / "summary.json").read_text())["timings"]
    return dict(wall_s=seconds, train_s=t["train_s"], eval_s=t["eval_s"], figures_s=t["figures_s"],
                not_training_s=seconds - t["train_s"], bayes_is_cached=t.get("bayes_is_cached"), folder=str(folder))


def forget_bayes(root: Path) -> None:
    """Remove the cached Bayes excess of the short job's task (if this checkout caches it): the next job computes it."""
    code = ("from slr.core import bayes_cache\nfrom slr.core.task import Task\n"
            "p = bayes_cache.path_of(bayes_cache.key_of(Task(1000, 10, 0.5 ** 0.5), 100000))\np.unlink(missing_ok=True)")
    if (root / "slr" / "bayes_cache.py").exists():
        subprocess.run([sys.executable, "-c", code], cwd=root, env=_env(root), check=True)


def bench_job(root: Path, out: Path, rounds: int) -> dict:
    cold, warm, quiet = [], [], []
    for _ in range(rounds):
        forget_bayes(root)
        cold.append(job_in(root, out))
        warm.append(job_in(root, out))
        quiet.append(job_in(root, out, "train.log_every=20000"))
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    return dict(cold_wall_s=med(cold, "wall_s"), cold_not_training_s=med(cold, "not_training_s"),
                warm_wall_s=med(warm, "wall_s"), warm_not_training_s=med(warm, "not_training_s"),
                eval_s=med(warm, "eval_s"), figures_s=med(warm, "figures_s"), train_s=med(warm, "train_s"),
                train_s_log_off=med(quiet, "train_s"), logging_ratio=med(warm, "train_s") / med(quiet, "train_s"),
                target="not_training_s <= 3, logging_ratio <= 2", last_run=warm[-1]["folder"])


def bench_startup(root: Path, run_folder: str, rounds: int) -> dict:
    cmds = {"help_s": ["-m", "slr", "--help"], "config_error_s": ["-m", "slr", "task.d=1"],
            "report_s": ["-m", "slr.results.report", run_folder]}
    times = {k: [] for k in cmds}
    for _ in range(rounds):
        for k, args in cmds.items():
            times[k].append(wall([sys.executable, *args], root)[0])
    return {k: statistics.median(v) for k, v in times.items()}


def bench_paper(root: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix="slr-bench-paper-"))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(root / "scripts" / "reproduce_paper.py"), "--out", str(out / "sweep")],
                          cwd=root, env=_env(root), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"reproduce_paper failed in {root}:\n{proc.stderr[-2000:]}")
    import pandas as pd

    table = pd.read_csv(out / "sweep" / "paper.csv")
    shutil.rmtree(out, ignore_errors=True)
    return dict(wall_s=seconds, per_experiment=table[["experiment", "status", "steps", "seconds", "steps_per_s"]]
                .to_dict("records"))


def bench_modules(steps: int) -> dict:
    """Stacked (vmap over the repeats' stacked parameters) vs looped repeats of the transformer, online Adam."""
    from slr.models.transformer import Transformer
    from slr.training.modules import OnlineTraining, build

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


def bench_sgd_limit() -> dict:
    from slr.core.predictors import ERF
    from slr.core.task import Task
    from slr.training.algorithms import ReducedSGD, lam_schedule, train
    from slr.training.sgd_limit import SGDLimit

    d, L, B, lr, steps, R = 80, 10, 5, 1e-3, 200_000, 30
    task = Task(d, L, GAMMA, 0.1, None, seed=0)
    schedule = lam_schedule("inverse", 2.0, 1e-4)
    out = {}
    for name in ("chain", "ode"):
        C0 = init_sphere(R, d, numpy_generator(0, "init"))
        algo = (ReducedSGD(task, ERF, C0, lr=lr, batch_size=B, projected=True, generator=torch.Generator().manual_seed(0))
                if name == "chain" else SGDLimit(task, C0, lr=lr, batch_size=B, schedule=schedule, horizon=steps))
        start = time.perf_counter()
        train(algo, steps=steps, log_every=500, schedule=schedule, log=lambda *a: [])
        o = algo.overlaps()
        out[f"{name}_s"] = time.perf_counter() - start
        out[f"{name}_kappa"] = float(np.median(np.abs(o["kappa"])))
        out[f"{name}_nu"] = float(np.median(np.abs(o["nu"])))
    out["ratio"] = out["chain_s"] / out["ode_s"]
    return {"sgd_limit": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the full-scale paper experiments")
    ap.add_argument("--steps", type=int, default=3000, help="timed steps per micro-benchmark")
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of the process-level measurements (medians)")
    ap.add_argument("--baseline", type=Path, help="another slr checkout to measure the same way (before/after)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results: dict = {}
    roots = {"after": ROOT, **({"before": args.baseline.resolve()} if args.baseline else {})}
    work = Path(tempfile.mkdtemp(prefix="slr-bench-"))
    results["load_before"] = os.getloadavg()
    print(f"[bench] load average: {results['load_before']}", flush=True)
    for name, fn in [("sgd", lambda: bench_sgd(args.steps)), ("pgd", lambda: bench_pgd(args.steps)),
                     ("zeta", bench_zeta), ("flow", bench_flow), ("sgd_limit", bench_sgd_limit), ("modules", lambda: bench_modules(args.steps))]:
        print(f"[bench] {name} ...", flush=True)
        results.update(fn())
    print("[bench] steps (training loop, logging off) ...", flush=True)
    rounds = {k: [] for k in roots}
    for _ in range(args.rounds):  # interleaved, so that both see the same load
        for k, root in roots.items():
            rounds[k].append(steps_in(root, args.steps / 3000))
    results["steps"] = {k: {m: statistics.median(r[m] for r in v) for m in ("pgd_us", "sgd_preset_us", "sgd_job_us")}
                        for k, v in rounds.items()}
    print("[bench] the short job ...", flush=True)
    results["job"] = {k: bench_job(root, work / k, args.rounds) for k, root in roots.items()}
    print("[bench] start-up ...", flush=True)
    results["startup"] = {k: bench_startup(root, results["job"][k]["last_run"], args.rounds)
                          for k, root in roots.items()}
    if not args.quick:
        print("[bench] the five paper experiments ...", flush=True)
        results["paper"] = {k: bench_paper(root) for k, root in roots.items()}
    results["load_after"] = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)
    report(results)
    path = Path(outputs_dir()) / "bench" / (dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S") + ".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(machine_threads=torch.get_num_threads(), roots={k: str(v) for k, v in roots.items()},
                                    results=results), indent=2, default=str))
    print(f"\nwritten to {path}")
    return 0


def report(results: dict) -> None:
    def fmt(r: dict) -> str:
        return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                         if k not in ("per_experiment", "last_run"))

    print()
    for key in ("sgd_reduced_vs_full", "sgd_reduced_vs_full_300", "sgd_reduced_d", "pgd_reduced_vs_full",
                "pgd_compiled_vs_numpy", "zeta_quadrature", "sgd_limit", *sorted(k for k in results if k.startswith("modules_"))):
        print(f"{key:<24}", fmt(results[key]))
    for k, r in results.get("flow_sphere_1e9", {}).items():
        print(f"{'flow_sphere_1e9 ' + k:<24}", fmt(r))
    for section in ("steps", "job", "startup", "paper"):
        for k, r in results.get(section, {}).items():
            print(f"{section + ' ' + k:<24}", fmt(r))
            for row in r.get("per_experiment", []):
                print(f"{'':<26}{row['experiment']:<32}{row['status']:<8}{row['steps']!s:>8} steps "
                      f"{row['seconds'] or float('nan'):7.1f} s  {row['steps_per_s'] or float('nan'):8.0f} steps/s")
    if "before" in results["steps"]:
        s, j, p = results["steps"], results["job"], results.get("paper", {})
        print("\ntargets (before -> after, as measured above):")
        print(f"  1. five presets, 2 workers: wall {p['before']['wall_s']:.1f} s -> {p['after']['wall_s']:.1f} s "
              "(target <= 15 s)" if p else "  1. five presets: skipped (--quick)")
        print(f"  2. short job, wall - train_s: {j['before']['warm_not_training_s']:.2f} s -> "
              f"{j['after']['warm_not_training_s']:.2f} s warm, {j['after']['cold_not_training_s']:.2f} s cold "
              f"(target <= 3 s); logging ratio {j['before']['logging_ratio']:.2f} -> {j['after']['logging_ratio']:.2f} "
              "(target <= 2)")
        print(f"  3. PGD steps/s at 30 repeats: x{s['before']['pgd_us'] / s['after']['pgd_us']:.1f} (target >= 5)")
        print(f"  4. reduced SGD steps/s: x{s['before']['sgd_preset_us'] / s['after']['sgd_preset_us']:.2f} at the SGD "
              f"preset's settings, x{s['before']['sgd_job_us'] / s['after']['sgd_job_us']:.2f} at the short job's "
              "(target >= 2)")
    print(f"load average (1, 5, 15 min) at the start: {results.get('load_before')}, at the end: {results.get('load_after')}")


if __name__ == "__main__":
    sys.exit(main())
