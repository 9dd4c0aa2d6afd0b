"""The Hydra app ``slr-landscape``: the critical points of the population risk at a run's ``lam``, their Hessian
index, and the basins of PGD end points (``docs/landscape.md``). The mathematics is :mod:`slr.landscape`."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from slr.app.build import build_pgd, job_task
from slr.app.config import check_landscape, figure_formats, initial_lam, learning_rate
from slr.app.schema import CONF_DIR
from slr.app.job import compose_errors_refused, job_exits, run_in_folder, show_progress
from slr.core.seeding import numpy_generator
from slr.io import write_json
from slr.landscape.critical import (LABELS, CriticalPoints, Landscape, assign, basin_table, critical_points,
                                    from_overlaps, geodesic_path, overlaps, spec8_seeds, sphere_seeds,
                                    swapped_line_seed)
from slr.theory import OVERLAPS, signal_norm

log = logging.getLogger("slr")


def pgd_end_points(cfg: DictConfig, repeats: int, schedule) -> np.ndarray:
    """End points (R, 2, 4) of population PGD with the run's train settings (``schedule`` of ``lam``, lr, dtype, noise,
    simulator) from ``repeats`` starts of ``train.init``: the same starts, steps and loop (:func:`slr.training.algorithms.train`,
    compiled kernel included) as ``slr train=pgd train.repeats=R``."""
    from slr.training.algorithms import train

    task, C0, init_rng = job_task(cfg, repeats)
    algo = build_pgd(cfg, task, C0, init_rng)
    train(algo, steps=cfg.train.steps, log_every=max(cfg.train.steps, 1), schedule=schedule, log=lambda *a: [],
          progress=show_progress())
    o = algo.overlaps()
    return from_overlaps(np.stack([o[k] for k in OVERLAPS], -1))


def flow_end_points(cfg: DictConfig, repeats: int, schedule) -> tuple[np.ndarray, dict]:
    """End points (R, 2, 4) of the gradient flow (docs/dynamics.md) from the same ``repeats`` starts as
    :func:`pgd_end_points`: PGD's ``lam`` schedule over its flow time ``lr x steps``, then ``lam`` held at its end value
    until every repeat's Riemannian gradient norm is at most ``landscape.flow_grad_tol`` (or ``landscape.flow_time``
    more has passed). Also returns the integration's record."""
    import math

    from slr.core.reduced import ReducedTask
    from slr.training.algorithms import INITS, train
    from slr.training.flow import GradientFlow, default_atol

    tc, lc, d = cfg.train, cfg.landscape, cfg.task.d
    task = ReducedTask(d, cfg.task.L, cfg.task.gamma, cfg.task.eps, cfg.task.signal)
    C0 = INITS[tc.init](repeats, d, numpy_generator(cfg.seed, "init"))  # the starts of job_task()
    lr = learning_rate(cfg, d)
    total = tc.steps + math.ceil(lc.flow_time / lr)
    flow = GradientFlow(task, C0, lr=lr, M=task.M, L=task.L, gamma=task.gamma, horizon=lr * total,
                        atol=default_atol(d), grad_tol=lc.flow_grad_tol)
    train(flow, steps=total, log_every=total, schedule=lambda t: schedule(min(t, tc.steps)), log=lambda *a: [])
    return from_overlaps(flow.o), flow.details()


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """One ``slr-landscape`` job into ``out_dir`` (default: Hydra's output dir, else the working directory): the
    critical points at the run's ``lam`` (the end of ``train.lam_schedule``), ``critical_points.csv``, basins of PGD
    end points when ``landscape.basin_repeats > 0`` (``basins.csv``), ``summary.json`` and ``figures/landscape.png``."""
    return run_in_folder(cfg, out_dir, check_landscape, _run, "slr-landscape")


def _run(cfg: DictConfig, out: Path, summary: dict, t_start: float) -> None:
    import pandas as pd

    from slr.training.algorithms import lam_schedule

    tc, lc = cfg.train, cfg.landscape
    d, L, gamma, signal = cfg.task.d, cfg.task.L, cfg.task.gamma, cfg.task.signal
    M = signal_norm(d, signal)
    lam0 = initial_lam(cfg, d, L, gamma, signal)
    schedule = lam_schedule(tc.lam_schedule, lam0, tc.schedule_rate)
    lam = schedule(tc.steps)  # where PGD ends
    ls = Landscape(lam, d=d, L=L, gamma=gamma, M=M)
    summary["task"] = dict(d=d, L=L, gamma=gamma, gamma2=gamma**2, M=M)
    summary["lam"], summary["lam_auto"], summary["landscape_lam"] = lam0, cfg.predictor.lam == "auto", lam
    log.info("%s | d=%d, L=%d, gamma^2=%g: critical points at lam=%.6g%s -> %s", cfg.name, d, L, gamma**2, lam,
             "" if tc.lam_schedule == "constant" else f" (end of the {tc.lam_schedule} schedule from {lam0:.4g})", out)

    seeds = {"sphere": sphere_seeds(lc.starts, numpy_generator(cfg.seed, "landscape")), "spec8": spec8_seeds(),
             "swapped_line": swapped_line_seed(ls)}
    repeats = lc.basin_repeats or lc.pgd_starts
    t0 = time.perf_counter()
    ends = np.zeros((0, 2, 4))
    flow_record = None
    if repeats and lc.basin_dynamics == "flow":
        ends, flow_record = flow_end_points(cfg, repeats, schedule)
        seeds["flow"] = ends
    elif repeats:
        ends = seeds["pgd"] = pgd_end_points(cfg, repeats, schedule)
    t_pgd = time.perf_counter()
    points = critical_points(ls, seeds, grad_tol=lc.grad_tol, max_iter=lc.newton_iter, dedup_tol=lc.dedup_tol,
                             zero_tol=lc.zero_tol)
    table = points.table
    t_newton = time.perf_counter()
    n_seeds = sum(len(x) for x in seeds.values())
    summary["newton"] = dict(starts={k: len(x) for k, x in seeds.items()}, converged=int(table["seeds"].sum()),
                             critical_points=len(table), minima=int((table["index"] == 0).sum()))
    summary["pgd"] = dict(repeats=repeats, steps=tc.steps, lr=learning_rate(cfg, d), lam_schedule=tc.lam_schedule,
                          dtype=tc.dtype, noise=tc.noise, simulator=tc.simulator, init=tc.init,
                          dynamics=lc.basin_dynamics)
    if flow_record is not None:
        summary["flow"] = {k: v for k, v in flow_record.items() if not isinstance(v, list)}
    if lc.basin_repeats:
        rows, dist = assign(points, ends, lc.assign_tol)
        count, frac, se, unassigned = basin_table(rows, len(table))
        table["basin_count"], table["basin_fraction"], table["basin_se"] = count, frac, se
        o = overlaps(ends)
        g = ls.riemannian_gradient(ends)
        g_end = np.sqrt((g * g).sum(-1))  # how far from converged each run is

        basins = pd.DataFrame(dict(repeat=np.arange(len(ends)), **{k: o[:, i] for i, k in enumerate(OVERLAPS)},
                                   excess=ls.excess(ends), critical_point=rows,
                                   label=[table["label"].iloc[r] if r >= 0 else "unassigned" for r in rows],
                                   distance=dist, grad_norm=g_end))
        basins.to_csv(out / "basins.csv", index=False)
        summary["basins"] = dict(repeats=len(ends), unassigned=unassigned, assign_tol=lc.assign_tol,
                                 max_distance=float(dist[rows >= 0].max()) if (rows >= 0).any() else None,
                                 median_grad_norm=float(np.median(g_end)),
                                 by_label={lbl: float(frac[table["label"] == lbl].sum()) for lbl in LABELS})
        if unassigned:
            log.warning("%d of %d PGD end points are farther than landscape.assign_tol=%g from every critical point "
                        "(median gradient norm of the end points %.2g: not converged; more train.steps, or a larger "
                        "tolerance to take the nearest)", unassigned, len(ends), lc.assign_tol, np.median(g_end))
    table.insert(0, "lam", lam)
    table.to_csv(out / "critical_points.csv", index=False)
    path = _oracle_to_swapped(ls, points, lc.path_points)
    if path is not None:
        t, risk = path
        summary["path"] = dict(start="oracle", end="swapped", max_excess=float(risk.max()),
                               barrier=float(risk.max() - max(risk[0], risk[-1])))
    summary["excess"] = _excess_entries(table, lam)
    t_end = time.perf_counter()
    formats = figure_formats(cfg)
    if formats:
        from slr.plots.landscape import landscape_figure
        from slr.plots.dynamics import save

        fig, _ = landscape_figure(table, path, title=f"{cfg.name}: d={d}, L={L}, γ²={gamma**2:g}, λ={lam:.4g}")
        save(fig, out / "figures" / "landscape", formats)
    summary["status"] = "ok"
    summary["timings"] = dict(pgd_s=t_pgd - t0, newton_s=t_newton - t_pgd, figures_s=time.perf_counter() - t_end,
                              total_s=time.perf_counter() - t_start)
    write_json(out / "summary.json", summary)
    log.info("\n%s\n%d critical points from %d Newton starts (%d converged); wall time %.1f s (PGD %.1f s, Newton "
             "%.1f s); outputs in %s", format_table(table), len(table), n_seeds, summary["newton"]["converged"],
             summary["timings"]["total_s"], t_pgd - t0, t_newton - t_pgd, out)


def _oracle_to_swapped(ls: Landscape, points: CriticalPoints, n: int):
    """Risk along the geodesic from the oracle to the lowest swapped point, if both were found."""
    labels = points.table["label"].to_numpy()
    if not ((labels == "oracle").any() and (labels == "swapped").any()):
        return None
    i_o, i_s = np.flatnonzero(labels == "oracle")[0], np.flatnonzero(labels == "swapped")[0]
    return geodesic_path(ls, points.KV[i_o], points.KV[i_s], n)


def _excess_entries(table, lam: float) -> dict:
    """summary.json ``excess``: the closed-form excess of the oracle, of the lowest swapped point and of the lowest
    minimum (readable by slr-report and compare_bayes)."""
    out = {}
    for key, sel in (("oracle", table["label"] == "oracle"), ("swapped", table["label"] == "swapped"),
                     ("lowest_minimum", table["index"] == 0)):
        if sel.any():
            r = table[sel].iloc[0]
            out[key] = dict(name=f"{key.replace('_', ' ')} ({r['label']})" if key == "lowest_minimum" else key,
                            closed_form=float(r["excess"]), lam=lam, index=int(r["index"]))
    return out


def format_table(table) -> str:
    """The critical points as printed in the log (and in docs/landscape.md, "Running slr-landscape")."""
    cols = ["label", "kind", "kappa", "nu", "theta", "eta", "rho", "excess", "grad_norm", "index", "zero_modes",
            "min_eigenvalue"] + [c for c in ("basin_fraction", "basin_se") if c in table]
    return table[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}")


def main() -> None:
    """The ``slr-landscape`` command: ``--version`` prints the version; anything else goes to the Hydra app."""
    if "--version" in sys.argv[1:]:
        from slr import __version__

        print(f"slr-landscape {__version__}")
        return
    with compose_errors_refused("slr-landscape"):
        app()


@hydra.main(config_path=str(CONF_DIR), config_name="slr_landscape", version_base="1.3")
def app(cfg: DictConfig) -> None:
    """``slr-landscape``: one job; it ends as an ``slr`` job does (:func:`slr.app.run.job_exits`): a bad config is refused
    with one paragraph and exit code 2, a failure exits with code 1 after :func:`run` recorded it."""
    with job_exits(cfg, "slr-landscape"):
        run(cfg)
