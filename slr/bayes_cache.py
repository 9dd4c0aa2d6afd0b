"""The importance-sampling Bayes excess, computed once per ``(d, L, gamma, signal, draws)`` and reused.

The estimate of :func:`slr.evaluate.bayes_excess_is_log10` depends on the task only through ``d``, ``L``, ``gamma``
and ``M`` (the task is invariant under rotations, so ``k*`` and ``v*`` do not matter) and on its number of draws;
drawn from a fixed stream (seed 0) it is a pure function of those, so every job of a sweep with the same task can
share it. Entries are small JSON files in ``<cache_dir>/bayes_is/`` (:func:`slr.kernel.cache_dir`, beside the
compiled kernels), written atomically: two jobs computing the same key at once both write the same value, and a
reader sees a whole file or none. An entry that does not parse or does not hold its own key is recomputed and
rewritten.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

VERSION = 1  # of the estimator's stream and chunking: bump when bayes_excess_is_log10 changes its numbers
SEED = 0  # the estimate's stream: fixed, so that the value depends on the key only
CHUNK = 2**16


def key_of(task, draws: int) -> dict:
    """The cache key: what the estimate depends on."""
    return dict(d=int(task.d), L=int(task.L), gamma=float(task.gamma), M=float(task.M), draws=int(draws),
                chunk=CHUNK, seed=SEED, version=VERSION)


def path_of(key: dict, folder: Path | None = None) -> Path:
    if folder is None:
        from slr.kernel import cache_dir

        folder = cache_dir()
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return Path(folder) / "bayes_is" / f"{name}.json"


def _read(path: Path, key: dict) -> tuple[float, float] | None:
    """The entry at ``path`` if it is a valid one for ``key``."""
    try:
        entry = json.loads(path.read_text())
        log10, rel_se = entry["log10_mean"], entry["rel_se"]
        ok = entry["key"] == key and isinstance(log10, float) and isinstance(rel_se, float)
        return (log10, rel_se) if ok and not math.isnan(log10) and math.isfinite(rel_se) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(path: Path, key: dict, log10: float, rel_se: float) -> None:
    """Write the entry atomically (temporary file, then rename); a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(dict(key=key, log10_mean=log10, rel_se=rel_se), f)  # floats round-trip exactly
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass


def bayes_excess_is_log10(task, draws: int, folder: Path | None = None) -> tuple[float, float, bool]:
    """The Bayes excess of ``task`` by importance sampling with ``draws`` draws (seed 0):
    ``(log10 of the mean, relative standard error, whether it came from the cache)``."""
    from slr import evaluate

    key = key_of(task, draws)
    path = path_of(key, folder)
    found = _read(path, key)
    if found is not None:
        return found[0], found[1], True
    log10, rel_se = evaluate.bayes_excess_is_log10(task, draws, SEED, CHUNK)
    if math.isfinite(rel_se) and not math.isnan(log10):
        _write(path, key, float(log10), float(rel_se))
    return float(log10), float(rel_se), False
