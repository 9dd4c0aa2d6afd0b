"""The Hydra app: ``@hydra.main`` is a thin shell around :func:`run`, which tests call directly.

``run(cfg)``: validate, build the task and the algorithm, train with logging to ``metrics.csv``, evaluate the
trained predictor and every baseline on the same test samples, write ``summary.json`` and ``figures/``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import numpy as np
from omegaconf import DictConfig

from slr.config import CONF_DIR, ConfigError, check, digest, figure_formats, initial_lam, is_module, learning_rate
from slr.io import METRIC_COLUMNS, MetricsWriter, read_json, underflowed_log10, write_json

if TYPE_CHECKING:  # the job's modules import torch (~1.5 s): run() imports them, so that --help, a refused
    from slr.task import Task  # config and slr-report start without them
    from slr.train import Algorithm

log = logging.getLogger("slr")


# ----- building the algorithm: one builder per train group -----------------------------------------------------
def _dtype(cfg: DictConfig):
    import torch

    return torch.float64 if cfg.train.get("dtype", "float64") == "float64" else torch.float32


def build_sgd(cfg, task, C0, init_rng) -> Algorithm:
    from slr.predictors import ATTENTION_KINDS
    from slr.seeding import torch_generator
    from slr.train import FullSGD, ReducedSGD, embed

    kind, tc = ATTENTION_KINDS[cfg.predictor.name], cfg.train
    gen = torch_generator(cfg.seed, "train", task.device)
    if tc.simulator == "reduced":
        return ReducedSGD(task, kind, C0, lr=learning_rate(cfg, task.d), batch_size=tc.batch_size,
                          projected=tc.projected, generator=gen)
    return FullSGD(task, kind, embed(C0, task, init_rng), lr=learning_rate(cfg, task.d), batch_size=tc.batch_size,
                   projected=tc.projected, generator=gen, dtype=_dtype(cfg))


def build_pgd(cfg, task, C0, init_rng) -> Algorithm:
    from slr.reduced import ReducedTask
    from slr.seeding import numpy_generator
    from slr.train import embed, population_pgd

    tc = cfg.train
    if tc.simulator == "reduced":
        eval_task, KV0 = ReducedTask.of(task, 4), C0
    else:
        eval_task, KV0 = task, embed(C0, task, init_rng).numpy()
    # float64 without noise: PopulationPGD; float32 or noise > 0: PerturbedPGD (numpy), noise from the train stream
    return population_pgd(eval_task, KV0, lr=learning_rate(cfg, task.d), M=task.M, L=task.L, gamma=task.gamma,
                          d=task.d, dtype=tc.dtype, noise=tc.noise, rng=numpy_generator(cfg.seed, "train"))


def build_erm(cfg, task, C0, init_rng) -> Algorithm:
    from slr.predictors import ATTENTION_KINDS
    from slr.seeding import torch_generator
    from slr.train import ERM, embed

    tc = cfg.train
    return ERM(task, ATTENTION_KINDS[cfg.predictor.name], embed(C0, task, init_rng), lr=learning_rate(cfg, task.d),
               n_train=tc.n_train, projected=tc.projected, optimizer=tc.optimizer,
               generator=torch_generator(cfg.seed, "train", task.device), dtype=_dtype(cfg))


def build_none(cfg, task, C0, init_rng) -> Algorithm:
    from slr.predictors import ATTENTION_KINDS
    from slr.reduced import ReducedTask
    from slr.train import Frozen, embed

    kind = ATTENTION_KINDS[cfg.predictor.name]
    if cfg.train.simulator == "reduced":
        return Frozen(ReducedTask.of(task, 4), kind, C0)
    return Frozen(task, kind, embed(C0, task, init_rng).to(task.device))


BUILDERS = {"sgd": build_sgd, "pgd": build_pgd, "erm": build_erm, "none": build_none}


def build_module(cfg, task, C0, init_rng) -> Algorithm:
    """Torch modules (SPEC 9): ``train.repeats`` transformers or user modules, each initialised from its own seed
    drawn from the init stream, trained online (``train=sgd``) or on a fixed set (``train=erm``) by a torch optimiser."""
    import torch

    from slr.models import Transformer, build_user_module
    from slr.seeding import torch_generator
    from slr.train_modules import FixedSetTraining, OnlineTraining, build

    tc, pc = cfg.train, cfg.predictor
    if pc.name == "transformer":
        def make():
            return Transformer(task.d, task.L, d_model=pc.d_model, n_heads=pc.n_heads, n_layers=pc.n_layers,
                               mlp=pc.mlp, norm=pc.norm, pool=pc.pool)
        name = "transformer"
    else:
        def make():
            return build_user_module(pc.model, task.d, task.L)
        name = str(pc.model._target_)
    modules = build(task, make, tc.repeats, init_rng.integers(0, 2**62, tc.repeats))
    torch.manual_seed(int(init_rng.integers(0, 2**62)))  # a module drawing random numbers (dropout) reproduces too
    kw = dict(optimizer=tc.optimizer, lr=tc.lr, weight_decay=tc.weight_decay, steps=tc.steps,
              warmup_steps=tc.warmup_steps, lr_decay=tc.lr_decay, generator=torch_generator(cfg.seed, "train", task.device),
              dtype=_dtype(cfg), name=name)
    if tc.algo == "erm":
        return FixedSetTraining(task, modules, n_train=tc.n_train, **kw)
    return OnlineTraining(task, modules, batch_size=tc.batch_size, **kw)


# ----- what is logged every log_every steps ---------------------------------------------------------------------
class StepLogger:
    """Makes the metrics rows of one logged step (one per live repeat) and appends them to ``metrics.csv``."""

    def __init__(self, cfg: DictConfig, task: Task, writer: MetricsWriter):
        self.task, self.writer = task, writer
        self.n_test = int(cfg.train.get("log_test_size", 0))
        self.test_set = None  # drawn at the first logged step, on the algorithm's evaluation task

    def __call__(self, t: int, lam: float, algo: Algorithm, alive: np.ndarray) -> list[dict]:
        from slr import theory
        from slr.predictors import ERF
        from slr.train import ERM, OVERLAPS

        o = algo.overlaps()
        cols = {k: o[k] for k in (*OVERLAPS, "norm_k", "norm_v")}
        cols["dist_to_M"] = np.sqrt(o["theta"] ** 2 + o["eta"] ** 2 + o["rho"] ** 2)
        if algo.kind is ERF:
            cols["excess"] = theory.erf_excess(lam, *(o[k] for k in OVERLAPS), d=self.task.d, L=self.task.L,
                                               gamma=self.task.gamma, signal=self.task.signal,
                                               norm_k=o["norm_k"], norm_v=o["norm_v"])
        if algo.stochastic and self.n_test > 0:
            cols["test_excess"] = self._test_excess(algo, lam)
        if isinstance(algo, ERM):
            cols["train_loss"] = algo.train_loss(lam)
        rows = [dict(step=t, repeat=r, lam=lam, **{k: float(v[r]) for k, v in cols.items()})
                for r in np.flatnonzero(alive)]
        self.writer.write(rows)
        return rows

    def _test_excess(self, algo: Algorithm, lam: float) -> np.ndarray:
        """Monte Carlo excess of each repeat on the run's logged test set (the same sequences at every step)."""
        import dataclasses

        import torch

        if self.test_set is None:
            from slr.evaluate import LoggedTestSet

            self.test_set = LoggedTestSet(algo.eval_task, self.n_test, self.task.seed, dtype=torch.float32)
        p = algo.predictor(lam)
        return self.test_set.excess(dataclasses.replace(p, k=p.k.float(), v=p.v.float()))


# ----- evaluation of the final predictor against the baselines -------------------------------------------------
def evaluate_final(cfg: DictConfig, task: Task, algo: Algorithm, lam: float, alive: np.ndarray,
                   timings: dict | None = None) -> dict:
    """Monte Carlo excess risks (with standard errors and paired excess over Bayes) and closed forms; ``timings``
    receives how long the importance-sampling Bayes excess took and whether it came from the cache."""
    import torch

    from slr import evaluate, theory
    from slr.bayes_cache import bayes_excess_is_log10
    from slr.predictors import ATTENTION_KINDS, ERF, SOFTMAX, Attention, Bilinear, Linear, erf_attention
    from slr.reduced import ReducedTask

    timings = {} if timings is None else timings
    eval_task = algo.eval_task
    simulator = cfg.eval.simulator or ("reduced" if eval_task is not task else "full")
    best_lam, best_excess = theory.best_oracle_lam(d=task.d, L=task.L, gamma=task.gamma, signal=task.signal)
    kind = ATTENTION_KINDS.get(cfg.predictor.name)
    if kind is None:  # a torch module (SPEC 9): its oracle is softmax attention at Bayes's M/gamma^2 (exact at gamma=1)
        kind, lam = SOFTMAX, task.M / task.gamma**2
    baselines = {  # the oracle has the trained predictor's kind; the best-lam oracle is erf's (closed form)
        "oracle": Attention(eval_task.k_star, eval_task.v_star, lam, kind, "oracle" if kind is ERF else f"{kind.name} oracle"),
        "oracle_best": erf_attention(eval_task.k_star, eval_task.v_star, best_lam, name="oracle, best"),
        "linear": Linear.of(eval_task),
        "bilinear": Bilinear.of(eval_task),
    }
    closed = {"oracle_best": best_excess, "linear": float(theory.linear_excess(task.L, task.gamma)),
              "bilinear": float(theory.bilinear_excess(task.d, task.L, task.gamma, task.signal))}
    if kind is ERF:
        closed["oracle"] = float(theory.oracle_excess(lam, d=task.d, L=task.L, gamma=task.gamma, signal=task.signal))
    predictors = dict(baselines)
    if alive.any() and algo.kind is None:  # a torch module
        predictors = {"trained": algo.predictor(select=alive), **baselines}
    elif alive.any():
        trained = algo.predictor(lam)
        sel = torch.as_tensor(alive, device=trained.k.device)
        predictors = {"trained": type(trained)(trained.k[sel], trained.v[sel], lam, trained.kind, trained.name),
                      **baselines}
    for i, p in enumerate(algo.fitted_baselines()):
        predictors["least_squares" if i == 0 else f"fitted_{i}"] = p
    if simulator == "reduced" and not isinstance(eval_task, ReducedTask):
        reduced, eval_task = evaluate.reduce(list(predictors.values()), task)
        predictors = dict(zip(predictors, reduced))
    rows = evaluate.compare(list(predictors.values()), eval_task, cfg.eval.n_test, cfg.seed, simulator="full")
    out = {}
    for key, row in zip(["bayes", *predictors], rows):
        entry = dict(name=row.name, mc=row.excess, se=row.excess_se, over_bayes=row.over_bayes,
                     over_bayes_se=row.over_bayes_se)
        if np.ndim(row.excess) > 0:  # batched over repeats: per-repeat values, and their mean
            per, per_over = np.asarray(row.excess), np.asarray(row.over_bayes)
            entry = dict(name=row.name, mc=float(per.mean()), se=_mean_se(per, row.pooled_se),
                         over_bayes=float(per_over.mean()), over_bayes_se=_mean_se(per_over, row.pooled_over_bayes_se),
                         repeat_sd=float(per.std(ddof=1)) if per.size > 1 else 0.0,
                         per_repeat=per, per_repeat_se=row.excess_se, over_bayes_per_repeat=per_over)
        if key in closed:
            entry["closed_form"] = closed[key]
        if row.attention_on_J0 is not None:  # mean weight on the informative token (SPEC 9)
            att = np.asarray(row.attention_on_J0)
            entry["attention_on_J0"] = float(np.median(att))
            if att.ndim > 0:
                entry["attention_on_J0_per_repeat"] = att
        out[key] = entry
    out["oracle"]["lam"], out["oracle_best"]["lam"] = lam, best_lam
    bound_log10 = theory.bayes_excess_bound_log10(task.d, task.L, task.gamma, task.signal)
    out["bayes"]["upper_bound"] = 10.0**bound_log10
    if cfg.eval.bayes_is > 0:  # a function of (d, L, gamma, signal, draws) only: computed once, then cached
        start = time.perf_counter()
        log10_m, rel_se, cached = bayes_excess_is_log10(task, cfg.eval.bayes_is)
        timings.update(bayes_is_s=time.perf_counter() - start, bayes_is_cached=cached)
        m = 10.0**log10_m  # 0 below ~1e-308: the log10 entry keeps it
        out["bayes"].update(importance_sampling=m, importance_sampling_se=m * rel_se,
                            importance_sampling_log10=log10_m, importance_sampling_rel_se=rel_se,
                            upper_bound_log10=bound_log10)
    return out


def attention_line(excess: dict, L: int) -> str:
    """The mean attention weight on the informative token of every predictor that has one (SPEC 9)."""
    parts = []
    for e in excess.values():
        if "attention_on_J0" in e:
            per = e.get("attention_on_J0_per_repeat")
            spread = f" (median of {len(per)} repeats, {min(per):.3g} to {max(per):.3g})" if per is not None and len(per) > 1 else ""
            parts.append(f"{e['name']} {e['attention_on_J0']:.3g}{spread}")
    return f"attention on the informative token J0 (uniform: 1/L = {1 / L:.3g}): " + "; ".join(parts)


def _mean_se(per_repeat: np.ndarray, pooled_mc_se: float) -> float:
    """Standard error of a mean over repeats evaluated on shared test samples: the spread between repeats
    (``sd/sqrt(R)``) and the Monte Carlo error of the shared samples, combined in quadrature."""
    R = per_repeat.size
    between = per_repeat.var(ddof=1) / R if R > 1 else 0.0
    return float(math.sqrt(between + pooled_mc_se**2))


def _bayes_cells(e: dict) -> tuple[str, str]:
    """The Bayes row's one number and where it comes from: the importance-sampling estimate with its standard error
    when it ran (quoted by its log10 and relative error where it is below the float range), else Monte Carlo."""
    tiny = underflowed_log10(e)
    if tiny is not None:
        return f"10^{tiny:.1f} ± {100 * e.get('importance_sampling_rel_se', math.nan):.2g}%", "importance sampling"
    if e.get("importance_sampling") is not None:
        return f"{e['importance_sampling']:.4g} ± {e.get('importance_sampling_se', math.nan):<7.2g}", "importance sampling"
    return f"{e['mc']:.4g} ± {e['se']:<7.2g}", "Monte Carlo"


def comparison_table(excess: dict) -> str:
    """The comparison printed at the end of a run: one row per predictor, Bayes first with one number."""
    lines = [f"{'predictor':<46}{'excess risk':>22}{'closed form':>14}{'excess over Bayes':>24}"]
    for key, e in excess.items():
        name = e["name"] + (f", lam={e['lam']:.3g}" if "lam" in e else "")
        if "per_repeat" in e:
            name += f" [{len(e['per_repeat'])} repeats]"
        if key == "bayes":
            value, source = _bayes_cells(e)
            lines.append(f"{name + ' (' + source + ')':<46}{value:>22}")
            continue
        cf = e.get("closed_form")
        cf_s = "" if cf is None else f"{cf:.4g}"
        ob = f"{e['over_bayes']:.4g} ± {e['over_bayes_se']:.2g}"
        lines.append(f"{name:<46}{e['mc']:>12.4g} ± {e['se']:<7.2g}{cf_s:>14}{ob:>24}")
    lines.append("(± one standard error. Excess risk: Monte Carlo on shared test samples, Bayes by importance sampling "
                 "where it ran; trained: mean over repeats, its error combining the spread of the repeats and the Monte "
                 "Carlo error; closed form: median over repeats; excess over Bayes: paired Monte Carlo)")
    return "\n".join(lines)


def alignment_line(summary: dict, threshold: float = 0.9) -> str | None:
    """What training reached, in one line: median ``|kappa|``, ``|nu|``, how many repeats aligned (both >= 0.9),
    how many ended with ``k`` on ``±v*`` instead, and the ``lam`` path; None without overlaps."""
    per = (summary.get("final_overlaps") or {}).get("per_repeat") or {}
    if not per or not len(per.get("kappa", [])):
        return None
    k, n, e = (np.abs(np.asarray(per[x], dtype=float)) for x in ("kappa", "nu", "eta"))
    t = summary.get("trained") or {}
    line = (f"trained: median |kappa| {np.median(k):.3f}, |nu| {np.median(n):.3f} after {t.get('steps_done')} steps; "
            f"{int(((k >= threshold) & (n >= threshold)).sum())} of {k.size} repeats aligned (|kappa|, |nu| >= {threshold:g})")
    swapped = int((e >= threshold).sum())
    if swapped:
        line += f", {swapped} with k on ±v*"
    if t.get("lam_initial") is not None and t.get("lam_final") != t.get("lam_initial"):
        line += "; " + _lam_text(t["lam_initial"], t["lam_final"])
    return line


# ----- run ------------------------------------------------------------------------------------------------------
def _hydra_output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def show_progress() -> bool:
    """A progress bar only on an interactive terminal, outside CI and multiruns."""
    return sys.stderr.isatty() and not os.environ.get("CI") and not _in_multirun()


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """Run one job into ``out_dir`` (default: Hydra's output dir, else the working directory); return the summary."""
    return run_in_folder(cfg, out_dir, check, _run, "run")


def run_in_folder(cfg: DictConfig, out_dir: str | Path | None, check_config, body, what: str) -> dict:
    """The life of a run folder, shared by ``slr`` and ``slr-landscape``: refuse an invalid config before anything is
    written (``check_config``), write ``summary.json`` with status ``running``, run ``body(cfg, out, summary, t_start)``,
    and on any exception record status ``failed`` with the error (the traceback goes to the log) before re-raising.
    Returns the summary."""
    check_config(cfg)
    out = Path(out_dir) if out_dir is not None else (_hydra_output_dir() or Path.cwd())
    out.mkdir(parents=True, exist_ok=True)
    import slr.evaluate, slr.train  # noqa: E401,F401  the job's modules (torch...), before the clock starts
    t_start = time.perf_counter()
    summary: dict = dict(status="running", name=cfg.name, config_digest=digest(cfg))
    write_json(out / "summary.json", summary)
    try:
        body(cfg, out, summary, t_start)
    except BaseException as exc:  # record the failure, keep what was written, and let the caller see it
        summary.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        summary.setdefault("timings", {})["total_s"] = time.perf_counter() - t_start
        log.error("%s failed: %s\n%s", what, summary["error"], traceback.format_exc())
        try:
            write_json(out / "summary.json", summary)
        except Exception:  # the summary itself does not serialise: keep its essentials
            write_json(out / "summary.json", {k: summary[k] for k in ("status", "name", "config_digest", "error")})
        exc.slr_recorded = True  # main() need not report it again
        raise
    return summary


def job_task(cfg: DictConfig, repeats: int):
    """What every job starts from: its torch threads set, the task of ``cfg.task`` and ``seed``, and ``repeats``
    initial points of ``train.init`` in canonical coordinates (R, 2, 4), with the ``init`` stream that drew them
    (:func:`slr.train.embed` continues it). Returns ``(task, C0, init_rng)``."""
    import torch

    from slr.seeding import numpy_generator
    from slr.task import Task
    from slr.train import INITS

    torch.set_num_threads(cfg.threads)
    task = Task(cfg.task.d, cfg.task.L, cfg.task.gamma, cfg.task.eps, cfg.task.signal, seed=cfg.seed,
                axes=cfg.task.axes, device=cfg.device)
    init_rng = numpy_generator(cfg.seed, "init")
    return task, INITS[cfg.train.init](repeats, task.d, init_rng), init_rng


def _run(cfg: DictConfig, out: Path, summary: dict, t_start: float) -> None:
    from slr import theory
    from slr.predictors import ERF
    from slr.train import OVERLAPS, lam_schedule, train

    tc = cfg.train
    task, C0, init_rng = job_task(cfg, tc.repeats)
    summary["task"] = dict(d=task.d, L=task.L, gamma=task.gamma, gamma2=task.gamma**2, eps=task.eps, M=task.M)
    if is_module(cfg):  # a torch module has no lam: predictor.lam and train.lam_schedule do not apply
        from slr.train_modules import ModuleStepLogger as Logger

        algo = build_module(cfg, task, C0, init_rng)
        lam0, schedule = None, (lambda t: None)
        summary["lam"], summary["lam_auto"] = None, False
    else:
        Logger = StepLogger
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
        from slr.plots import dynamics_figure, module_figure, save

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


def _lam_text(lam0: float, lam: float) -> str:
    return f"lam {lam0:.3g}" if lam == lam0 else f"lam {lam0:.3g} -> {lam:.3g}"


def finished_before(cfg: DictConfig, out: Path) -> dict | None:
    """The summary already in ``out`` if it is a finished run (status ok, or diverged: re-running the same config
    and seed would diverge again) of the same config, else None."""
    prev = read_json(out / "summary.json")
    if prev and prev.get("status") in ("ok", "diverged") and prev.get("config_digest") == digest(cfg):
        return prev
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler ending a job) as an exception, so that :func:`run` records it as a failure."""


def _terminate(signum, frame) -> None:
    raise Terminated(f"terminated by signal {signal.Signals(signum).name}")


def main() -> float | None:
    """The ``slr`` command: ``--version`` prints the version; anything else goes to the Hydra app :func:`app`."""
    if "--version" in sys.argv[1:]:
        from slr import __version__

        print(f"slr {__version__}")
        return None
    return app()


@contextlib.contextmanager
def job_exits(cfg: DictConfig, command: str):
    """How a job of ``slr`` or ``slr-landscape`` ends: a refused config prints its paragraph and exits with code 2; a
    failure exits with code 1 after :func:`run_in_folder` has recorded it (summary.json, and the traceback in the job's
    log, which the console shows too); Ctrl-C (exit 130) and, outside multiruns, SIGTERM (exit 143) are recorded as
    status failed. In a multirun, errors are raised instead (Hydra records them, the other jobs go on, and the sweep
    exits non-zero at the end), and a refused job's folder says why it holds no results; the launcher owns the
    signals."""
    if not _in_multirun():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    except ConfigError as err:
        if _in_multirun():  # the job's folder exists: say in it why it holds no results, for slr-report and aggregate
            log.error("%s", err)
            write_json(_hydra_output_dir() / "summary.json", dict(status="failed", name=cfg.get("name"), error=str(err)))
            raise
        print(err, file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        if _in_multirun():
            raise
        if not getattr(exc, "slr_recorded", False):  # failed before run_in_folder() could record it
            log.exception("%s failed before the run started", command)
        sys.exit(1)  # Hydra would print the traceback a second time
    except KeyboardInterrupt as exc:
        if _in_multirun():
            raise
        how = str(exc) if isinstance(exc, Terminated) else "interrupted"
        print(f"{command}: {how}; summary.json records status failed", file=sys.stderr)
        sys.exit(143 if isinstance(exc, Terminated) else 130)


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
