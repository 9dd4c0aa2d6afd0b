"""slr: single-location regression, its attention predictors, the Bayes-optimal estimator and their risks.

Python API (SPEC 7): ``slr.Task``; ``slr.theory.{zeta, erf_excess, oracle_excess, linear_excess, bilinear_excess}``;
``slr.evaluate.mc_excess``; the predictors in ``slr.predictors``.

The submodules are imported on first use (``slr.Task`` imports torch), so that ``slr --help``, a refused config
and ``slr-report`` start without torch.
"""
import importlib

__all__ = ["Task", "Batch", "theory", "evaluate", "predictors"]
__version__ = "0.2.0"
_LAZY = {"Task": ("slr.task", "Task"), "Batch": ("slr.task", "Batch"), "theory": ("slr.theory", None),
         "evaluate": ("slr.evaluate", None), "predictors": ("slr.predictors", None)}


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
