"""Reading run and sweep folders as pandas tables, the comparison tables, ``slr-report``, ``slr-aggregate`` and
``slr-compare`` (no torch: reports start fast).

    from slr.results import load_run, load_sweep      # see slr.results.load
"""
from __future__ import annotations

_LAZY = ("load_run", "load_sweep", "read_metrics", "Run", "Sweep", "ResultsError")
__all__ = list(_LAZY)


def __getattr__(name: str):
    """``slr.results.load_sweep`` and friends, imported on first use (pandas is not needed by a run's tables)."""
    if name in _LAZY:
        from slr.results import load

        return getattr(load, name)
    raise AttributeError(f"module 'slr.results' has no attribute {name!r}")
