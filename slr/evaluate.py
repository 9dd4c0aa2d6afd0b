"""``slr.evaluate`` is :mod:`slr.core.evaluate` under the name the README's Python API documents."""
import sys

from slr.core import evaluate as _module

sys.modules[__name__] = _module
