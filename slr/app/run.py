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

from slr.app.build import job_task
from slr.app.config import check, figure_formats, learning_rate
from slr.app.schema import CONF_DIR
from slr.app.families import family_of
from slr.app.final import evaluate_final, logged_vs_final, not_available
from slr.app.job import (_hydra_output_dir, _in_multirun, compose_errors_refused, finished_before, job_exits,
                         logged_before_the_run, run_in_folder, show_progress)
from slr.io import write_json
from slr.results.tables import alignment_line, attention_line, comparison_table

log = logging.getLogger("slr")


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """Run one job into ``out_dir`` (default: Hydra's output dir, else the working directory); return the summary."""
    return run_in_folder(cfg, out_dir, check, _run, "run")


def _run(cfg: DictConfig, out: Path, summary: dict, t_start: float) -> None:
    from slr.training.algorithms import OVERLAPS, train
    from slr.training.events import metrics_writers
    from slr.training.logger import StepLogger

    if cfg.task.get("name") == "text":  # a pretrained model's token states (docs/text.md): its own job body
        from slr.app.text import run_text

        return run_text(cfg, out, summary, t_start)
    tc = cfg.train
    family = family_of(cfg)
    task, C0, init_rng = job_task(cfg, tc.repeats)
    summary["task"] = dict(d=task.d, L=task.L, gamma=task.gamma, gamma2=task.gamma**2, eps=task.eps, M=task.M,
                           variant=task.variant())
    algo = family.build(task, C0, init_rng)
    lam_fields, schedule = family.lam(task)
    summary.update(lam_fields)
    log.info("%s | %s, %s, %s simulator, %d repeats x %d steps -> %s", cfg.name, task, family.label, tc.simulator,
             tc.repeats, tc.steps, out)
    from slr.training.flow import SolverFailure

    with metrics_writers(out, family.columns, cfg.get("logger", "csv")) as writer:  # metrics.csv (+ TensorBoard)
        try:
            hist = train(algo, steps=tc.steps, log_every=tc.log_every, schedule=schedule,
                         log=StepLogger(task, writer, tc.get("log_test_size", 0)), progress=show_progress())
        except SolverFailure as err:  # the solver's message, not a traceback
            summary.update(status="failed", error=f"SolverFailure: {err}", trained=dict(algo=tc.algo, **algo.details()))
            summary["timings"] = dict(total_s=time.perf_counter() - t_start)
            write_json(out / "summary.json", summary)
            log.error("%s failed: %s", cfg.name, err)
            return
    alive = hist.diverged_at < 0
    lam = schedule(hist.steps_done)
    t_train = time.perf_counter()

    o = algo.overlaps()
    fields = family.trained(algo)
    summary["trained"] = dict(predictor=fields.pop("predictor"), algo=fields.pop("algo"), simulator=tc.simulator,
                              steps_done=hist.steps_done, lam_initial=schedule(0), lam_final=lam,
                              lr=learning_rate(cfg, task.d), repeats=tc.repeats, alive=int(alive.sum()),
                              diverged_at=hist.diverged_at, kernel=algo.kernel, **fields)
    per = {k: o[k][alive] for k in (*OVERLAPS, "norm_k", "norm_v")}
    if not getattr(task, "directions", True):  # a user's task without k*, v*: no overlaps to report
        per.update({k: np.full(int(alive.sum()), np.nan) for k in OVERLAPS})
    per["dist_to_M"] = np.sqrt(per["theta"] ** 2 + per["eta"] ** 2 + per["rho"] ** 2)
    summary["final_overlaps"] = dict(per_repeat=per,
                                     median={k: float(np.median(v)) if v.size else None for k, v in per.items()},
                                     median_abs={k: float(np.median(np.abs(v))) if v.size else None
                                                 for k, v in per.items()})
    excess, timings = evaluate_final(cfg, task, algo, family.oracle(task, lam), alive)
    cf = algo.closed_form_excess(lam, per, task) if alive.any() and task.gaussian else None
    if alive.any() and not task.gaussian and getattr(algo.kind, "excess", None) is not None:  # erf: say why not
        excess["trained"]["closed_form_note"] = not_available(task)
    if cf is not None:
        excess["trained"]["closed_form"] = float(np.median(cf))
        excess["trained"]["closed_form_per_repeat"] = cf
    summary["excess"] = excess
    summary["eval"] = dict(n_test=cfg.eval.n_test, simulator=cfg.eval.simulator or tc.simulator)
    if not task.gaussian:
        summary["eval"]["reduced_simulator"] = not_available(task)
    t_eval = time.perf_counter()
    disagreement = logged_vs_final(hist.rows, excess.get("trained"), hist.steps_done, tc.get("log_test_size", 0),
                                   cfg.eval.n_test)

    formats = figure_formats(cfg)
    if formats and hist.rows:
        from slr.plots.dynamics import save

        refs = {"Bayes": excess["bayes"].get("importance_sampling", excess["bayes"]["mc"])}
        if "oracle" in excess:
            o = excess["oracle"]
            refs[f"{o['name']}, lam={o['lam']:.3g}"] = o.get("closed_form", o["mc"])
        if "linear" in excess:
            refs["linear"] = excess["linear"].get("closed_form", excess["linear"]["mc"])
        final = None
        if "trained" in excess:
            final = dict(step=hist.steps_done, excess=excess["trained"]["mc"], se=excess["trained"]["se"],
                         n_test=cfg.eval.n_test)
        fig, _ = family.figure(hist.rows, refs, excess, task, f"{cfg.name}: {task}", final, (schedule(0), lam))
        save(fig, out / "figures" / "dynamics", formats)
    t_end = time.perf_counter()
    summary["status"] = "diverged" if not alive.all() else "ok"
    summary["timings"] = dict(train_s=t_train - t_start, eval_s=t_eval - t_train, figures_s=t_end - t_eval,
                              total_s=t_end - t_start, steps_per_s=hist.steps_done / max(hist.seconds, 1e-9), **timings)
    write_json(out / "summary.json", summary)
    if not alive.all():
        log.warning("%d of %d repeats diverged (at steps %s)", (~alive).sum(), len(alive),
                    sorted(set(hist.diverged_at[~alive].tolist())))
    if disagreement:
        log.warning("%s", disagreement)
    collapsed = _collapsed_warning(summary.get("trained", {}))
    if collapsed:
        log.warning("%s", collapsed)
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
    with compose_errors_refused("slr"):
        return app()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> float | None:
    """``python -m slr``: run one job (see :func:`job_exits` for how it ends). With ``resume=true`` a job whose folder
    already holds a finished run of the same config is skipped."""
    with job_exits(cfg, "slr"):
        if cfg.resume:
            check(cfg)
            with logged_before_the_run("slr"):
                out = _hydra_output_dir() or Path.cwd()
                prev = finished_before(cfg, out)
            if prev is not None:
                log.info("resume: %s already holds this finished run (digest %s); skipped", out, prev["config_digest"])
                return _trained_excess(prev)
        summary = run(cfg)
        if summary.get("status") == "failed" and not _in_multirun():
            sys.exit(1)  # a solver failure: its message is logged and recorded in summary.json (no traceback)
        return _trained_excess(summary)


def _collapsed_warning(trained: dict) -> str | None:
    """For the SGD limit: the repeats whose overlaps all fell below the collapse floor on the way, whose end state the
    ODE does not decide (docs/dynamics.md, "Phase diagram")."""
    from slr.results.sgd_limit import COLLAPSE_FLOOR

    low = np.asarray(trained.get("min_overlap", []), dtype=float)
    hit = low < COLLAPSE_FLOOR
    if not hit.any():
        return None
    return (f"{int(hit.sum())} of {len(low)} repeats: every overlap fell below {COLLAPSE_FLOOR:g} on the way (smallest "
            f"{np.nanmin(low):.1e}); from there the ODE's end state is set by integration error, not by the dynamics "
            "(docs/dynamics.md, 'Phase diagram'): run the exact chain (train.simulator=reduced) for these settings")


def _trained_excess(summary: dict) -> float | None:
    if "excess" not in summary and "loss" in summary:  # task=text: the trained attention's test loss
        return summary["loss"].get("test")
    e = summary.get("excess", {}).get("trained")
    return e["mc"] if e else None

