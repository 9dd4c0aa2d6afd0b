"""The Hydra app ``slr``: ``@hydra.main`` is a thin shell around :func:`run`, which tests call directly.

``run(cfg)``: validate, build the task and the algorithm, train with logging to ``metrics.csv``, evaluate the
trained predictor and every baseline on the same test samples, write ``summary.json`` and ``figures/``.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from slr.app.build import BUILDERS, build_module, job_task
from slr.app.config import CONF_DIR, check, figure_formats, initial_lam, is_module, learning_rate
from slr.app.final import evaluate_final
from slr.app.job import _hydra_output_dir, finished_before, job_exits, run_in_folder, show_progress
from slr.io import METRIC_COLUMNS, MetricsWriter, write_json
from slr.results.tables import _lam_text, alignment_line, attention_line, comparison_table

log = logging.getLogger("slr")


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """Run one job into ``out_dir`` (default: Hydra's output dir, else the working directory); return the summary."""
    return run_in_folder(cfg, out_dir, check, _run, "run")


def _run(cfg: DictConfig, out: Path, summary: dict, t_start: float) -> None:
    from slr import theory
    from slr.core.predictors import ERF
    from slr.training.algorithms import OVERLAPS, lam_schedule, train

    tc = cfg.train
    task, C0, init_rng = job_task(cfg, tc.repeats)
    summary["task"] = dict(d=task.d, L=task.L, gamma=task.gamma, gamma2=task.gamma**2, eps=task.eps, M=task.M)
    if is_module(cfg):  # a torch module has no lam: predictor.lam and train.lam_schedule do not apply
        from slr.training.modules import ModuleStepLogger as Logger

        algo = build_module(cfg, task, C0, init_rng)
        lam0, schedule = None, (lambda t: None)
        summary["lam"], summary["lam_auto"] = None, False
    else:
        from slr.training.logger import StepLogger as Logger
        algo = BUILDERS[tc.algo](cfg, task, C0, init_rng)
        lam0 = initial_lam(cfg, task.d, task.L, task.gamma, task.signal)
        summary["lam"], summary["lam_auto"] = lam0, cfg.predictor.lam == "auto"  # auto: theory.best_oracle_lam
        schedule = lam_schedule(tc.lam_schedule, lam0, tc.schedule_rate)
    log.info("%s | %s, %s, %s simulator, %d repeats x %d steps -> %s", cfg.name, task,
             cfg.predictor.name + ("" if is_module(cfg) else " attention"), tc.simulator, tc.repeats, tc.steps, out)
    columns = getattr(Logger, "COLUMNS", METRIC_COLUMNS)  # from slr.io
    with MetricsWriter(out / "metrics.csv", columns) as writer:
        hist = train(algo, steps=tc.steps, log_every=tc.log_every, schedule=schedule,
                     log=Logger(cfg, task, writer), progress=show_progress())
    alive = hist.diverged_at < 0
    lam = schedule(hist.steps_done)
    t_train = time.perf_counter()

    o = algo.overlaps()
    summary["trained"] = dict(predictor=f"{cfg.predictor.name} attention", algo=tc.algo, simulator=tc.simulator,
                              steps_done=hist.steps_done, lam_initial=schedule(0), lam_final=lam,
                              lr=learning_rate(cfg, task.d), repeats=tc.repeats, alive=int(alive.sum()),
                              diverged_at=hist.diverged_at, kernel=algo.kernel)
    if tc.simulator == "ode":  # the SGD limit: its solver's work and the fluctuation it carries
        summary["trained"].update(solver="BDF", evaluations=algo.evaluations, solver_steps=algo.solver_steps,
                                  delta=algo.model.delta, ode_correction=algo.model.correction,
                                  fluctuation_V=algo.fluctuation())
    if algo.kind is None:  # a torch module: its overlaps are those of its effective key and value directions
        summary["trained"].update(predictor=algo.name, algo=f"{'online' if tc.algo == 'sgd' else 'erm'} {tc.optimizer}",
                                  optimizer=tc.optimizer, parameters=algo.n_parameters,
                                  stacked=algo.stack.use_vmap, directions=algo.defines_directions)
    per = {k: o[k][alive] for k in (*OVERLAPS, "norm_k", "norm_v")}
    per["dist_to_M"] = np.sqrt(per["theta"] ** 2 + per["eta"] ** 2 + per["rho"] ** 2)
    summary["final_overlaps"] = dict(per_repeat=per,
                                     median={k: float(np.median(v)) if v.size else None for k, v in per.items()},
                                     median_abs={k: float(np.median(np.abs(v))) if v.size else None
                                                 for k, v in per.items()})
    timings: dict = {}
    excess = evaluate_final(cfg, task, algo, lam, alive, timings)
    if algo.kind is ERF and alive.any():
        cf = theory.erf_excess(lam, *(per[k] for k in OVERLAPS), d=task.d, L=task.L, gamma=task.gamma,
                               signal=task.signal, norm_k=per["norm_k"], norm_v=per["norm_v"])
        excess["trained"]["closed_form"] = float(np.median(cf))
        excess["trained"]["closed_form_per_repeat"] = cf
    summary["excess"] = excess
    summary["eval"] = dict(n_test=cfg.eval.n_test, simulator=cfg.eval.simulator or tc.simulator)
    t_eval = time.perf_counter()

    formats = figure_formats(cfg)
    if formats and hist.rows:
        from slr.plots.dynamics import dynamics_figure, module_figure, save

        refs = {f"{excess['oracle']['name']}, lam={excess['oracle']['lam']:.3g}": excess["oracle"].get("closed_form", excess["oracle"]["mc"]),
                "Bayes": excess["bayes"].get("importance_sampling", excess["bayes"]["mc"]),
                "linear": excess["linear"]["closed_form"]}
        if algo.kind is None:  # a torch module
            attention_refs = {"uniform, 1/L": 1.0 / task.L, "Bayes posterior": excess["bayes"].get("attention_on_J0")}
            fig, _ = module_figure(hist.rows, refs, attention_refs, title=f"{cfg.name}: {task}, {summary['trained']['algo']}")
        else:
            fig, _ = dynamics_figure(hist.rows, refs, title=f"{cfg.name}: {task}, {tc.algo}, {_lam_text(schedule(0), lam)}")
        save(fig, out / "figures" / "dynamics", formats)
    t_end = time.perf_counter()
    summary["status"] = "diverged" if not alive.all() else "ok"
    summary["timings"] = dict(train_s=t_train - t_start, eval_s=t_eval - t_train, figures_s=t_end - t_eval,
                              total_s=t_end - t_start, steps_per_s=hist.steps_done / max(hist.seconds, 1e-9), **timings)
    write_json(out / "summary.json", summary)
    if not alive.all():
        log.warning("%d of %d repeats diverged (at steps %s)", (~alive).sum(), len(alive),
                    sorted(set(hist.diverged_at[~alive].tolist())))
    aligned = alignment_line(summary)
    log.info("\n%s%s\nwall time %.1f s (training %.1f s, %.0f steps/s); outputs in %s", comparison_table(excess),
             "" if aligned is None else "\n" + aligned,
             t_end - t_start, hist.seconds, summary["timings"]["steps_per_s"], out)
    if "attention_on_J0" in excess.get("trained", {}):
        log.info("%s", attention_line(excess, task.L))


def main() -> float | None:
    """The ``slr`` command: ``--version`` prints the version; anything else goes to the Hydra app :func:`app`."""
    if "--version" in sys.argv[1:]:
        from slr import __version__

        print(f"slr {__version__}")
        return None
    return app()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> float | None:
    """``python -m slr``: run one job (see :func:`job_exits` for how it ends). With ``resume=true`` a job whose folder
    already holds a finished run of the same config is skipped."""
    with job_exits(cfg, "slr"):
        if cfg.resume:
            check(cfg)
            out = _hydra_output_dir() or Path.cwd()
            prev = finished_before(cfg, out)
            if prev is not None:
                log.info("resume: %s already holds this finished run (digest %s); skipped", out, prev["config_digest"])
                return _trained_excess(prev)
        return _trained_excess(run(cfg))


def _trained_excess(summary: dict) -> float | None:
    e = summary.get("excess", {}).get("trained")
    return e["mc"] if e else None

