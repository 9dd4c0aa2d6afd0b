"""Reading the SGD-limit sweeps (``docs/dynamics.md``, "Online SGD: the high-dimensional limit"):

- ``experiment=sweep_sgd_limit``: the exact reduced chain and the limit ODE (with and without its correction) from the
  same initial overlaps; :func:`curves` (medians over repeats at every logged step), :func:`gaps` (the sup over logged
  steps of |median chain - median ODE|) and :func:`slopes` (their log-log slope in ``d``) make the validation table;
- ``experiment=phase_sgd``: the ODE's final states over ``delta`` x initial ``lam``; :func:`phase` makes the table of
  fractions of final states per cell.

A job's settings come from its saved config (``.hydra/config.yaml``), its logs from ``metrics.csv``, its final state
from ``summary.json``; jobs that did not finish are left out of the validation table and counted by the callers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import yaml

from slr.results.sweep import FINISHED, Job, read_sweep

QUANTITIES = ("abs_kappa", "abs_nu", "excess")
SETTING = ["init", "delta", "B", "d"]
STATES = ("aligned", "swapped", "stalled", "undecided", "unstable")
COLLAPSE_FLOOR = 1e-4  # 100 x the SGD-limit solver's atol: below it the overlaps are integration error


def job_config(job: Job) -> dict:
    """The job's composed config as saved by Hydra (``{}`` if absent)."""
    path = job.path / ".hydra" / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def setting(job: Job) -> dict:
    """``init``, ``delta = lr d``, ``B``, ``d`` and ``model`` (chain, ode, flow: the ODE without its correction)."""
    cfg = job_config(job)
    t, d = cfg["train"], int(cfg["task"]["d"])
    delta = float(t["lr"]) if t.get("lr_scale") == "d" else float(t["lr"]) * d
    if t["simulator"] == "ode":
        model = "ode" if t.get("ode_correction", True) else "flow"
    else:
        model = "chain"
    return dict(init=t["init"], delta=delta, B=int(t["batch_size"]), d=d, model=model)


def _medians(g: pd.DataFrame) -> pd.Series:
    out = {"abs_kappa": g.kappa.abs().median(), "abs_nu": g.nu.abs().median(), "excess": g.excess.median()}
    for name, x in (("abs_kappa", g.kappa.abs()), ("abs_nu", g.nu.abs()), ("excess", g.excess)):
        out[name + "_lo"], out[name + "_hi"] = x.quantile(0.1), x.quantile(0.9)  # the 10-90% band over repeats
    return pd.Series(out)


def curves(jobs: Sequence[Job]) -> pd.DataFrame:
    """One row per setting, model and logged step: the medians over repeats of ``|kappa|``, ``|nu|`` and the excess
    (the closed form at the chain's overlaps; for the ODE, its mean over the fluctuation the ODE carries) and their
    10-90% bands, with ``t = step/d``. Jobs of the same setting and model with different seeds pool their repeats; a
    chain run appears once even if the sweep ran it for both values of ``train.ode_correction``."""
    runs: dict[tuple, dict] = {}
    for job in jobs:
        if job.status not in FINISHED or not (job.path / "metrics.csv").is_file():
            continue
        s = setting(job)
        runs.setdefault(tuple(s[k] for k in [*SETTING, "model"]), {}).setdefault(job_config(job).get("seed", 0), job)
    frames = []
    for key, by_seed in runs.items():
        m = pd.concat([pd.read_csv(j.path / "metrics.csv") for _, j in sorted(by_seed.items())], ignore_index=True)
        c = m.groupby("step")[["kappa", "nu", "excess"]].apply(_medians).reset_index()
        frames.append(c.assign(**dict(zip([*SETTING, "model"], key)), t=c.step / key[SETTING.index("d")]))
    cols = [*SETTING, "model", "step", "t"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    return out[cols + [c for c in out.columns if c not in cols]].sort_values(cols, ignore_index=True)


def gaps(curves: pd.DataFrame) -> pd.DataFrame:
    """Sup over logged steps of |median chain - ODE| per setting, for the ODE and the plain flow (a column per model
    present)."""
    out = []
    for key, g in curves.groupby(SETTING):
        chain = g[g.model == "chain"].set_index("step")
        if chain.empty:
            continue
        row = dict(zip(SETTING, key))
        for kind in ("ode", "flow"):
            other = g[g.model == kind].set_index("step")
            if other.empty:
                continue
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


def wall_times(jobs: Sequence[Job]) -> pd.DataFrame:
    """Training wall time per setting and model (``chain_s``, ``ode_s``, ``flow_s``)."""
    rows = {}
    for job in jobs:
        if job.status in FINISHED:
            s = setting(job)
            rows.setdefault(tuple(s[k] for k in SETTING), {})[s["model"] + "_s"] = job.summary["timings"]["train_s"]
    return pd.DataFrame([dict(zip(SETTING, k), **v) for k, v in rows.items()], columns=[*SETTING, "chain_s", "ode_s",
                                                                                          "flow_s"]).dropna(axis=1, how="all")


def markdown(df: pd.DataFrame, fmt: str) -> str:
    """A pipe table of ``df`` (numbers in ``fmt``)."""
    cells = [[format(v, fmt) if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def validation(sweep_dir: Path) -> dict:
    """An ``experiment=sweep_sgd_limit`` folder read: ``jobs``, ``curves``, ``table`` (gaps and wall times per
    setting), ``slopes`` and ``skipped`` (the jobs that did not finish)."""
    jobs = read_sweep(Path(sweep_dir))
    c = curves(jobs)
    table = gaps(c)
    if not table.empty:
        table = table.merge(wall_times(jobs), on=SETTING, how="left")
    return dict(jobs=jobs, curves=c, table=table, slopes=slopes(table) if not table.empty else pd.DataFrame(),
                skipped=[j for j in jobs if j.status not in FINISHED])


# ----- phase_sgd --------------------------------------------------------------------------------------------------
def classify(overlaps: dict, V: np.ndarray, M: float, min_overlap: np.ndarray | None = None) -> np.ndarray:
    """Final states: aligned (``|kappa|, |nu| >= 0.9``), swapped (``|eta| >= 0.9``), unstable (the fluctuation ``V``
    of ``M theta`` above ``M^2`` or not finite: past the noise's stability edge), undecided (on the way,
    ``max(|kappa|, |nu|, |theta|, |eta|)`` fell below :data:`COLLAPSE_FLOOR`: from there, whether and where the ODE
    escapes is set by integration error, not by the dynamics), stalled (anything else)."""
    V = np.asarray(V, dtype=float)
    kappa, nu, eta = (np.asarray(overlaps[k], dtype=float) for k in ("kappa", "nu", "eta"))
    out = np.full(len(V), "stalled", dtype=object)
    out[(np.abs(kappa) >= 0.9) & (np.abs(nu) >= 0.9)] = "aligned"
    out[np.abs(eta) >= 0.9] = "swapped"
    if min_overlap is not None:
        out[np.asarray(min_overlap, dtype=float) < COLLAPSE_FLOOR] = "undecided"
    out[~np.isfinite(V) | (V > M * M)] = "unstable"
    return out


def phase(sweep_dir: Path) -> pd.DataFrame:
    """An ``experiment=phase_sgd`` folder read: one row per cell (``delta``, ``lam0``; seeds pooled) with the fractions
    of final states, the training wall time and right-hand-side evaluations (summed over seeds) and the solvers'
    messages. A job whose solver failed (``failed``: past the stability edge the fluctuation blows up) counts as
    ``train.repeats`` unstable repeats; a job that did not finish for another reason (running, missing, corrupt) is
    left out."""
    cells: dict[tuple, dict] = {}
    for job in read_sweep(Path(sweep_dir)):
        cfg = job_config(job)
        if not cfg or job.status not in (*FINISHED, "failed"):
            continue
        t, d = cfg["train"], int(cfg["task"]["d"])
        key = (float(t["lr"]) if t.get("lr_scale") == "d" else float(t["lr"]) * d, float(cfg["predictor"]["lam"]))
        c = cells.setdefault(key, dict(states=[], seconds=0.0, evaluations=0, messages=[]))
        if job.status in FINISHED:
            tr = job.summary["trained"]
            o = job.summary["final_overlaps"]["per_repeat"]
            # the exact chain (train.simulator=reduced) carries no fluctuation V and reaches no collapse floor
            V = tr.get("fluctuation_V", np.where(np.isfinite(np.asarray(o["kappa"], dtype=float)), 0.0, np.nan))
            c["states"].append(classify(o, V, float(job.summary["task"]["M"]), tr.get("min_overlap")))
            c["seconds"] += job.summary["timings"]["train_s"]
            c["evaluations"] += tr.get("evaluations", {}).get("rhs", 0)
        else:
            c["states"].append(np.full(int(t["repeats"]), "unstable", dtype=object))
            c["seconds"], c["evaluations"] = float("nan"), float("nan")
            c["messages"].append(job.error or "failed")
    rows = []
    for (delta, lam0), c in cells.items():
        states = np.concatenate(c["states"])
        rows.append(dict(delta=delta, lam0=lam0, seconds=c["seconds"], evaluations=c["evaluations"],
                         message="; ".join(c["messages"]), **{s: float(np.mean(states == s)) for s in STATES}))
    cols = ["delta", "lam0", "seconds", "evaluations", "message", *STATES]
    return pd.DataFrame(rows, columns=cols).sort_values(["delta", "lam0"], ignore_index=True)
