"""The importance-sampling Bayes excess, computed once per ``(d, L, gamma, signal, draws)`` and reused.

The estimate of :func:`slr.core.evaluate.bayes_excess_is_log10` depends on the task only through ``d``, ``L``, ``gamma``
and ``M`` (the task is invariant under rotations, so ``k*`` and ``v*`` do not matter) and on its number of draws;
drawn from a fixed stream (seed 0) it is a pure function of those, so every job of a sweep with the same task can
share it. Entries are small JSON files in ``<cache_dir>/bayes_is/`` (:func:`slr.io.cache_dir`, beside the
compiled kernels), written atomically: two jobs computing the same key at once both write the same value, and a
reader sees a whole file or none. An entry that does not parse or does not hold its own key is recomputed and
rewritten.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from slr.io import read_json, write_atomic

VERSION = 1  # of the estimator's stream and chunking: bump when bayes_excess_is_log10 changes its numbers
SEED = 0  # the estimate's stream: fixed, so that the value depends on the key only
CHUNK = 2**16


def key_of(task, draws: int) -> dict:
    """The cache key: what the estimate depends on."""
    return dict(d=int(task.d), L=int(task.L), gamma=float(task.gamma), M=float(task.M), draws=int(draws),
                chunk=CHUNK, seed=SEED, version=VERSION)


def path_of(key: dict, folder: Path | None = None) -> Path:
    if folder is None:
        from slr.io import cache_dir

        folder = cache_dir()
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return Path(folder) / "bayes_is" / f"{name}.json"


def _read(path: Path, key: dict) -> tuple[float, float] | None:
    """The entry at ``path`` if it is a valid one for ``key``."""
    entry = read_json(path)
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    log10, rel_se = entry.get("log10_mean"), entry.get("rel_se")
    if isinstance(log10, float) and isinstance(rel_se, float) and _valid(log10, rel_se):
        return log10, rel_se
    return None


def _valid(log10: float, rel_se: float) -> bool:
    """An estimate worth keeping: a log10 that is a number (``-inf`` for ``L = 1``) and a finite relative error."""
    return not math.isnan(log10) and math.isfinite(rel_se)


def _write(path: Path, key: dict, log10: float, rel_se: float) -> None:
    """Write the entry atomically (:func:`slr.io.write_atomic`); a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(dict(key=key, log10_mean=log10, rel_se=rel_se)))  # floats round-trip exactly
    except OSError:
        pass


def bayes_excess_is_log10(task, draws: int, folder: Path | None = None) -> tuple[float, float, bool]:
    """The Bayes excess of ``task`` by importance sampling with ``draws`` draws (seed 0):
    ``(log10 of the mean, relative standard error, whether it came from the cache)``."""
    from slr.core import evaluate

    key = key_of(task, draws)
    path = path_of(key, folder)
    found = _read(path, key)
    if found is not None:
        return found[0], found[1], True
    log10, rel_se = evaluate.bayes_excess_is_log10(task, draws, SEED, CHUNK)
    if _valid(log10, rel_se):
        _write(path, key, float(log10), float(rel_se))
    return float(log10), float(rel_se), False
