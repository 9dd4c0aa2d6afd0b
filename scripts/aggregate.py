#!/usr/bin/env python
"""Aggregate a sweep into one table, ``SWEEP_DIR/summary.csv`` (a checkout's ``slr-aggregate``; see
:mod:`slr.results.aggregate`).

    python scripts/aggregate.py SWEEP_DIR [-o out.csv]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slr.results.aggregate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
