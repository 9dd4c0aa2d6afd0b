"""The builders of a job: its task and initial points, the training algorithm of each ``train`` group for
closed-form attention, and the autograd training of torch modules (the families of :mod:`slr.app.families` call
them)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from slr.app.config import is_custom_task, learning_rate, task_prior
from slr.app.user_code import build_user_module, build_user_task

if TYPE_CHECKING:  # torch (~1.5 s) is imported by the builders, so that --help and a refused config start fast
    from slr.training.algorithms import Algorithm


def _dtype(cfg: DictConfig):
    import torch

    return torch.float64 if cfg.train.get("dtype", "float64") == "float64" else torch.float32


def build_sgd(cfg, task, C0, init_rng) -> Algorithm:
    from slr.core.predictors import ATTENTION_KINDS
    from slr.core.seeding import torch_generator
    from slr.training.algorithms import FullSGD, ReducedSGD, embed

    kind, tc = ATTENTION_KINDS[cfg.predictor.name], cfg.train
    if tc.simulator == "ode":
        from slr.app.config import initial_lam
        from slr.training.algorithms import lam_schedule
        from slr.training.sgd_limit import SGDLimit

        lam0 = initial_lam(cfg, task.d, task.L, task.gamma, task.signal)
        return SGDLimit(task, C0, lr=learning_rate(cfg, task.d), batch_size=tc.batch_size,
                        schedule=lam_schedule(tc.lam_schedule, lam0, tc.schedule_rate), correction=tc.ode_correction,
                        horizon=tc.steps)
    gen = torch_generator(cfg.seed, "train", task.device)
    if tc.simulator == "reduced":
        return ReducedSGD(task, kind, C0, lr=learning_rate(cfg, task.d), batch_size=tc.batch_size,
                          projected=tc.projected, generator=gen)
    return FullSGD(task, kind, embed(C0, task, init_rng), lr=learning_rate(cfg, task.d), batch_size=tc.batch_size,
                   projected=tc.projected, generator=gen, dtype=_dtype(cfg))


def build_pgd(cfg, task, C0, init_rng) -> Algorithm:
    from slr.core.reduced import ReducedTask
    from slr.core.seeding import numpy_generator
    from slr.training.algorithms import embed, population_pgd

    tc = cfg.train
    if tc.simulator == "reduced":
        eval_task, KV0 = ReducedTask.of(task, 4), C0
    else:
        eval_task, KV0 = task, embed(C0, task, init_rng).numpy()
    # float64 without noise: PopulationPGD; float32 or noise > 0: PerturbedPGD (numpy), noise from the train stream
    return population_pgd(eval_task, KV0, lr=learning_rate(cfg, task.d), M=task.M, L=task.L, gamma=task.gamma,
                          d=task.d, dtype=tc.dtype, noise=tc.noise, rng=numpy_generator(cfg.seed, "train"))


def build_erm(cfg, task, C0, init_rng) -> Algorithm:
    from slr.core.predictors import ATTENTION_KINDS
    from slr.core.seeding import torch_generator
    from slr.training.algorithms import ERM, embed

    tc = cfg.train
    return ERM(task, ATTENTION_KINDS[cfg.predictor.name], embed(C0, task, init_rng), lr=learning_rate(cfg, task.d),
               n_train=tc.n_train, projected=tc.projected, optimizer=tc.optimizer,
               generator=torch_generator(cfg.seed, "train", task.device), dtype=_dtype(cfg))


def build_none(cfg, task, C0, init_rng) -> Algorithm:
    from slr.core.predictors import ATTENTION_KINDS
    from slr.core.reduced import ReducedTask
    from slr.training.algorithms import Frozen, embed

    kind = ATTENTION_KINDS[cfg.predictor.name]
    if cfg.train.simulator == "reduced":
        return Frozen(ReducedTask.of(task, 4), kind, C0)
    return Frozen(task, kind, embed(C0, task, init_rng).to(task.device))


def build_flow(cfg, task, C0, init_rng) -> Algorithm:
    """The gradient flow (docs/dynamics.md) on the reduced task: no d-dimensional vector is ever made."""
    from slr.core.reduced import ReducedTask
    from slr.training.flow import GradientFlow, default_atol

    tc = cfg.train
    lr = learning_rate(cfg, task.d)
    eval_task = task if isinstance(task, ReducedTask) else ReducedTask.of(task, 4)
    atol = tc.atol if tc.atol is not None else default_atol(task.d)
    return GradientFlow(eval_task, C0, lr=lr, M=task.M, L=task.L, gamma=task.gamma, horizon=lr * tc.steps,
                        method=tc.method, rtol=tc.rtol, atol=atol,
                        grad_tol=tc.grad_tol if tc.until_converged else None)


BUILDERS = {"sgd": build_sgd, "pgd": build_pgd, "erm": build_erm, "none": build_none, "flow": build_flow}


def build_module(cfg, task, C0, init_rng, *, name: str) -> Algorithm:
    """Torch modules (``docs/transformer.md``): ``train.repeats`` modules of ``predictor.model`` (the transformer
    preset or a user's ``_target_``), each initialised from its own seed drawn from the init stream, trained online
    (``train=sgd``) or on a fixed set (``train=erm``) by a torch optimiser."""
    import torch

    from slr.core.seeding import torch_generator
    from slr.training.modules import FixedSetTraining, OnlineTraining, build

    tc = cfg.train
    modules = build(task, lambda: build_user_module(cfg.predictor.model, task.d, task.L), tc.repeats,
                    init_rng.integers(0, 2**62, tc.repeats))
    torch.manual_seed(int(init_rng.integers(0, 2**62)))  # a module drawing random numbers (dropout) reproduces too
    kw = dict(optimizer=tc.optimizer, lr=tc.lr, weight_decay=tc.weight_decay, steps=tc.steps,
              warmup_steps=tc.warmup_steps, lr_decay=tc.lr_decay, generator=torch_generator(cfg.seed, "train", task.device),
              dtype=_dtype(cfg), name=name)
    if tc.algo == "erm":
        return FixedSetTraining(task, modules, n_train=tc.n_train, **kw)
    return OnlineTraining(task, modules, batch_size=tc.batch_size, **kw)


def job_task(cfg: DictConfig, repeats: int):
    """What every job starts from: its torch threads set, the task of ``cfg.task`` and ``seed``, and ``repeats``
    initial points of ``train.init`` in canonical coordinates (R, 2, 4), with the ``init`` stream that drew them
    (:func:`slr.training.algorithms.embed` continues it). Returns ``(task, C0, init_rng)``."""
    import torch

    from slr.core.seeding import numpy_generator
    from slr.core.task import Task
    from slr.training.algorithms import INITS

    from slr.core.reduced import ReducedTask

    torch.set_num_threads(cfg.threads)
    if cfg.train.algo == "flow":  # no d-vectors at any d: the task seen on (k*, v*, e1, e2)
        task = ReducedTask(cfg.task.d, cfg.task.L, cfg.task.gamma, cfg.task.eps, cfg.task.signal, device=cfg.device,
                           seed=cfg.seed, prior=task_prior(cfg), n_informative=cfg.task.n_informative)
    elif is_custom_task(cfg):
        task = build_user_task(cfg)
    else:
        task = Task(cfg.task.d, cfg.task.L, cfg.task.gamma, cfg.task.eps, cfg.task.signal, seed=cfg.seed,
                    axes=cfg.task.axes, device=cfg.device, prior=task_prior(cfg), n_informative=cfg.task.n_informative,
                    tokens=cfg.task.tokens, df=cfg.task.df)
    init_rng = numpy_generator(cfg.seed, "init")
    return task, INITS[cfg.train.init](repeats, task.d, init_rng), init_rng
