"""The families of models a run can train, behind one interface, so that :func:`slr.app.run.run` never asks which
one it has: closed-form attention (erf or softmax, ``(k, v)`` and ``lam``; ``docs/training.md``) and torch modules
(the transformer preset or a user's ``_target_``, trained by autograd; ``docs/transformer.md``).

A family supplies the run's algorithm, the columns of its ``metrics.csv``, its ``lam`` schedule, the fields of
``summary.json``'s ``trained`` entry, the oracle of its comparison table and its figure.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

from omegaconf import DictConfig, OmegaConf

from slr.app.build import BUILDERS, build_module
from slr.app.config import initial_lam
from slr.app.schema import MODULE_PREDICTORS
from slr.io import METRIC_COLUMNS
from slr.results.tables import _lam_text

if TYPE_CHECKING:
    from slr.core.predictors import AttentionKind
    from slr.core.task import Task
    from slr.training.algorithms import Algorithm


class Family:
    """What a run needs of a family of models (one instance per run, made by :func:`family_of`)."""

    columns: tuple[str, ...] = METRIC_COLUMNS  # of metrics.csv

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def build(self, task: Task, C0, init_rng) -> Algorithm:
        """The training algorithm of ``train.repeats`` repeats from the initial points ``C0``."""
        raise NotImplementedError

    def lam(self, task: Task) -> tuple[dict, Callable[[int], float | None]]:
        """``summary.json``'s ``lam`` fields and the schedule ``t -> lam_t`` (None for a model without ``lam``)."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """The model, in the run's first log line."""
        raise NotImplementedError

    def trained(self, algo: Algorithm) -> dict:
        """The family's fields of ``summary.json``'s ``trained`` entry: ``predictor`` and ``algo`` first."""
        raise NotImplementedError

    def oracle(self, task: Task, lam: float | None) -> tuple[AttentionKind, float]:
        """The kind and ``lam`` of the oracle attention ``(k*, v*)`` the trained model is compared with."""
        raise NotImplementedError

    def figure(self, rows: list[dict], refs: Mapping[str, float], excess: dict, task: Task, title: str,
               final: dict | None, lam_path: tuple):
        """The run's training figure ``(fig, axes)`` from its logged rows, the reference excesses, the final
        evaluation of the trained model (``final``: its excess, standard error and test size) and ``lam`` at the
        first and last step."""
        raise NotImplementedError


class Attention(Family):
    """``(k, v)`` attention with erf or softmax weights and inverse temperature ``lam``: trained by the algorithm of
    the ``train`` group (online SGD, population PGD, ERM, none), with closed-form gradients."""

    def build(self, task, C0, init_rng):
        return BUILDERS[self.cfg.train.algo](self.cfg, task, C0, init_rng)

    def lam(self, task):
        from slr.training.algorithms import lam_schedule

        tc = self.cfg.train
        lam0 = initial_lam(self.cfg, task.d, task.L, task.gamma, task.signal, task.n_informative)
        fields = dict(lam=lam0, lam_auto=self.cfg.predictor.lam == "auto")  # auto: theory.best_oracle_lam
        return fields, lam_schedule(tc.lam_schedule, lam0, tc.schedule_rate)

    @property
    def label(self):
        return f"{self.cfg.predictor.name} attention"

    def trained(self, algo):
        return dict(predictor=self.label, algo=self.cfg.train.algo, **algo.details())  # the flow's solver record

    def oracle(self, task, lam):
        from slr.core.predictors import ATTENTION_KINDS

        return ATTENTION_KINDS[self.cfg.predictor.name], lam

    def figure(self, rows, refs, excess, task, title, final, lam_path):
        from slr.plots.dynamics import dynamics_figure

        return dynamics_figure(rows, refs, title=f"{title}, {self.cfg.train.algo}, {_lam_text(*lam_path)}",
                               final=final, test_size=self.cfg.train.get("log_test_size", 0))


class Module(Family):
    """A torch ``nn.Module`` built from ``predictor.model`` (its ``_target_`` and arguments, with the task's ``d``
    and ``L``), ``train.repeats`` of them stacked and trained by a torch optimiser, online (``train=sgd``) or on a
    fixed set (``train=erm``). It has no ``lam``; its effective directions, when it defines them, give the overlaps,
    and its ``attention(X)`` the logged attention on ``J0``."""

    columns = (*METRIC_COLUMNS, "attention_on_J0")

    def build(self, task, C0, init_rng):
        return build_module(self.cfg, task, C0, init_rng, name=self.name)

    def lam(self, task):
        return dict(lam=None, lam_auto=False), (lambda t: None)

    @property
    def name(self) -> str:
        """The preset's name (``transformer``), or the class path of a user's module (``predictor=module``)."""
        pc = self.cfg.predictor
        return str(pc.model._target_) if pc.name == "module" else str(pc.name)

    @property
    def label(self):
        return self.cfg.predictor.name

    def trained(self, algo):
        tc = self.cfg.train
        return dict(predictor=algo.name, algo=self.trained_algo, optimizer=tc.optimizer,
                    parameters=algo.n_parameters, stacked=algo.stack.use_vmap, directions=algo.defines_directions)

    def oracle(self, task, lam):
        from slr.core.predictors import SOFTMAX

        return SOFTMAX, task.M / task.gamma**2  # softmax attention at Bayes's M/gamma^2 (exact at gamma = 1)

    def figure(self, rows, refs, excess, task, title, final, lam_path):
        from slr.plots.dynamics import module_figure

        attention_refs = {"uniform, 1/L": 1.0 / task.L, "Bayes posterior": excess["bayes"].get("attention_on_J0")}
        return module_figure(rows, refs, attention_refs, title=f"{title}, {self.trained_algo}", final=final,
                             test_size=self.cfg.train.get("log_test_size", 0))

    @property
    def trained_algo(self) -> str:
        tc = self.cfg.train
        return f"{'online' if tc.algo == 'sgd' else 'erm'} {tc.optimizer}"


def family_of(cfg: DictConfig) -> Family:
    """The family of the run's predictor: torch modules for the module presets, attention otherwise."""
    return (Module if OmegaConf.select(cfg, "predictor.name") in MODULE_PREDICTORS else Attention)(cfg)
