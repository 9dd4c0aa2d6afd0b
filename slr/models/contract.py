"""The contract a torch module on the task meets (``docs/transformer.md``).

Any ``torch.nn.Module`` whose ``forward(X)`` maps tokens (B, L, d) to predictions (B,) can be trained and compared
with the Bayes-optimal estimator. It may also expose

- ``attention(X) -> (B, L)``: the weights its readout puts on each token (each row sums to 1), from which the run
  reports ``attention_on_J0``, the mean weight on the informative token;
- ``effective_directions() -> (key (d,), value (d,))``: the token-space directions that play the roles of
  ``lam k`` and ``v`` of attention (docs/task-and-predictors.md §2), whose cosines with ``k*``, ``v*`` are logged as
  ``kappa``, ``nu`` (and ``theta``,
  ``eta``, ``rho``), with ``defines_directions = True``.

:class:`slr.models.transformer.Transformer` does all three. :func:`probe` checks a module on a tiny batch, so that
a broken module is refused before a run starts (:func:`slr.app.user_code.build_user_module` builds it from its config).
"""
from __future__ import annotations

import torch
from torch import nn


class ModuleError(ValueError):
    """A user's module cannot be imported, built, or does not map (B, L, d) to finite (B,) predictions."""


def probe(module: nn.Module, d: int, L: int, *, trainable: bool = True) -> None:
    """Check a module on a tiny batch: ``forward`` maps (3, L, d) to 3 finite numbers, ``attention`` (if any) to
    (3, L), and (if ``trainable``) it has parameters to train. Raises :class:`ModuleError` naming what is wrong."""
    X = torch.randn(3, L, d, generator=torch.Generator().manual_seed(0))
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    X = X.to(dtype)
    if trainable and not any(p.requires_grad for p in module.parameters()):
        raise ModuleError("it has no parameters to train")
    try:
        with torch.no_grad():
            y = module(X)
    except Exception as exc:
        raise ModuleError(f"forward on a batch of shape (3, {L}, {d}) failed ({one_line(exc)})") from exc
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (3,):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ModuleError(f"forward must map (B, L, d) to (B,); on a batch of shape (3, {L}, {d}) it returned {shape}")
    if not torch.isfinite(y).all():
        raise ModuleError(f"forward returned non-finite values on a batch of shape (3, {L}, {d}): {y.tolist()}")
    if callable(getattr(module, "attention", None)):
        try:
            with torch.no_grad():
                a = module.attention(X)
        except Exception as exc:
            raise ModuleError(f"attention on a batch of shape (3, {L}, {d}) failed ({one_line(exc)})") from exc
        if not isinstance(a, torch.Tensor) or tuple(a.shape) != (3, L):
            shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
            raise ModuleError(f"attention must map (B, L, d) to (B, L); it returned {shape}")


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())
