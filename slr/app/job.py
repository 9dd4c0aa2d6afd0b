"""The life of a job, shared by ``slr`` and ``slr-landscape``: the run folder (``summary.json`` from ``running`` to
``ok``/``diverged``/``failed``), resume, signals, and how a job exits (2 for a refused config)."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig

from slr.app.config import ConfigError, compose_refusal, digest
from slr.io import read_json, write_json

log = logging.getLogger("slr")


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


def run_in_folder(cfg: DictConfig, out_dir: str | Path | None, check_config, body, what: str) -> dict:
    """The life of a run folder, shared by ``slr`` and ``slr-landscape``: refuse an invalid config before anything is
    written (``check_config``), write ``summary.json`` with status ``running``, run ``body(cfg, out, summary, t_start)``,
    and on any exception record status ``failed`` with the error (the traceback goes to the log) before re-raising.
    Returns the summary."""
    check_config(cfg)
    with logged_before_the_run(what):
        out = Path(out_dir) if out_dir is not None else (_hydra_output_dir() or Path.cwd())
        out.mkdir(parents=True, exist_ok=True)
        import slr.core.evaluate, slr.training.algorithms  # noqa: E401,F401  the job's modules (torch...), before the
                                                           # clock starts
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
        raise
    return summary


@contextlib.contextmanager
def logged_before_the_run(command: str):
    """Log a failure (with its traceback) of what runs before a run folder records its own failures; re-raise it."""
    try:
        yield
    except Exception:
        log.exception("%s failed before the run started", command)
        raise


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


@contextlib.contextmanager
def job_exits(cfg: DictConfig, command: str):
    """How a job of ``slr`` or ``slr-landscape`` ends: a refused config prints its paragraph and exits with code 2; a
    failure exits with code 1 after :func:`run_in_folder` has recorded it (summary.json, and the traceback in the job's
    log, which the console shows too; :func:`logged_before_the_run` logs one before the folder exists), and so does a
    run whose ODE solver failed (status failed, the solver's message, no traceback; a multirun goes on); Ctrl-C (exit
    130) and, outside multiruns, SIGTERM (exit 143) are recorded as
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
    except Exception:
        if _in_multirun():
            raise
        sys.exit(1)  # logged already (run_in_folder, logged_before_the_run); Hydra would print the traceback again
    except KeyboardInterrupt as exc:
        if _in_multirun():
            raise
        how = str(exc) if isinstance(exc, Terminated) else "interrupted"
        print(f"{command}: {how}; summary.json records status failed", file=sys.stderr)
        sys.exit(143 if isinstance(exc, Terminated) else 130)



@contextlib.contextmanager
def compose_errors_refused(command: str):
    """How ``slr`` and ``slr-landscape`` refuse a command line that Hydra cannot compose (``task.d=1e3``,
    ``figures.png=true``, ``predictor=foo``): like every other bad input, one :class:`ConfigError` paragraph naming
    the field on stderr, exit code 2, no run folder. ``HYDRA_FULL_ERROR`` makes Hydra raise its errors instead of
    printing them; any other error is handed back to Hydra's own report (``HYDRA_FULL_ERROR`` set by the user
    keeps its meaning)."""
    from hydra._internal.utils import run_and_report

    ours = "HYDRA_FULL_ERROR" not in os.environ
    if ours:
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except Exception as exc:
        err = compose_refusal(exc, [a for a in sys.argv[1:] if not a.startswith("-")])
        if err is not None:
            print(err, file=sys.stderr)
            sys.exit(2)
        if not ours:
            raise
        os.environ.pop("HYDRA_FULL_ERROR", None)

        def again():
            raise exc

        run_and_report(again)  # Hydra's report of its other errors (a multirun's failed jobs...): exit 1
    finally:
        if ours:
            os.environ.pop("HYDRA_FULL_ERROR", None)
