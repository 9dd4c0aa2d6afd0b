"""``slr.predictors`` is :mod:`slr.core.predictors` under the name the README's Python API documents."""
import sys

from slr.core import predictors as _module

sys.modules[__name__] = _module
