"""Output folders as pandas tables: :func:`load_run` (one run folder) and :func:`load_sweep` (a sweep folder, one row
per job), both read through :func:`slr.results.sweep.read_job`, the one reader of a job folder.

    from slr.results import load_run, load_sweep
    run = load_run("outputs/runs/2026-01-01/12-00-00_000000")
    run.config.task.d, run.summary["excess"]["trained"]["mc"], run.metrics.plot(x="step", y="kappa")
    sw = load_sweep("outputs/multirun/2026-01-01/12-00-00_000000")
    sw[["task.d", "seed", "status", "excess.trained.mc"]]      # overrides typed, summary numbers under dotted names
    sns.lineplot(sw.metrics(), x="step", y="kappa", hue="task.d")   # every job's curves, long form

A sweep's failed, running, corrupt and missing jobs are rows with their ``status`` and ``error`` (``sw.problems()``),
never an exception. See ``docs/analysis.md``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from slr.io import METRIC_COLUMNS
from slr.results import sweep as _sweep


class ResultsError(ValueError):
    """A folder that is not what the loader was asked to read (not a run, not a sweep, a run not finished)."""


def read_metrics(path: Path) -> pd.DataFrame:
    """``metrics.csv`` as a DataFrame (one row per logged step and repeat); a last line cut short by an interruption
    is dropped, an empty file gives an empty table with the standard columns."""
    text = Path(path).read_text()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return pd.read_csv(io.StringIO(text)) if text else pd.DataFrame(columns=list(METRIC_COLUMNS))


@dataclass
class Run:
    """One run folder: ``config`` (the composed config, an OmegaConf DictConfig; None if ``.hydra/`` is absent),
    ``overrides`` (typed), ``summary`` (summary.json as a dict), ``status``, ``error`` and ``metrics`` (metrics.csv)."""

    path: Path
    config: Any
    overrides: dict
    summary: dict
    status: str
    error: str | None
    metrics: pd.DataFrame

    @property
    def finished(self) -> bool:
        return self.status in _sweep.FINISHED


def load_run(path: str | Path, *, allow_unfinished: bool = False) -> Run:
    """Read a run folder (or one job folder of a sweep).

    Raises :class:`ResultsError` when ``path`` is not a run folder (no ``.hydra/`` and no ``summary.json``), and
    when the run is half-written (still running, failed, killed before it wrote its summary, or a file does not parse)
    unless ``allow_unfinished=True``, which returns what is there (a missing metrics.csv gives an empty table).
    """
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_dir():
        raise ResultsError(f"load_run: {path} is not a folder")
    if not _sweep.is_job_dir(path):
        hint = " (it holds job folders: use load_sweep)" if _sweep.find_job_dirs(path) else ""
        raise ResultsError(f"load_run: {path} is not a run folder: it has neither .hydra/ nor summary.json{hint}")
    job = _sweep.read_job(path)
    if not allow_unfinished and job.status not in _sweep.FINISHED:
        raise ResultsError(f"load_run: {path} holds an unfinished run (status {job.status}: {job.error}); "
                           "load_run(path, allow_unfinished=True) reads what is there")
    config = None
    config_path = path / ".hydra" / "config.yaml"
    if config_path.is_file():
        try:
            config = OmegaConf.load(config_path)
        except Exception as exc:  # a cut or damaged YAML file
            if not allow_unfinished:
                raise ResultsError(f"load_run: {config_path} does not parse ({type(exc).__name__}: {exc})") from exc
    metrics_path = path / "metrics.csv"
    if metrics_path.is_file():
        metrics = read_metrics(metrics_path)
    elif allow_unfinished:
        metrics = pd.DataFrame(columns=list(METRIC_COLUMNS))
    else:
        raise ResultsError(f"load_run: {path} has no metrics.csv")
    return Run(path=path, config=config, overrides=job.overrides, summary=job.summary or {}, status=job.status,
               error=job.error, metrics=metrics)


class Sweep(pd.DataFrame):
    """A sweep as a table, one row per job (:func:`load_sweep`); a filtered or sliced Sweep is still one, so
    ``sw[sw["task.d"] == 10].metrics()`` gives those jobs' curves."""

    _metadata = ["sweep_dir", "overrides"]

    @property
    def _constructor(self):
        return Sweep

    def finished(self) -> "Sweep":
        """The jobs whose summary holds results (status ``ok`` or ``diverged``)."""
        return self[self["status"].isin(_sweep.FINISHED)]

    def problems(self) -> "Sweep":
        """The failed, running, corrupt and missing jobs, with their ``error``."""
        return self[~self["status"].isin(_sweep.FINISHED)]

    def metrics(self, include_unfinished: bool = False) -> pd.DataFrame:
        """Every job's ``metrics.csv`` in long form: ``job``, the override columns, then the metrics columns
        (``step``, ``repeat``, ``kappa``...). Finished jobs only unless ``include_unfinished`` (a running job's
        rows so far); a job without a readable metrics.csv adds no row."""
        rows = self if include_unfinished else self.finished()
        over = [k for k in (getattr(self, "overrides", None) or []) if k in self.columns]
        parts = []
        for _, row in rows.iterrows():
            path = Path(row["path"]) / "metrics.csv"
            try:
                m = read_metrics(path)
            except (OSError, ValueError, pd.errors.ParserError):
                continue
            if m.empty:
                continue
            m.insert(0, "job", row["job"])
            for i, k in enumerate(over, start=1):
                m.insert(i, k, row[k])
            parts.append(m)
        if not parts:
            return pd.DataFrame(columns=["job", *over, *METRIC_COLUMNS])
        return pd.concat(parts, ignore_index=True)


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep folder: one row per job folder found under ``path`` (any depth), in the order of the swept values.

    Columns: ``job`` (folder name), ``status`` (ok, diverged, failed, running, corrupt, missing), ``error``, the
    overrides (typed: int, float, bool or str; missing where a job has no such override), then every scalar of the
    job's summary.json under its dotted name (``excess.trained.mc``, ``timings.total_s``...; per-repeat lists left
    out), and ``path``. Unfinished jobs are rows, never an exception; raises :class:`ResultsError` when ``path`` holds
    no job folder at all (or is a single run: use :func:`load_run`).
    """
    path = Path(path)
    if not path.is_dir():
        raise ResultsError(f"load_sweep: {path} is not a folder")
    if _sweep.is_job_dir(path):
        raise ResultsError(f"load_sweep: {path} is a single run folder, not a sweep: use load_run")
    jobs = _sweep.read_sweep(path)
    if not jobs:
        raise ResultsError(f"load_sweep: {path} is not a sweep: no job folder (with .hydra/ or summary.json) under it")
    table = Sweep(_sweep.sweep_table(jobs))
    table.sweep_dir = path
    table.overrides = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    return table
