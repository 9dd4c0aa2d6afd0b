"""The validation of a config and the readers of its values.

Hydra rejects a wrong type or an unknown key of the schema (:mod:`slr.app.schema`) when the config is composed; :func:`check`
adds the ranges, the choices and the combinations that a type cannot express, and the keys that ``+key=value``
slipped past the schema. Every refusal is one :class:`ConfigError` paragraph naming the field; the :class:`Validate`
callback (``conf/config.yaml``) makes ``python -m slr`` refuse an invalid run before Hydra creates its folder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sys
from typing import Any

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from slr.app.schema import (INIT_NAMES, MODULE_PREDICTORS, PREDICTOR_SCHEMAS, TRAIN_SCHEMAS, Config, EvalConfig,
                            LandscapeAppConfig, LandscapeConfig, PredictorConfig, ProbeAppConfig, ProbeConfig,
                            TaskConfig, TextConfig)

def figure_formats(cfg: DictConfig) -> tuple[str, ...]:
    """The file formats of a run's figures: none with ``figures=false``, PNG by default (and with
    ``figures=true``), PNG and PDF with ``figures.pdf=true``."""
    fig = cfg.get("figures", True)
    if fig is False:
        return ()
    return ("png", "pdf") if isinstance(fig, DictConfig) and fig.get("pdf") is True else ("png",)


def is_module(cfg: DictConfig) -> bool:
    """Whether the run trains a torch module (docs/transformer.md) rather than (k, v) attention."""
    return OmegaConf.select(cfg, "predictor.name") in MODULE_PREDICTORS


# ----- validation --------------------------------------------------------------------------------------------------
class ConfigError(ValueError, CompactHydraException):
    """An invalid configuration, explained in one paragraph that names the field, the value and what is allowed.

    A :class:`~hydra.errors.CompactHydraException`, so that Hydra prints it without a traceback when it ends a
    multirun job; it pickles by its fields, so that it crosses the joblib launcher's process boundary intact.
    """

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"Invalid configuration: {key}={value!r} is not allowed; {key} must be {allowed}. "
                         f"Nothing was run. Fix it on the command line (`{key}=...`) "
                         f"or in the preset, and run again.")

    def __reduce__(self):
        return type(self), (self.key, self.value, self.allowed)


class Validate(Callback):
    """Hydra callback (``hydra.callbacks.validate`` in ``conf/config.yaml``): refuse an invalid single run before
    Hydra creates its run folder, with the :class:`ConfigError` paragraph on stderr and exit code 2.

    Multirun jobs are checked one by one when they start (by :func:`slr.app.run.run`), since each has its own config.
    """

    @staticmethod
    def check(cfg: DictConfig) -> None:
        check(cfg)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        job_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            self.check(job_cfg)
        except ConfigError as err:
            print(err, file=sys.stderr)
            sys.exit(2)


_CONVERTED = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def compose_refusal(exc: BaseException, args: list[str]) -> ConfigError | None:
    """Hydra's own refusal of the command line (a value of the wrong type, an unknown key, an unknown option of a
    group, an override that does not parse) as a :class:`ConfigError` naming the field; None for any other error.
    ``args``: the command line's overrides, from which the value given is quoted."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    def given(key: str):
        for arg in args:
            name, eq, value = arg.lstrip("+~").partition("=")
            if eq and name == key:
                return value
        return None

    cause = exc.__cause__
    if isinstance(exc, ConfigCompositionException) and isinstance(cause, OmegaConfBaseException) \
            and getattr(cause, "full_key", None):
        key, first = str(cause.full_key), str(cause).splitlines()[0]
        converted = re.search(r"converted to (\w+)", first)
        if converted:
            what = _CONVERTED.get(converted.group(1), f"of type {converted.group(1)}")
            return ConfigError(key, given(key), f"{what} ({first})")
        parent, _, leaf = key.rpartition(".")
        return ConfigError(key, given(key), f"absent: {parent or 'the config'} has no field {leaf!r} (check the "
                           "spelling; `slr --help` prints every option with its default)")
    if isinstance(exc, MissingConfigException):
        text = str(exc)
        found = re.search(r"Could not find '([^']+)/([^']+)'", text)
        if found:
            group, option = found.groups()
            options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.M)
            return ConfigError(group, option, "one of " + ", ".join(options) if options else "an existing option")
        return ConfigError("the config", None, f"an existing config ({text.splitlines()[0]})")
    if isinstance(exc, (OverrideParseException, ConfigCompositionException)):
        bad = next((a for a in args if not _parses(a)), None) or next((a for a in args if a in str(exc)), None)
        name, _, value = (bad or "override").lstrip("+~").partition("=")
        why = " ".join(str(exc).split()).split(" See ")[0][:200]
        return ConfigError(name, value or bad, f"key=value in Hydra's override grammar ({why})")
    return None


def _parses(arg: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        OverridesParser.create().parse_overrides([arg])
        return True
    except Exception:
        return False


def _number(cfg: DictConfig, key: str, *, low: float | None = None, low_open: bool = False,
            integer: bool = False, optional: bool = False, what: str | None = None) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and optional:
        return
    rng = what or (f"{'an integer' if integer else 'a finite number'}"
                   + ("" if low is None else f" {'>' if low_open else '>='} {low:g}"))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, value, rng)
    if integer and not isinstance(value, int):
        raise ConfigError(key, value, rng)
    if not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)):
        raise ConfigError(key, value, rng)


def _choice(cfg: DictConfig, key: str, choices: tuple, *, optional: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and optional:
        return
    if value not in choices:
        raise ConfigError(key, value, "one of " + ", ".join(map(str, choices)) + (" or null" if optional else ""))


def _unknown_keys(node: DictConfig, schema: type, prefix: str) -> None:
    names = {f.name: f for f in dataclasses.fields(schema)}
    for key in node.keys():
        if key not in names:
            raise ConfigError(f"{prefix}{key}", node[key], f"absent: {schema.__name__} has no such field "
                              f"(known: {', '.join(names)})")
        sub = names[key].type
        sub = {"TaskConfig": TaskConfig, "PredictorConfig": PredictorConfig, "EvalConfig": EvalConfig,
               "LandscapeConfig": LandscapeConfig, "TextConfig": TextConfig, "ProbeConfig": ProbeConfig}.get(sub, sub)
        if isinstance(sub, type) and dataclasses.is_dataclass(sub) and isinstance(node[key], DictConfig):
            _unknown_keys(node[key], sub, f"{prefix}{key}.")


def _figures(cfg: DictConfig) -> None:
    """``figures`` is a bool, or holds only ``pdf``, a bool."""
    fig = cfg.get("figures", True)
    allowed = "true, false (no figures) or, for PNG and PDF, figures.pdf=true"
    if isinstance(fig, DictConfig):
        for key in fig:
            if key != "pdf":
                raise ConfigError(f"figures.{key}", fig[key], f"absent: figures has only the key pdf ({allowed})")
        if not isinstance(fig.get("pdf", False), bool):
            raise ConfigError("figures.pdf", fig.pdf, "true or false (a PDF of each figure beside its PNG)")
    elif not isinstance(fig, bool):
        raise ConfigError("figures", fig, allowed)


LOGGERS = ("csv", "tensorboard")
TENSORBOARD_INSTALL = "pip install 'slr[tensorboard]'"


def tensorboard_available() -> bool:
    """Whether the optional extra ``slr[tensorboard]`` is installed (torch's event writer needs the package)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _logger(cfg: DictConfig) -> None:
    """``logger`` is one of :data:`LOGGERS`, and ``tensorboard`` only with its extra installed (slr-landscape's
    config has no logger: it logs no metrics)."""
    if "logger" not in cfg:
        return
    _choice(cfg, "logger", LOGGERS)
    if cfg.logger == "tensorboard" and not tensorboard_available():
        raise ConfigError("logger", cfg.logger, f"csv: the tensorboard logger needs the optional extra, which is not "
                          f"installed in this environment; install it with {TENSORBOARD_INSTALL} (or pip install "
                          f"tensorboard) and run again with logger=tensorboard")


def check(cfg: DictConfig) -> None:
    """Refuse an invalid run before any work starts: raise :class:`ConfigError` for the first problem found."""
    algo = OmegaConf.select(cfg, "train.algo")
    _choice(cfg, "train.algo", tuple(TRAIN_SCHEMAS))
    schema = OmegaConf.get_type(cfg.train)
    if schema in TRAIN_SCHEMAS.values() and schema is not TRAIN_SCHEMAS[algo]:
        raise ConfigError("train.algo", algo, f"{schema.algo!r}, the algorithm of the train group chosen: "
                          f"choose the algorithm with train={algo}, not train.algo={algo}")
    _unknown_keys(cfg, Config, "")
    _unknown_keys(cfg.train, TRAIN_SCHEMAS[algo], "train.")
    _number(cfg, "seed", low=0, integer=True)
    _number(cfg, "threads", low=1, integer=True)
    _logger(cfg)
    _number(cfg, "task.d", low=2, integer=True, what="an integer >= 2 (k* and v* must be orthogonal)")
    _number(cfg, "task.L", low=1, integer=True)
    if is_custom_task(cfg):
        _custom_task(cfg)
    else:
        _unknown_keys(cfg.task, TaskConfig, "task.")
        _number(cfg, "task.gamma", low=0, low_open=True)
        _number(cfg, "task.eps", low=0)
        _number(cfg, "task.signal", low=0, low_open=True, optional=True,
                what="a finite number > 0, or null for the paper's sqrt(d/2)")
        _choice(cfg, "task.axes", ("random", "fixed"))
        _task_variant(cfg)
        _choice(cfg, "task.name", ("gaussian", "text"))
        if cfg.task.name == "text":
            check_text_task(cfg)
    _choice(cfg, "predictor.name", tuple(PREDICTOR_SCHEMAS))
    _predictor_schema(cfg)
    if not is_module(cfg):  # a torch module has no lam
        _predictor_lam(cfg)
    _number(cfg, "train.steps", low=0, integer=True)
    _number(cfg, "train.lr", low=0, low_open=True)
    _number(cfg, "train.repeats", low=1, integer=True)
    _number(cfg, "train.log_every", low=1, integer=True)
    _number(cfg, "train.schedule_rate", low=0)
    _choice(cfg, "train.init", INIT_NAMES)
    _choice(cfg, "train.lam_schedule", ("constant", "inverse"))
    _choice(cfg, "train.simulator", ("full", "reduced", "ode"))
    _choice(cfg, "train.lr_scale", ("none", "d"))
    if "noise" in cfg.train:
        _number(cfg, "train.noise", low=0)
    for key in ("batch_size", "n_train"):
        if key in cfg.train:
            _number(cfg, f"train.{key}", low=1, integer=True)
    if "log_test_size" in cfg.train:
        _number(cfg, "train.log_test_size", low=0, integer=True)
    if "optimizer" in cfg.train and not is_module(cfg):
        _choice(cfg, "train.optimizer", ("gd", "adam") if algo == "erm" else ("sgd",))
    if "dtype" in cfg.train:
        _choice(cfg, "train.dtype", ("float32", "float64"))
    _figures(cfg)
    _number(cfg, "eval.n_test", low=2, integer=True)
    _number(cfg, "eval.bayes_is", low=0, integer=True)
    _choice(cfg, "eval.simulator", ("full", "reduced"), optional=True)
    _module_training(cfg)
    if algo == "none" and cfg.train.steps != 0:
        raise ConfigError("train.steps", cfg.train.steps, "0 with train=none (the predictor is evaluated at its "
                          "initialisation; choose train=sgd, pgd or erm to train it)")
    if algo == "pgd" and cfg.predictor.name != "erf":
        raise ConfigError("predictor", cfg.predictor.name, "erf with train=pgd: only erf attention has a "
                          "closed-form population risk to descend (use train=sgd or train=erm for softmax)")
    if algo == "flow":
        _flow(cfg)
    if algo == "erm" and cfg.train.simulator == "reduced":
        raise ConfigError("train.simulator", "reduced", "full with train=erm: a fixed training set pulls k and v "
                          "out of any low-dimensional span, so ERM has no exact reduced form")
    if cfg.train.simulator == "ode":
        _ode(cfg)
    reduced = cfg.train.simulator in ("reduced", "ode") or cfg.eval.simulator == "reduced"
    if reduced and cfg.task.d < 5:
        raise ConfigError("task.d", cfg.task.d, ">= 5 with the reduced simulator (the 4-dim span of k*, v*, k, v "
                          "needs a non-empty complement); use train.simulator=full for smaller d")
    if cfg.device != "cpu":
        import torch

        try:
            ok = torch.device(cfg.device).type == "cpu" or (torch.cuda.is_available() and (
                torch.device(cfg.device).index or 0) < torch.cuda.device_count())
        except RuntimeError:
            ok = False
        if not ok:
            raise ConfigError("device", cfg.device, "cpu, or a cuda device that this machine has "
                              f"(cuda available: {torch.cuda.is_available()})")


def _ode(cfg: DictConfig) -> None:
    """``train.simulator=ode``: the high-dimensional limit of online projected SGD of erf attention only."""
    algo = cfg.train.algo
    if algo != "sgd":
        raise ConfigError("train.simulator", "ode", f"full or reduced with train={algo}: the ode simulator is the "
                          "high-dimensional limit of online SGD (train=sgd); a fixed training set (erm) has no such "
                          "limit, and PGD's continuous-time limit is train=flow")
    if cfg.predictor.name != "erf":
        raise ConfigError("train.simulator", "ode", f"full or reduced with predictor={cfg.predictor.name}: the limit "
                          "ODE is derived for erf attention (its closed-form risk and Gaussian moments); "
                          "use predictor=erf")
    if not cfg.train.projected:
        raise ConfigError("train.projected", "false", "true with train.simulator=ode: the limit is that of projected "
                          "SGD on the unit spheres")
    if cfg.eval.simulator == "full":
        raise ConfigError("eval.simulator", "full", "reduced or null with train.simulator=ode (the ODE tracks "
                          "overlaps, not d-dimensional vectors)")
    if OmegaConf.select(cfg, "task._target_") is not None:
        raise ConfigError("train.simulator", "ode", "full with task=custom: the limit ODE is derived for the "
                          "paper's Gaussian task")
    for key, default in (("task.tokens", "gaussian"), ("task.n_informative", 1)):
        value = OmegaConf.select(cfg, key, default=default)
        if value != default:
            raise ConfigError(key, value, f"{default} with train.simulator=ode: the limit ODE is derived for Gaussian "
                              "tokens and one informative token (use train.simulator=reduced or full)")


def _flow(cfg: DictConfig) -> None:
    """``train=flow``: erf attention only, the reduced evaluator, a solver, tolerances, and a gradient tolerance with
    ``until_converged``."""
    tc = cfg.train
    if cfg.predictor.name != "erf":
        raise ConfigError("predictor", cfg.predictor.name, "erf with train=flow: the gradient flow integrates the ODE of "
                          "the overlaps of erf attention's closed-form risk; softmax attention and torch modules have "
                          "none (train them with train=sgd or train=erm)")
    if tc.simulator != "reduced":
        raise ConfigError("train.simulator", tc.simulator, "reduced with train=flow: the flow has no d-dimensional "
                          "state, and its predictor is evaluated on the exact dimension-free sampler")
    _choice(cfg, "train.method", ("BDF", "Radau", "LSODA"))
    _number(cfg, "train.rtol", low=0, low_open=True)
    _number(cfg, "train.atol", low=0, low_open=True, optional=True,
            what="a finite number > 0, or null for 1e-9/sqrt(d)")
    if tc.rtol >= 0.1:
        raise ConfigError("train.rtol", tc.rtol, "a finite number in (0, 0.1): a relative tolerance of the solver")
    _number(cfg, "train.grad_tol", low=0, low_open=True, optional=True,
            what="a finite number > 0 (the Riemannian gradient norm at which a repeat counts as converged), or null")
    if tc.until_converged and tc.grad_tol is None:
        raise ConfigError("train.grad_tol", None, "a finite number > 0 with train.until_converged=true: the flow stops "
                          "once every repeat's Riemannian gradient norm is at most train.grad_tol (e.g. 1e-8)")


def is_custom_task(cfg: DictConfig) -> bool:
    """Whether ``task`` is a user's task (``task=custom``: it has a ``_target_``)."""
    return "_target_" in cfg.task


def _custom_task(cfg: DictConfig) -> None:
    """A user's task: what of slr needs the paper's Gaussian task is refused, then the task is built and probed."""
    from slr.app.user_code import build_user_task
    from slr.core.custom import TaskError, probe

    target = cfg.task.get("_target_")
    allowed = ("the import path of a class (task._target_=mypkg.MyTask) built with d, L, seed (given by slr) and any "
               "+task.NAME=value, whose sample(n, generator) returns slr.core.task.Batch(X (n, L, d), y (n,), J0, W (n,)) "
               "reproducibly, with optional bayes_predict(X) -> (n,) and k_star, v_star (d,)")
    if not isinstance(target, str) or not target.strip():
        raise ConfigError("task._target_", target, allowed)
    for key, value, why in (("train.simulator", "reduced", "it needs the paper's Gaussian tokens"),
                            ("eval.simulator", "reduced", "it needs the paper's Gaussian tokens"),
                            ("train.algo", "pgd", "population PGD descends the paper's closed-form risk"),
                            ("predictor.lam", "auto", "lam=auto is the best lam of the paper's closed-form oracle")):
        if OmegaConf.select(cfg, key) == value:
            raise ConfigError(key, value, f"something else with task=custom: {why}")
    try:
        probe(build_user_task(cfg))
    except TaskError as err:
        raise ConfigError("task._target_", target, f"{allowed}; here {err}") from None


def task_prior(cfg: DictConfig) -> list[float] | None:
    """``task.prior`` as a list of floats, or None for ``uniform``."""
    prior = OmegaConf.select(cfg, "task.prior")
    return None if prior == "uniform" else [float(x) for x in prior]


def _task_variant(cfg: DictConfig) -> None:
    """The task variants' fields and the combinations they allow (``docs/variants.md``)."""
    L, prior = cfg.task.L, OmegaConf.select(cfg, "task.prior")
    allowed = (f"uniform, or a list of L={L} finite non-negative weights, not all zero "
               f"(task.prior=[0.6,0.1,...]; they are normalised)")
    if prior != "uniform":
        if not isinstance(prior, (list, tuple, ListConfig)) or len(prior) != L:
            raise ConfigError("task.prior", _plain(prior), allowed + (f"; it has {len(prior)} weights"
                              if isinstance(prior, (list, tuple, ListConfig)) else ""))
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0 for x in prior) \
                or not sum(prior) > 0:
            raise ConfigError("task.prior", _plain(prior), allowed)
    _number(cfg, "task.n_informative", low=1, integer=True,
            what=f"an integer between 1 and task.L={L} (the number of informative tokens)")
    s = cfg.task.n_informative
    if s > L:
        raise ConfigError("task.n_informative", s, f"an integer between 1 and task.L={L} (the number of informative "
                          "tokens cannot exceed the sequence length)")
    if s > 1 and prior != "uniform":
        raise ConfigError("task.n_informative", s, "1 with a non-uniform task.prior (a prior is a law of one "
                          "position; with several informative tokens the set is uniform): use task.prior=uniform")
    _choice(cfg, "task.tokens", ("gaussian", "student_t"))
    _number(cfg, "task.df", low=2, low_open=True, what="a finite number > 2 (Student-t degrees of freedom; the "
            "coordinates are scaled to unit variance, which needs df > 2)")
    reduced = cfg.train.simulator == "reduced" or cfg.eval.simulator == "reduced"
    algo = cfg.train.algo
    if cfg.task.tokens == "student_t":
        if reduced:
            key = "train.simulator" if cfg.train.simulator == "reduced" else "eval.simulator"
            raise ConfigError(key, "reduced", "full with task.tokens=student_t: the reduced simulator needs Gaussian "
                              "tokens (their part outside a few directions is an independent isotropic Gaussian)")
        if algo == "pgd":
            raise ConfigError("train", "pgd", "sgd or erm with task.tokens=student_t: population PGD descends the "
                              "closed-form risk, which assumes Gaussian tokens")
    if s > 1 and algo == "flow":
        raise ConfigError("train", "flow", "pgd, sgd, erm or none with task.n_informative > 1: the gradient flow's ODE "
                          "is written for one informative token (train=pgd descends the same risk for any s)")


def _plain(value):
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def _predictor_lam(cfg: DictConfig) -> None:
    """``predictor.lam`` of erf or softmax attention: a number > 0, or ``auto`` for erf."""
    if OmegaConf.select(cfg, "predictor.lam") != "auto":
        _number(cfg, "predictor.lam", low=0, low_open=True, what="a finite number > 0, or auto (the erf oracle's best lam)")
    elif cfg.predictor.name != "erf":
        raise ConfigError("predictor.lam", "auto", "a number > 0 with softmax attention: lam=auto is the best lam "
                          "of the erf oracle (theory.best_oracle_lam), which has no softmax counterpart")


def check_landscape(cfg: DictConfig) -> None:
    """:func:`check` for ``slr-landscape``: its task, predictor and train fields as slr's (train must be pgd), then the
    landscape group's ranges."""
    algo = OmegaConf.select(cfg, "train.algo")
    if algo != "pgd":
        raise ConfigError("train", algo, "pgd with slr-landscape: basins are those of population PGD on the closed-form "
                          "risk (choose a preset or overrides with train=pgd)")
    _unknown_keys(cfg, LandscapeAppConfig, "")
    check(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "landscape"]))
    if cfg.task.n_informative != 1:
        raise ConfigError("task.n_informative", cfg.task.n_informative, "1 with slr-landscape: its Newton search and "
                          "Hessian are written for one informative token (slr trains s > 1 with train=pgd)")
    for key in ("starts", "pgd_starts", "basin_repeats"):
        _number(cfg, f"landscape.{key}", low=0, integer=True)
    _number(cfg, "landscape.newton_iter", low=1, integer=True)
    _number(cfg, "landscape.path_points", low=2, integer=True)
    for key in ("grad_tol", "dedup_tol", "zero_tol", "assign_tol", "flow_grad_tol", "flow_time"):
        _number(cfg, f"landscape.{key}", low=0, low_open=True)
    _choice(cfg, "landscape.basin_dynamics", ("pgd", "flow"))


def check_probe(cfg: DictConfig) -> None:
    """:func:`check` for ``slr-probe``: the text group (extra installed, model folder, layer) and the probe's ranges."""
    _unknown_keys(cfg, ProbeAppConfig, "")
    _number(cfg, "seed", low=0, integer=True)
    _number(cfg, "threads", low=1, integer=True)
    _number(cfg, "probe.C", low=0, low_open=True)
    _number(cfg, "probe.max_iter", low=1, integer=True)
    _number(cfg, "probe.token_sentences", low=1, integer=True)
    _figures(cfg)
    check_text(cfg, layer=False)


class ValidateProbe(Validate):
    """:class:`Validate` for ``slr-probe`` (``conf/slr_probe.yaml``)."""

    @staticmethod
    def check(cfg: DictConfig) -> None:
        check_probe(cfg)


class ValidateLandscape(Validate):
    """:class:`Validate` for ``slr-landscape`` (``conf/slr_landscape.yaml``)."""

    @staticmethod
    def check(cfg: DictConfig) -> None:
        check_landscape(cfg)


def initial_lam(cfg: DictConfig, d: int, L: int, gamma: float, signal: float | None, s: int = 1) -> float:
    """The run's ``lam`` (its initial value under a schedule): ``predictor.lam``, or for ``auto`` the erf oracle's
    best ``lam`` for the task (``theory.best_oracle_lam``; Gaussian tokens' with Student-t tokens)."""
    if cfg.predictor.lam == "auto":
        from slr.theory import best_oracle_lam

        return best_oracle_lam(d=d, L=L, gamma=gamma, signal=signal, s=s)[0]
    return float(cfg.predictor.lam)


def learning_rate(cfg: DictConfig, d: int) -> float:
    """The step size used: ``train.lr``, divided by ``d`` with ``train.lr_scale=d``."""
    return cfg.train.lr / d if cfg.train.get("lr_scale", "none") == "d" else cfg.train.lr


def _predictor_schema(cfg: DictConfig) -> None:
    """The predictor group and ``predictor.name`` agree, and no key was added to the group's schema."""
    name = cfg.predictor.name
    schema = OmegaConf.get_type(cfg.predictor)
    if schema in PREDICTOR_SCHEMAS.values() and schema is not PREDICTOR_SCHEMAS[name]:
        names = " or ".join(repr(n) for n, s in PREDICTOR_SCHEMAS.items() if s is schema)
        raise ConfigError("predictor.name", name, f"{names}, given the predictor group chosen: choose the predictor "
                          f"with predictor={name}, not predictor.name={name}")
    _unknown_keys(cfg.predictor, PREDICTOR_SCHEMAS[name], "predictor.")


def _module_training(cfg: DictConfig) -> None:
    """Torch modules (docs/transformer.md): their options, what of the training applies to them, and a probe of a user's
    module.
    For (k, v) attention: the torch-optimiser options stay at their defaults (they apply to modules only)."""
    tc, algo = cfg.train, cfg.train.algo
    extras = {"weight_decay": 0.0, "warmup_steps": 0, "lr_decay": "constant"}
    if not is_module(cfg):
        for key, default in extras.items():
            if key in tc and tc[key] != default:
                raise ConfigError(f"train.{key}", tc[key], f"{default!r} with {cfg.predictor.name} attention (it "
                                  "applies to the torch optimisers of predictor=transformer and predictor=module)")
        return
    name = cfg.predictor.name
    if algo not in ("sgd", "erm"):
        raise ConfigError("train", algo, f"sgd (online: a fresh batch every step) or erm (a fixed training set) with "
                          f"predictor={name}: a torch module has no closed-form risk to descend and no reduced form")
    _choice(cfg, "train.optimizer", ("sgd", "adam", "adamw") if algo == "sgd" else ("gd", "sgd", "adam", "adamw"))
    _number(cfg, "train.weight_decay", low=0)
    _number(cfg, "train.warmup_steps", low=0, integer=True)
    _choice(cfg, "train.lr_decay", ("constant", "cosine"))
    for key, value, allowed, why in (
            ("train.simulator", "reduced", "full", "a module reads every coordinate of every token"),
            ("eval.simulator", "reduced", "full (or null)", "a module reads every coordinate of every token"),
            ("train.lam_schedule", "inverse", "constant", "a module has no lam (train.lr_decay=cosine decays its lr)"),
            ("train.projected", False, "true (it is ignored)", "a module's parameters are not on a sphere")):
        if OmegaConf.select(cfg, key) == value:
            raise ConfigError(key, value, f"{allowed} with predictor={name}: {why}")
    if tc.init != "sphere":
        raise ConfigError("train.init", tc.init, f"'sphere' (the default) with predictor={name}: the module is "
                          "initialised by its own constructor, from the run's seed")
    if name == "transformer":
        for key in ("d_model", "n_heads", "n_layers"):
            _number(cfg, f"predictor.{key}", low=1, integer=True)
        _number(cfg, "predictor.mlp", low=0, what="a finite number >= 0 (hidden width / d_model; 0: attention only)")
        _choice(cfg, "predictor.norm", ("pre", "none"))
        _choice(cfg, "predictor.pool", ("query", "mean"))
        _choice(cfg, "predictor.positional", ("none", "learned"))
        if cfg.predictor.d_model % cfg.predictor.n_heads:
            raise ConfigError("predictor.n_heads", cfg.predictor.n_heads, f"a divisor of predictor.d_model="
                              f"{cfg.predictor.d_model} (each head gets d_model / n_heads dimensions)")
        return
    _probe_user_module(cfg)


def _probe_user_module(cfg: DictConfig) -> None:
    """Build the user's module (``predictor.model``, with ``d``, ``L`` of the task) and run it on a tiny batch."""
    from slr.app.user_code import build_user_module
    from slr.models.contract import ModuleError, probe

    target = OmegaConf.select(cfg, "predictor.model._target_")
    allowed = ("the import path of a torch.nn.Module class (predictor.model._target_=mypkg.MyNet) whose constructor "
               "takes d and L (given by slr) and any +predictor.model.NAME=value, and whose forward maps tokens "
               "(B, L, d) to finite predictions (B,)")
    if not isinstance(target, str) or not target.strip():
        raise ConfigError("predictor.model._target_", target, allowed)
    try:
        module = build_user_module(cfg.predictor.model, cfg.task.d, cfg.task.L)
        probe(module, cfg.task.d, cfg.task.L, trainable=cfg.train.steps > 0)
    except ModuleError as err:
        raise ConfigError("predictor.model._target_", target, f"{allowed}; here {err}") from None


def digest(cfg: DictConfig) -> str:
    """SHA-256 of the resolved run config, without the keys that do not change its numbers (``resume``, ``logger``)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("resume", None)
    container.pop("logger", None)
    container.pop("hydra", None)
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(container)).encode()).hexdigest()[:16]


# ----- the text task (docs/text.md) ----------------------------------------------------------------------------
def as_config_error(err) -> ConfigError:
    """A :class:`slr.text.encoder.TextInputError` as the apps' one-paragraph :class:`ConfigError` (exit 2)."""
    return ConfigError(err.key, err.value, err.allowed)


def check_text(cfg: DictConfig, layer: bool = True) -> int:
    """The text group: the extra installed, ``text.model`` a model folder, ``text.layer`` within its layers (when
    ``layer``: ``slr-probe`` probes them all), and ``text.batch_size``. Returns the model's number of layers. Does not
    import ``transformers``."""
    from slr.text.encoder import TextInputError, model_folder, require_extra

    _number(cfg, "text.batch_size", low=1, integer=True)
    _number(cfg, "text.layer", low=0, integer=True)
    try:
        require_extra("text.model", cfg.text.model)
        folder = model_folder(cfg.text.model)
    except TextInputError as err:
        raise as_config_error(err) from None
    n_layers = json.loads((folder / "config.json").read_text()).get("num_hidden_layers")
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ConfigError("text.model", cfg.text.model, "a transformer encoder folder whose config.json gives "
                          f"num_hidden_layers >= 1 (here {n_layers!r})")
    if layer and cfg.text.layer > n_layers:
        raise ConfigError("text.layer", cfg.text.layer, f"an integer from 0 (the embeddings) to {n_layers}, the number "
                          f"of layers of text.model={cfg.text.model}")
    return n_layers


def check_text_task(cfg: DictConfig) -> None:
    """``task=text`` (called by :func:`slr.app.config.check`): erf or softmax attention trained by ERM, and the text
    group."""
    if cfg.train.algo != "erm":
        raise ConfigError("train", cfg.train.algo, "erm with task=text: the sentences are a finite set, trained on "
                          "train.n_train sentences of the train split")
    if cfg.predictor.name == "module":
        _forward_takes_mask(cfg)
    if cfg.predictor.name in ("erf", "softmax") and cfg.predictor.lam == "auto":
        raise ConfigError("predictor.lam", "auto", "a number > 0 with task=text (lam=auto is the best lam of the "
                          "Gaussian task's erf oracle)")
    check_text(cfg)


def _forward_takes_mask(cfg: DictConfig) -> None:
    """A user's module on text takes the padding mask: ``forward(X, mask=None)`` with ``mask`` (B, L) of real tokens."""
    import inspect

    from hydra.utils import get_class

    target = cfg.predictor.model.get("_target_")
    allowed = ("a torch.nn.Module whose forward takes the padding mask, forward(X, mask=None) with mask (B, L) true on "
               "the real tokens, with task=text (padding must never be attended to)")
    try:
        params = inspect.signature(get_class(str(target)).forward).parameters
    except Exception:  # noqa: BLE001  not importable: the module checks of slr.app.config say why
        return
    if "mask" not in params:
        raise ConfigError("predictor.model._target_", target, allowed)
