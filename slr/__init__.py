"""slr: single-location regression, its attention predictors, the Bayes-optimal estimator and their risks.

Python API (the README's "Python API"): ``slr.Task``, ``slr.Batch``; ``slr.theory.{zeta, erf_excess, oracle_excess,
linear_excess, bilinear_excess}``; ``slr.evaluate.mc_excess``; the predictors in ``slr.predictors``; the landscape in
``slr.landscape``. The tree: ``core`` (task, predictors, evaluator), ``theory`` (closed forms), ``training``,
``models`` (torch), ``landscape``, ``app`` (the Hydra apps), ``results`` (reading folders), ``plots``.

The submodules are imported on first use (``slr.Task`` imports torch), so that ``slr --help``, a refused config
and ``slr-report`` start without torch.
"""
import importlib

__all__ = ["Task", "Batch", "theory", "evaluate", "predictors", "landscape"]
__version__ = "0.2.0"
_LAZY = {"Task": ("slr.core.task", "Task"), "Batch": ("slr.core.task", "Batch"), "theory": ("slr.theory", None),
         "evaluate": ("slr.core.evaluate", None), "predictors": ("slr.core.predictors", None),
         "landscape": ("slr.landscape", None)}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'slr' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    value = getattr(value, attr) if attr else value
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_LAZY])
