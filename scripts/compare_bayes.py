#!/usr/bin/env python
"""Compare every predictor of a sweep with the Bayes-optimal estimator: figure, table and CSV (a checkout's
``slr-compare``; see :mod:`slr.results.compare`).

    python scripts/compare_bayes.py SWEEP_DIR [OTHER_SWEEP_DIR...] [--x task.L] [--asymptotic]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slr.results.compare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
