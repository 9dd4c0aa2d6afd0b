"""slr: single-location regression, its attention predictors, the Bayes-optimal estimator and their risks.

Python API (SPEC 7): ``slr.Task``; ``slr.theory.{zeta, erf_excess, oracle_excess, linear_excess, bilinear_excess}``;
``slr.evaluate.mc_excess``; the predictors in ``slr.predictors``.
"""
from slr import evaluate, predictors, theory
from slr.task import Batch, Task

__all__ = ["Task", "Batch", "theory", "evaluate", "predictors"]
__version__ = "0.2.0"
