"""The final evaluation of a job: the trained predictor and every baseline on the same test samples (Monte Carlo
excess with standard errors, paired excess over Bayes), their closed forms, and the Bayes excess by importance
sampling."""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig

if TYPE_CHECKING:
    from slr.core.predictors import AttentionKind
    from slr.core.task import Task
    from slr.training.algorithms import Algorithm

NOT_AVAILABLE = "not available for {} tokens"  # closed forms and the reduced simulator assume Gaussian tokens


def not_available(task) -> str:
    """Why the closed forms and the reduced simulator do not apply to ``task`` (non-Gaussian or a user's task)."""
    return "not available for a custom task" if task.tokens == "custom" else NOT_AVAILABLE.format(task.tokens)


def evaluate_final(cfg: DictConfig, task: Task, algo: Algorithm, oracle: tuple[AttentionKind, float],
                   alive: np.ndarray) -> tuple[dict, dict]:
    """Monte Carlo excess risks (with standard errors and paired excess over Bayes) and closed forms of the trained
    predictor's live repeats, of the oracle attention ``(kind, lam)`` and of every baseline; returns them with the
    timings (how long the importance-sampling Bayes excess took and whether it came from the cache)."""
    from slr import theory
    from slr.core import evaluate
    from slr.core.bayes_cache import bayes_excess_is_log10
    from slr.core.predictors import ERF, Attention, Bilinear, Linear, erf_attention
    from slr.core.reduced import ReducedTask

    timings: dict = {}
    kind, lam = oracle
    eval_task = algo.eval_task
    simulator = cfg.eval.simulator or ("reduced" if eval_task is not task else "full")
    s = task.n_informative
    custom = getattr(task, "tokens", None) == "custom"
    if custom:  # a user's task: the oracle (at the run's lam) if it gave k*, v*; no closed form
        usable = task.directions and lam is not None and math.isfinite(lam)
        baselines = {"oracle": Attention(eval_task.k_star, eval_task.v_star, lam, kind, "oracle")} if usable else {}
        closed = {}
    else:
        best_lam, best_excess = theory.best_oracle_lam(d=task.d, L=task.L, gamma=task.gamma, signal=task.signal, s=s)
        baselines = {  # the oracle has the trained predictor's kind; the best-lam oracle is erf's (closed form)
            "oracle": Attention(eval_task.k_star, eval_task.v_star, lam, kind, "oracle" if kind is ERF else f"{kind.name} oracle"),
            "oracle_best": erf_attention(eval_task.k_star, eval_task.v_star, best_lam, name="oracle, best"),
            "linear": Linear.of(eval_task),
            "bilinear": Bilinear.of(eval_task),
        }
        closed = {"oracle_best": best_excess, "linear": float(theory.linear_excess(task.L, task.gamma, s)),
                  "bilinear": float(theory.bilinear_excess(task.d, task.L, task.gamma, task.signal, s))}
        if kind is ERF:
            closed["oracle"] = float(theory.oracle_excess(lam, d=task.d, L=task.L, gamma=task.gamma,
                                                          signal=task.signal, s=s))
        if not task.gaussian:  # shown as not available, never computed for the wrong law
            closed = {key: not_available(task) for key in closed}
    predictors = {"trained": algo.predictor(lam, select=alive), **baselines} if alive.any() else dict(baselines)
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
        if key in closed and isinstance(closed[key], str):
            entry["closed_form_note"] = closed[key]
        elif key in closed:
            entry["closed_form"] = closed[key]
        if row.attention_on_J0 is not None:  # mean weight on the informative token (docs/transformer.md)
            att = np.asarray(row.attention_on_J0)
            entry["attention_on_J0"] = float(np.median(att))
            if att.ndim > 0:
                entry["attention_on_J0_per_repeat"] = att
        out[key] = entry
    if custom:
        if "oracle" in out:
            out["oracle"]["lam"] = lam
        return out, timings
    out["oracle"]["lam"], out["oracle_best"]["lam"] = lam, best_lam
    variant = task.variant()["name"]
    sampler = {"prior": evaluate.bayes_excess_is_prior_log10,  # pairs of positions (docs/variant-prior.md)
               "n_informative": evaluate.bayes_excess_is_sets_log10}.get(variant)  # pairs of sets
    if sampler is not None and cfg.eval.bayes_is > 0:
        start = time.perf_counter()
        log10_m, rel_se = sampler(task, cfg.eval.bayes_is)
        timings.update(bayes_is_s=time.perf_counter() - start, bayes_is_cached=False)
        m = 10.0**log10_m
        out["bayes"].update(importance_sampling=m, importance_sampling_se=m * rel_se,
                            importance_sampling_log10=log10_m, importance_sampling_rel_se=rel_se)
        return out, timings
    if variant != "paper":  # the bound and the importance sampler are the paper's task's
        out["bayes"]["importance_sampling_note"] = f"not available for the task variant {variant}"
        return out, timings
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
    return out, timings


def logged_vs_final(rows: list[dict], trained: dict | None, step: int, n_log: int, n_test: int) -> str | None:
    """A warning when the test excess logged at the last step (mean over repeats, on the ``n_log`` logged
    sequences) and the final evaluation of the same models (on ``n_test`` others) differ by more than three
    standard errors of their difference (the logged one: the root mean square of the repeats'); None when they agree
    or either is missing. The per-sequence excess is heavy-tailed, so a small logged set can miss the rare
    misattributed sequences that the final evaluation sees (``docs/throughput.md`` §4)."""
    last = [r for r in rows if r["step"] == step and r.get("test_excess") is not None]
    if trained is None or not last:
        return None
    logged = float(np.mean([r["test_excess"] for r in last]))
    se_log = math.sqrt(float(np.mean([r.get("test_excess_se", math.nan) ** 2 for r in last])))
    se = math.sqrt(se_log**2 + trained["se"] ** 2)
    if not math.isfinite(logged) or not math.isfinite(se) or abs(logged - trained["mc"]) <= 3.0 * se:
        return None
    return (f"the test excess logged at step {step} ({logged:.4g} ± {se_log:.2g}, mean over repeats on "
            f"train.log_test_size={n_log} sequences) and the final evaluation ({trained['mc']:.4g} ± "
            f"{trained['se']:.2g} on eval.n_test={n_test}) differ by {abs(logged - trained['mc']) / se:.1f} standard "
            f"errors: the logged curve misses rare large errors; raise train.log_test_size (e.g. to {n_test}) for a "
            "curve that agrees with the table")


def _mean_se(per_repeat: np.ndarray, pooled_mc_se: float) -> float:
    """Standard error of a mean over repeats evaluated on shared test samples: the spread between repeats
    (``sd/sqrt(R)``) and the Monte Carlo error of the shared samples, combined in quadrature."""
    R = per_repeat.size
    between = per_repeat.var(ddof=1) / R if R > 1 else 0.0
    return float(math.sqrt(between + pooled_mc_se**2))

