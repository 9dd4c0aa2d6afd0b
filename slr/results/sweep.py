"""Reading a sweep: its job folders, each job's overrides and summary, one flat row per job, and the excess risks
of every predictor as a tidy table (one row per job and predictor) with means and standard errors over seeds.

Nothing here is fatal: a job folder that failed, is still running, was killed or holds unparseable files becomes
a row with its ``status`` and ``error`` (:data:`PROBLEMS`), reported by the callers, never an exception.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import yaml

from slr.io import read_json

FINISHED = ("ok", "diverged")  # jobs whose summary holds excess risks (diverged: some repeats were dropped)
PROBLEMS = ("failed", "running", "corrupt", "missing")  # reported by aggregate, report and compare_bayes
REPLICATE = "seed"  # the override whose values are replicates, not a parameter
NOT_PARAMETERS = ("resume", "logger")  # overrides that do not change a job's numbers (as in hydra.job.config.override_dirname)


@dataclass
class Job:
    """One job folder of a sweep (or one run folder): its overrides, its summary and what state it is in.

    ``status``: the summary's (``ok``, ``diverged``, ``failed``, ``running``), or ``failed`` when the job wrote no
    summary but logged an error (e.g. an invalid configuration), ``corrupt`` when a file does not parse, ``missing``
    when there is no summary and no error (not started yet, or killed before it wrote anything).
    """

    path: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    summary: dict | None = None
    status: str = "missing"
    error: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


def is_job_dir(path: Path) -> bool:
    """A run folder: Hydra's ``.hydra/`` or our ``summary.json`` is there."""
    return (path / ".hydra").is_dir() or (path / "summary.json").is_file()


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders under ``sweep_dir`` (any depth, not inside another job, hidden folders skipped), sorted."""
    sweep_dir = Path(sweep_dir)
    if is_job_dir(sweep_dir):
        return [sweep_dir]
    found, stack = [], [sweep_dir]
    while stack:
        d = stack.pop()
        try:
            children = [c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")]
        except OSError:
            continue
        for c in children:
            (found if is_job_dir(c) else stack).append(c)
    return sorted(found)


def parse_value(text: str) -> Any:
    """An override's value as Hydra wrote it (``10``, ``1e-3``, ``null``, ``erf``) -> int, float, bool, None or str."""
    low = text.strip().lower()
    if low in ("null", "~"):  # as Hydra reads an override: "none" is a string (predictor.norm=none)
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip().strip("'\"")


def parse_overrides(lines: Iterable[str]) -> dict[str, Any]:
    """``["task.d=10", "+x=1", "hydra/launcher=joblib"]`` -> ``{"task.d": 10, "x": 1, "hydra/launcher": "joblib"}``."""
    out = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        if sep:
            out[key.lstrip("+~")] = parse_value(value)
    return out


def read_overrides(job_dir: Path) -> dict[str, Any]:
    """The job's command-line and sweep overrides from ``.hydra/overrides.yaml`` but :data:`NOT_PARAMETERS`;
    raises ValueError if the file is corrupt."""
    path = Path(job_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    try:
        lines = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path.name} does not parse ({type(exc).__name__})") from exc
    if not isinstance(lines, list):
        raise ValueError(f"{path.name} is not a list of overrides")
    return {k: v for k, v in parse_overrides(lines).items() if k not in NOT_PARAMETERS}


def _logged_error(job_dir: Path) -> str | None:
    """The first ERROR message of the job's log (``slr.log``, or any ``*.log``), if any."""
    for log in sorted(Path(job_dir).glob("*.log")):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        m = re.search(r"\]\[ERROR\] (.*)", text)
        if m:
            return m.group(1).strip()
    return None


def read_job(job_dir: Path) -> Job:
    """Read one job folder; any problem becomes its ``status`` and ``error``."""
    job = Job(Path(job_dir))
    errors = []
    try:
        job.overrides = read_overrides(job.path)
    except ValueError as exc:
        errors.append(str(exc))
    summary_path = job.path / "summary.json"
    if summary_path.is_file():
        job.summary = read_json(summary_path)
        if not isinstance(job.summary, dict):
            job.summary = None
            job.status = "corrupt"
            errors.insert(0, "summary.json does not parse")
        else:
            job.status = str(job.summary.get("status", "corrupt"))
            if job.summary.get("error"):
                errors.insert(0, str(job.summary["error"]))
            if job.status in FINISHED and not isinstance(job.summary.get("excess"), dict):
                job.status = "corrupt"
                errors.append("summary.json has no excess risks")
    else:
        logged = _logged_error(job.path)
        if logged:
            job.status = "failed"
            errors.insert(0, logged)
        else:
            job.status = "missing"
            errors.append("no summary.json: not started, or killed before it wrote one")
    if errors and job.status in FINISHED:  # e.g. a finished job whose overrides.yaml is damaged
        job.status = "corrupt"
    job.error = "; ".join(errors) or None
    return job


def read_sweep(sweep_dir: Path) -> list[Job]:
    """Every job folder of a sweep (a run folder gives itself), read with :func:`read_job`, in the order of their
    swept values (numbers by value; the first swept key varies slowest)."""
    jobs = [read_job(p) for p in find_job_dirs(sweep_dir)]
    keys = swept_keys(jobs)

    def order(v):
        return (0, v, "") if _is_number(v) else (1, 0, str(v))

    return sorted(jobs, key=lambda j: (*(order(j.overrides.get(k)) for k in keys), str(j.path)))


def problems(jobs: Sequence[Job]) -> list[Job]:
    """Jobs that did not finish: failed, running, corrupt or missing."""
    return [j for j in jobs if j.status not in FINISHED]


def swept_keys(jobs: Sequence[Job]) -> list[str]:
    """Override keys whose value differs between jobs, in the order they first appear."""
    keys = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    return [k for k in keys if len({repr(j.overrides.get(k)) for j in jobs}) > 1]


# ----- one flat row per job -------------------------------------------------------------------------------------
def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": scalar}``; lists (per-repeat values) are left out."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif not isinstance(obj, (list, tuple)) and prefix:
        out[prefix[:-1]] = obj
    return out


def job_row(job: Job) -> dict[str, Any]:
    """``job``, ``status``, ``error``, the overrides, then every scalar of the summary under its dotted path."""
    summary = flatten(job.summary or {})
    summary.pop("status", None)
    summary.pop("error", None)
    row = {"job": job.name, "status": job.status, "error": job.error, **job.overrides}
    row.update({k: v for k, v in summary.items() if k not in row})
    row["path"] = str(job.path)
    return row


def sweep_table(jobs: Sequence[Job]) -> pd.DataFrame:
    """One row per job (:func:`job_row`): ``job``, ``status``, ``error``, the overrides, the summary, ``path``."""
    rows = [job_row(j) for j in jobs]
    over = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    rest = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("job", "status", "error", "path", *over)]
    return pd.DataFrame(rows, columns=["job", "status", "error", *over, *rest, "path"])


# ----- excess risks of every predictor ---------------------------------------------------------------------------
def headline(entry: dict) -> tuple[float, float, str]:
    """The number that stands for a predictor in a sweep: ``(value, standard_error, source)``.

    A closed form when the summary has one for a single predictor (exact: standard error 0); for the Bayes-optimal
    estimator the importance-sampling estimate when present; otherwise the Monte Carlo mean (over repeats for a
    trained predictor, whose closed form is a median over repeats and so not comparable with its mean).
    """
    if entry.get("closed_form") is not None and "per_repeat" not in entry:
        return float(entry["closed_form"]), 0.0, "closed form"
    if entry.get("importance_sampling") is not None:
        se = float(entry.get("importance_sampling_se") or 0.0)
        return float(entry["importance_sampling"]), se, "importance sampling"
    mc, se = entry.get("mc"), entry.get("se")
    return (float("nan") if mc is None else float(mc)), (float("nan") if se is None else float(se)), "Monte Carlo"


def excess_long(jobs: Sequence[Job], keys: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per finished job and predictor: the job's overrides, ``estimator`` (the summary key: ``trained``,
    ``bayes``...; not ``predictor``, which is an override), ``estimator_name``, ``lam`` (if the predictor has one),
    ``value``, ``se``, ``source`` (see :func:`headline`) and the Monte Carlo
    ``mc``, ``mc_se``, ``over_bayes``, ``over_bayes_se``, and ``log10`` (the importance-sampling estimate's base-10
    logarithm, which stays finite where the estimate underflows to 0). ``keys`` restricts the predictors."""
    rows = []
    for job in jobs:
        if job.status not in FINISHED or not job.summary:
            continue
        for key, entry in job.summary.get("excess", {}).items():
            if (keys is not None and key not in keys) or not isinstance(entry, dict):
                continue
            value, se, source = headline(entry)
            rows.append(dict(job.overrides, job=job.name, estimator=key, estimator_name=entry.get("name", key),
                             lam=entry.get("lam"), value=value, se=se, source=source, mc=entry.get("mc"),
                             mc_se=entry.get("se"), over_bayes=entry.get("over_bayes"),
                             over_bayes_se=entry.get("over_bayes_se"), log10=entry.get("importance_sampling_log10")))
    return pd.DataFrame(rows)


def trained_diagnostics(jobs: Sequence[Job]) -> pd.DataFrame:
    """What each finished job's trained predictor converged to: one row per job with its overrides,
    ``estimator_name``, ``attention_on_J0`` (the median over repeats of the mean attention weight on the informative
    token) and ``abs_kappa``, ``abs_nu`` (medians over repeats of ``|kappa|``, ``|nu|``: of ``k``, ``v`` for
    attention, of the effective key and value directions for a transformer, docs/transformer.md); missing values are
    NaN."""
    rows = []
    for job in jobs:
        if job.status not in FINISHED or not job.summary:
            continue
        trained = (job.summary.get("excess") or {}).get("trained")
        if not isinstance(trained, dict):
            continue
        med = (job.summary.get("final_overlaps") or {}).get("median_abs") or {}
        rows.append(dict(job.overrides, job=job.name, estimator_name=trained.get("name", "trained"),
                         attention_on_J0=_float(trained.get("attention_on_J0")), abs_kappa=_float(med.get("kappa")),
                         abs_nu=_float(med.get("nu"))))
    return pd.DataFrame(rows)


def prior_as_weight(jobs: Sequence[Job]) -> None:
    """A swept position prior (``task.prior=uniform`` or ``[w1,...,wL]``) as one number, its normalised weight on the
    first position (``1/L`` for uniform), so that a sweep over priors has a numeric axis (``docs/variants.md``)."""
    for job in jobs:
        value = job.overrides.get("task.prior")
        if value is None:
            continue
        L = ((job.summary or {}).get("task") or {}).get("L")
        if value == "uniform" and L:
            job.overrides["task.prior"] = 1.0 / L
        elif isinstance(value, str) and value.startswith("["):
            try:
                w = [float(x) for x in value.strip("[]").split(",")]
                job.overrides["task.prior"] = w[0] / sum(w)
            except (ValueError, ZeroDivisionError):
                pass


def _float(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def choose_axis(jobs: Sequence[Job], replicate: str = REPLICATE) -> tuple[str | None, list[str]]:
    """The swept parameter to put on the x axis and the other swept overrides (groups, one curve each).

    The replicate override (``seed``) is never the axis. Among the others the axis is the numeric one with the most
    distinct values (the first such in the command line on a tie); ``None`` when nothing but seeds varies.
    """
    varying = [k for k in swept_keys(jobs) if k != replicate]
    numeric = [k for k in varying if all(_is_number(j.overrides.get(k)) for j in jobs if k in j.overrides)]
    if not numeric:
        return None, varying
    x = max(numeric, key=lambda k: (len({j.overrides.get(k) for j in jobs}), -varying.index(k)))
    return x, [k for k in varying if k != x]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def over_replicates(long: pd.DataFrame, x: str | None, groups: Sequence[str] = ()) -> pd.DataFrame:
    """Mean over replicates (seeds) per predictor, group and x: ``value``, ``se``, ``n`` (replicates), ``lam``, and
    ``log10`` (mean of the replicates' log10 estimates, where the summaries have one: Bayes by importance sampling).

    The standard error is the spread over replicates, ``sd/sqrt(n)``, when there are several that differ, and the
    job's own standard error (Monte Carlo, or 0 for a closed form) when there is one or when all are equal (the
    importance-sampling Bayes excess, computed once per task for every seed, or a closed form).
    """
    by = ["estimator", "estimator_name", *groups, *([x] if x else [])]
    rows = []
    for keys, g in long.groupby(by, sort=False, dropna=False):
        v = g["value"].to_numpy(float)
        ok = np.isfinite(v)
        n = int(ok.sum())
        if n == 0:
            continue
        scale = float(np.nanmax(np.abs(v))) or 1.0  # tiny values (Bayes at large d) would square to 0
        mean = float(np.nanmean(v))
        se = (float(np.nanstd(v / scale, ddof=1) / math.sqrt(n)) * scale if n > 1 and np.ptp(v[ok]) > 0
              else float(g["se"].to_numpy(float)[ok][0]))
        lam = g["lam"].dropna()
        log10 = g["log10"].astype(float) if "log10" in g else pd.Series(dtype=float)
        rows.append(dict(zip(by, keys), value=mean, se=se, n=n, lam=float(lam.mean()) if len(lam) else np.nan,
                         source=g["source"].iloc[0], log10=float(log10.mean()) if log10.notna().any() else np.nan))
    return pd.DataFrame(rows)


def series(means: pd.DataFrame, x: str | None, groups: Sequence[str] = (), bayes_key: str = "bayes") -> pd.DataFrame:
    """Curves to draw: :func:`over_replicates` rows with a ``label`` per curve, and ``ratio`` (to Bayes), ``ratio_se``.

    A predictor that does not depend on the groups (equal values in every group at each x, e.g. the Bayes-optimal
    estimator when only the trained predictor changes) is one curve, averaged over the groups; otherwise one curve
    per group, its label naming the group. Labels add the predictor's ``lam`` when it is one value along the curve
    and its range when it varies.
    """
    groups = list(groups)
    parts = []
    for (key, name), g in means.groupby(["estimator", "estimator_name"], sort=False):
        collapse = not groups or _same_across(g, x, groups)
        if collapse:
            keep = [c for c in ("estimator", "estimator_name", *([x] if x else [])) if c in g]
            agg = g.groupby(keep, sort=False, dropna=False).agg(value=("value", "mean"), se=("se", "mean"),
                                                                n=("n", "sum"), lam=("lam", "mean"),
                                                                source=("source", "first"),
                                                                log10=("log10", "mean")).reset_index()
            agg["label"] = _label(name, agg, x)
            parts.append(agg)
        else:
            for gv, sub in g.groupby(groups, sort=False, dropna=False):
                gv = gv if isinstance(gv, tuple) else (gv,)
                sub = sub.copy()
                sub["label"] = _label(name, sub, x) + _group_text(groups, gv)
                parts.append(sub)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if out.empty:
        return out
    out["ratio"], out["ratio_se"] = np.nan, np.nan
    bayes = out[out["estimator"] == bayes_key]
    at = {}  # x -> (Bayes excess, its standard error)
    for xv, b in (bayes.groupby(x, sort=False) if x else [(None, bayes)]):
        at[xv] = (float(b["value"].mean()), float(b["se"].mean()))
    for i, row in out.iterrows():
        bv, bse = at.get(row[x] if x else None, (np.nan, np.nan))
        v, se = row["value"], row["se"]
        if bv > 0 and np.isfinite(v):
            r = v / bv
            out.at[i, "ratio"] = r
            out.at[i, "ratio_se"] = abs(r) * math.hypot(se / v if v else 0.0, bse / bv)
    return out


def _group_text(groups: Sequence[str], values: Sequence[Any]) -> str:
    """`` [train.lr=0.5, task.L=3]`` for a curve's group; an override that the curve's jobs do not have (a key swept
    in one sweep only, whose value :func:`fill_from_config` could not find) is left out, never shown as ``nan``."""
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(groups, values) if not _missing(v)]
    return " [" + ", ".join(parts) + "]" if parts else ""


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def config_value(job: Job, key: str) -> Any:
    """The value of a dotted ``key`` (``train.lr``) in the job's composed config, ``.hydra/config.yaml``, as written
    there (an interpolation ``${...}`` stays a string); None if the file or the key is absent or does not parse."""
    path = job.path / ".hydra" / "config.yaml"
    try:
        node = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, (int, float, str, bool)) else None


def fill_from_config(jobs: Sequence[Job], keys: Sequence[str]) -> None:
    """Give every job a value for each of ``keys`` that is not among its overrides: the one its composed config used
    (jobs of two sweeps of which only one swept ``train.lr`` then both carry ``train.lr``, as numbers)."""
    for job in jobs:
        for key in keys:
            if key and key not in job.overrides:
                value = config_value(job, key)
                if value is not None:
                    job.overrides[key] = value


def _same_across(g: pd.DataFrame, x: str | None, groups: list[str]) -> bool:
    """Whether a predictor's values agree (to 1e-9 relative) across the groups at every x that several groups share."""
    if g[groups].drop_duplicates().shape[0] < 2:
        return True
    for _, at_x in (g.groupby(x) if x else [(None, g)]):
        v = at_x["value"].to_numpy(float)
        if len(v) > 1 and not np.allclose(v, v[0], rtol=1e-9, atol=0.0, equal_nan=True):
            return False
    return True


def _label(name: str, rows: pd.DataFrame, x: str | None) -> str:
    with_lam = rows.dropna(subset=["lam"])
    lam = with_lam["lam"].to_numpy(float)
    if lam.size == 0:
        label = name
    elif np.allclose(lam, lam[0], rtol=1e-6):
        label = f"{name}, λ={lam[0]:.3g}"
    elif x is not None and np.allclose(lam, with_lam[x].to_numpy(float), rtol=1e-6):
        label = f"{name}, λ on the x axis"
    elif f"{lam.min():.2g}" == f"{lam.max():.2g}":
        label = f"{name}, λ≈{lam.min():.2g}"
    else:
        label = f"{name}, λ from {lam.min():.2g} to {lam.max():.2g}"
    if (rows["source"] == "importance sampling").all():
        label += " (importance sampling)"
    elif (rows["source"] == "importance sampling").any():  # e.g. the paper's task by IS, its variants by Monte Carlo
        label += " (importance sampling where available, else Monte Carlo)"
    return label


def wide(curves: pd.DataFrame, x: str | None, column: str = "value", se: str = "se", digits: int = 3) -> pd.DataFrame:
    """``x`` down, one column per curve, cells ``value ± se`` (``value`` alone when the error is 0)."""
    def cell(v, e):
        if not np.isfinite(v):
            return ""
        return f"{v:.{digits}g}" if not e or not np.isfinite(e) else f"{v:.{digits}g} ± {e:.2g}"

    c = curves.assign(cell=[cell(v, e) for v, e in zip(curves[column], curves[se])])
    if x is None:
        return c.set_index("label")[["cell"]].rename(columns={"cell": column}).T
    order = list(dict.fromkeys(c["label"]))
    table = c.pivot_table(index=x, columns="label", values="cell", aggfunc="first")
    return table.reindex(columns=order).fillna("")
