"""The user's own code, built from its ``_target_``: a torch module (``predictor=module``) and a task
(``task=custom``), each turned into one clear error when it cannot be imported or built (docs/transformer.md,
docs/custom-task.md)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    import torch


def custom_task_kwargs(cfg: DictConfig) -> dict:
    """The constructor arguments of a user's task besides ``d``, ``L``, ``seed``: the ``+task.NAME=value`` keys."""
    return {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k not in ("_target_", "d", "L")}


def build_user_module(model_cfg, d: int, L: int) -> torch.nn.Module:
    """``hydra.utils.instantiate(model_cfg, d=d, L=L)``; raises :class:`ModuleError` with one line saying why not."""
    import torch
    from hydra.utils import instantiate

    from slr.models.contract import ModuleError, one_line

    try:
        module = instantiate(model_cfg, d=d, L=L)
    except Exception as exc:  # import errors, constructor errors, bad arguments: all end here
        cause = exc.__cause__ or exc
        raise ModuleError(f"building it with d={d}, L={L} failed ({one_line(exc)}"
                          + (f"; cause: {one_line(cause)}" if cause is not exc else "")
                          + ")") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModuleError(f"it built a {type(module).__name__}, not a torch.nn.Module")
    return module


def build_user_task(cfg: DictConfig):
    """A user's task (``task=custom``): ``instantiate(task, d, L, seed, **extra keys)`` wrapped in
    :class:`slr.core.custom.UserTask`; raises :class:`slr.core.custom.TaskError` saying why it cannot be built."""
    from hydra.utils import get_class

    from slr.core.custom import TaskError, UserTask

    target = str(cfg.task._target_)
    try:
        obj = get_class(target)(d=cfg.task.d, L=cfg.task.L, seed=cfg.seed, **custom_task_kwargs(cfg))
    except Exception as exc:  # import errors, constructor errors, bad arguments: all end here
        cause = exc.__cause__ or exc
        raise TaskError(f"building it with d={cfg.task.d}, L={cfg.task.L}, seed={cfg.seed} failed "
                        f"({type(cause).__name__}: {' '.join(str(cause).split())})") from exc
    return UserTask(obj, cfg.task.d, cfg.task.L, cfg.seed, target, device=cfg.device)
