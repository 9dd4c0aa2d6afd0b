"""Autograd training of torch modules on the task (docs/transformer.md): ``R`` independent repeats stacked as one batch
axis.

The repeats' parameters are stacked with ``torch.func.stack_module_state`` into tensors with a leading axis ``R``
and every forward pass is ``vmap(functional_call)`` over that axis, so ``R`` models cost one model's Python
overhead. The torch optimisers (SGD, Adam, AdamW) and their weight decay act elementwise, so one optimiser over the
stacked tensors is exactly ``R`` optimisers, one per repeat; the loss is the sum of the repeats' mean squared errors,
whose gradient in a repeat's parameters is that repeat's own. A module that ``vmap`` cannot run (data-dependent
control flow, ``.item()``, in-place buffer updates...) falls back to a loop over repeats, with a logged warning.

:class:`OnlineTraining` draws a fresh batch every step, :class:`FixedSetTraining` descends on ``n_train`` fixed
samples per repeat (ERM); both answer the :class:`slr.training.algorithms.Algorithm` interface that :func:`slr.training.algorithms.train` loops
over, and :class:`StackedModel` answers the evaluator's ``predict(X) -> (R, n)``.
"""
from __future__ import annotations

import copy
import logging
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from slr.core.predictors import NotReducible
from slr.core.task import Task
from slr.training.algorithms import Algorithm, FixedTrainingSet

log = logging.getLogger("slr")

OPTIMIZERS = {"sgd": torch.optim.SGD, "gd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
EVAL_CHUNK = 4096  # sequences per forward pass when evaluating (bounds the activations' memory)


class _Method(nn.Module):
    """Calls ``module.<method>(*args)`` as its forward, so that ``functional_call`` can run any method of a module."""

    def __init__(self, module: nn.Module, method: str):
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *args):
        return getattr(self.module, self.method)(*args)


class Stack:
    """``R`` copies of one module architecture with stacked parameters ``params[name]`` (R, ...) and buffers.

    ``call(method, X)`` runs ``module.<method>`` of every repeat: ``X`` (R, B, ...) gives each repeat its own inputs,
    ``shared=True`` gives all repeats the same ``X`` (B, ...); the result has a leading axis ``R``. ``vmap`` is
    used while it works; the first failure switches to a loop over repeats for good, with a logged warning.
    """

    def __init__(self, modules: list[nn.Module], params: dict | None = None, buffers: dict | None = None,
                 use_vmap: bool = True):
        self.base = copy.deepcopy(modules[0]).to("meta")
        if params is None:
            params, buffers = stack_module_state(modules)  # leaves with requires_grad, (R, ...) each
        self.params, self.buffers, self.use_vmap = params, buffers or {}, use_vmap
        self.R = next(iter(self.params.values())).shape[0]
        self._callers: dict[str, nn.Module] = {}

    def _caller(self, method: str) -> nn.Module:
        if method not in self._callers:
            self._callers[method] = self.base if method == "forward" else _Method(self.base, method)
        return self._callers[method]

    def _names(self, method: str, d: dict) -> dict:
        return d if method == "forward" else {f"module.{k}": v for k, v in d.items()}

    def call(self, method: str, *args, shared: bool = False):
        caller = self._caller(method)
        params, buffers = self._names(method, self.params), self._names(method, self.buffers)

        def one(p, b, *a):
            return functional_call(caller, (p, b), a)

        if self.use_vmap:
            try:
                in_dims = (0, 0, *([None] * len(args) if shared else [0] * len(args)))
                return vmap(one, in_dims=in_dims, randomness="different")(params, buffers, *args)
            except Exception as exc:  # vmap cannot run this module: loop over the repeats from now on
                self.use_vmap = False
                log.warning("torch.func.vmap cannot run %s.%s (%s: %s); the %d repeats run one after another",
                            type(self.base).__name__, method, type(exc).__name__, " ".join(str(exc).split())[:300],
                            self.R)
        outs = [one({k: v[r] for k, v in params.items()}, {k: v[r] for k, v in buffers.items()},
                    *(args if shared else (a[r] for a in args))) for r in range(self.R)]
        return _stack(outs)

    def detached(self, dtype: torch.dtype | None = None, select: np.ndarray | None = None) -> "Stack":
        """A copy without gradients, cast to ``dtype`` and restricted to the repeats in ``select``, sharing ``base``."""
        def copy_(t):
            t = t.detach()
            if select is not None:
                t = t[torch.as_tensor(select, device=t.device)]
            return t.to(dtype) if dtype is not None and t.is_floating_point() else t.clone()

        out = Stack.__new__(Stack)
        out.base, out._callers, out.use_vmap = self.base, self._callers, self.use_vmap
        out.params = {k: copy_(v) for k, v in self.params.items()}
        out.buffers = {k: copy_(v) for k, v in self.buffers.items()}
        out.R = next(iter(out.params.values())).shape[0]
        return out


def _stack(outs):
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*outs))
    return torch.stack(outs)


class StackedModel:
    """The trained modules as one predictor: ``predict(X) -> (R, n)`` (the evaluator's interface,
    docs/task-and-predictors.md §2), and
    ``attention(X) -> (R, n, L)`` when the module has an ``attention`` method. Reads every coordinate of every
    token: full simulator only."""

    def __init__(self, stack: Stack, name: str):
        self.stack, self.name = stack, name
        self.dtype = next(iter(stack.params.values())).dtype
        if not callable(getattr(stack.base, "attention", None)):
            self.attention = None  # the evaluator skips the diagnostic

    def _chunked(self, method: str, X) -> torch.Tensor:
        if not isinstance(X, torch.Tensor):
            raise NotReducible(f"{self.name} reads every coordinate of every token; use the full simulator")
        in_dtype = X.dtype
        lead = X.shape[:-2]
        flat = X.reshape(-1, *X.shape[-2:]).to(self.dtype)  # (n, L, d)
        was_training = self.stack.base.training
        self.stack.base.eval()
        try:
            with torch.no_grad():
                parts = [self.stack.call(method, flat[i:i + EVAL_CHUNK], shared=True)
                         for i in range(0, flat.shape[0], EVAL_CHUNK)]
        finally:
            self.stack.base.train(was_training)
        if isinstance(parts[0], tuple):
            return tuple(self._joined([p[j] for p in parts], lead, in_dtype) for j in range(len(parts[0])))
        return self._joined(parts, lead, in_dtype)

    @staticmethod
    def _joined(parts: list[torch.Tensor], lead: tuple, dtype: torch.dtype) -> torch.Tensor:
        out = torch.cat(parts, dim=1)  # (R, n, ...)
        return out.reshape(out.shape[0], *lead, *out.shape[2:]).to(dtype)

    def predict(self, X) -> torch.Tensor:
        return self._chunked("forward", X)  # (R, ...)

    def predict_and_attention(self, X) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(predict(X), attention(X))``, from one forward pass when the module has ``predict_and_attention``."""
        if self.attention is None:
            return self.predict(X), None
        if callable(getattr(self.stack.base, "predict_and_attention", None)):
            return self._chunked("predict_and_attention", X)
        return self.predict(X), self.attention(X)

    def predict_own(self, X: torch.Tensor) -> torch.Tensor:
        """Each repeat on its own inputs: ``X`` (R, n, L, d) -> (R, n)."""
        self.stack.base.eval()
        with torch.no_grad():
            return self.stack.call("forward", X.to(self.dtype)).to(X.dtype)

    def attention(self, X) -> torch.Tensor:
        return self._chunked("attention", X)  # (R, ..., L)

    def in_basis(self, E):
        raise NotReducible(f"{self.name} reads every coordinate of every token; use the full simulator")


def lr_scheduler(optimizer: torch.optim.Optimizer, *, steps: int, warmup_steps: int, decay: str):
    """``torch.optim.lr_scheduler``: linear warm-up from ``lr/(w+1)`` to ``lr`` over ``w = warmup_steps`` steps, then
    constant or cosine decay to 0 at ``steps``: ``lr (1 + cos(pi (t - w)/(steps - w)))/2``. None when constant."""
    from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, SequentialLR

    if decay not in ("constant", "cosine"):
        raise ValueError(f"lr decay must be 'constant' or 'cosine', got {decay!r}")
    main = CosineAnnealingLR(optimizer, T_max=max(steps - warmup_steps, 1)) if decay == "cosine" else None
    if warmup_steps <= 0:
        return main
    warm = LinearLR(optimizer, start_factor=1.0 / (warmup_steps + 1), end_factor=1.0, total_iters=warmup_steps)
    main = main or ConstantLR(optimizer, factor=1.0, total_iters=0)
    return SequentialLR(optimizer, [warm, main], milestones=[warmup_steps])


class ModuleTraining(Algorithm):
    """State of ``R`` repeats of a torch module, trained by a torch optimiser on the squared loss.

    ``KV`` is the loop's view of the state: every parameter of every repeat, flattened (R, P), which
    :func:`slr.training.algorithms.train` checks for divergence.
    """

    kind = None  # not (k, v) attention
    stochastic = True
    log_dtype = torch.float64

    def __init__(self, task: Task, modules: list[nn.Module], *, optimizer: str, lr: float, weight_decay: float,
                 steps: int, warmup_steps: int, lr_decay: str, generator: torch.Generator, dtype: torch.dtype,
                 name: str, use_vmap: bool = True):
        self.task, self.eval_task, self.name, self.gen, self.dtype = task, task, name, generator, dtype
        self.stack = Stack([m.to(task.device, dtype) for m in modules], use_vmap=use_vmap)
        self.optimizer = OPTIMIZERS[optimizer](list(self.stack.params.values()), lr=lr, weight_decay=weight_decay)
        self.scheduler = lr_scheduler(self.optimizer, steps=steps, warmup_steps=warmup_steps, decay=lr_decay)
        self.defines_directions = bool(getattr(modules[0], "defines_directions", False)) and callable(
            getattr(modules[0], "effective_directions", None))
        self.n_parameters = sum(v[0].numel() for v in self.stack.params.values())

    # ----- training -------------------------------------------------------------------------------------------
    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (R, B, L, d) and targets (R, B) of the next step."""
        raise NotImplementedError

    def step(self, lam=None) -> None:
        X, y = self.batch()
        self.stack.base.train()
        loss = (self.stack.call("forward", X) - y).square().mean(-1)  # (R,)
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # a repeat's gradient is that of its own loss
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    @property
    def KV(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(self.stack.R, -1) for p in self.stack.params.values()], dim=1)

    def discard(self, mask: np.ndarray) -> None:
        idx = torch.as_tensor(mask)
        with torch.no_grad():
            for p in self.stack.params.values():
                p[idx] = float("nan")

    # ----- what the run reads ---------------------------------------------------------------------------------
    def predictor(self, lam=None, name: str | None = None, select: np.ndarray | None = None,
                  dtype: torch.dtype = torch.float64) -> StackedModel:
        """The current modules in ``dtype`` (optionally only the repeats in ``select``), as one batched predictor."""
        return StackedModel(self.stack.detached(dtype, select), name or f"trained {self.name}")

    def closed_form_excess(self, lam, o: dict, task: Task) -> None:
        """A torch module has no closed-form risk."""
        return None

    def vectors(self) -> np.ndarray:
        """The effective key ``u_K`` and value ``u_V`` directions (R, 2, d), float64, so that the inherited
        :meth:`~slr.training.algorithms.Algorithm.overlaps` gives their cosines with ``k*``, ``v*`` and each other (``kappa =
        cos(u_K, k*)``, ``nu = cos(u_V, v*)``, ...) and their norms; NaN for a module without directions."""
        if not self.defines_directions:
            return np.full((self.stack.R, 2, self.task.d), np.nan)
        with torch.no_grad():
            key, value = self.stack.detached(torch.float64).call("effective_directions")
        return torch.stack([key, value], 1).cpu().numpy()


class OnlineTraining(ModuleTraining):
    """A fresh batch of ``batch_size`` sequences per repeat and step (online, as the online SGD of docs/training.md)."""

    def __init__(self, task: Task, modules: list[nn.Module], *, batch_size: int, **kw):
        super().__init__(task, modules, **kw)
        self.B = batch_size

    def batch(self):
        X, y, _, _ = self.task.sample((self.stack.R, self.B), self.gen, self.dtype)  # (R, B, L, d), (R, B)
        return X, y


class FixedSetTraining(FixedTrainingSet, ModuleTraining):
    """Full-batch descent on ``n_train`` fixed samples per repeat (ERM, docs/training.md); reports the training loss."""

    def __init__(self, task: Task, modules: list[nn.Module], *, n_train: int, **kw):
        super().__init__(task, modules, **kw)
        self.draw_training_set(task, self.stack.R, n_train, self.gen, self.dtype)

    def batch(self):
        return self.data.X, self.data.y

    def predict_own(self, lam, X: torch.Tensor) -> torch.Tensor:
        return self.predictor().predict_own(X)


def build(task: Task, make: Callable[[], nn.Module], repeats: int, seeds: np.ndarray) -> list[nn.Module]:
    """``repeats`` modules, repeat ``r`` built by ``make()`` with torch's global generator seeded by ``seeds[r]``
    (restored afterwards), so that each repeat's initialisation is a function of the run's seed alone."""
    modules = []
    for r in range(repeats):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seeds[r]))
            modules.append(make())
    return modules
