"""Plain, durable files: atomic JSON, a metrics CSV flushed as the run goes, and the user cache folder (the
readers of output folders are in :mod:`slr.results`)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

METRIC_COLUMNS = ("step", "repeat", "lam", "kappa", "nu", "theta", "eta", "rho", "norm_k", "norm_v", "dist_to_M",
                  "excess", "test_excess", "test_excess_se", "train_loss")


def plain(x: Any) -> Any:
    """``x`` with numpy scalars/arrays as Python numbers/lists and non-finite floats as None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if hasattr(x, "tolist") and hasattr(x, "detach"):  # a torch tensor
        return plain(x.detach().cpu().tolist())
    return x


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp's is 0o600)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: readers see old or new,
    never half. A process killed mid-write can leave a hidden ``.<name>.<random>.tmp`` beside it, never a cut ``path``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), _FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(plain(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> dict | None:
    """The JSON object at ``path``, or None when it is missing or does not parse."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def underflowed_log10(entry: dict) -> float | None:
    """For an ``excess`` entry of summary.json: the log10 of its importance-sampling estimate when the estimate
    itself underflowed to 0 (a Bayes excess at large ``d``), else None."""
    log10 = entry.get("importance_sampling_log10")
    if entry.get("importance_sampling") == 0 and log10 is not None and math.isfinite(log10):
        return log10
    return None


class MetricsWriter:
    """Appends logged rows to ``metrics.csv``, one block per logged step, flushed at once.

    A killed run leaves every complete block; :func:`slr.results.read_metrics` drops a partial last line.
    """

    def __init__(self, path: Path, columns: Iterable[str] = METRIC_COLUMNS):
        self.path, self.columns = Path(path), tuple(columns)
        self.file = open(self.path, "w", newline="")
        self.file.write(",".join(self.columns) + "\n")
        self.file.flush()

    def write(self, rows: list[dict]) -> None:
        """Append ``rows`` (numbers or None: no cell needs CSV quoting) and flush."""
        cols = self.columns
        self.file.write("".join([",".join([_cell(row.get(c)) for c in cols]) + "\n" for row in rows]))
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _cell(v: Any) -> str:
    """A CSV cell: empty for None and NaN, ``repr`` for a float (exact round trip), ``str`` otherwise."""
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if v != v else repr(float(v))
    return str(v)


def cache_dir() -> Path:
    """The folder of the compiled kernels (and of the Bayes cache), created if needed: ``$SLR_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/slr`` or ``~/.cache/slr``; a per-user folder in the temporary directory when that one cannot
    be created or written."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slr"
    path = Path(os.environ.get("SLR_CACHE_DIR") or default)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    path = Path(tempfile.gettempdir()) / f"slr-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    path.mkdir(exist_ok=True)
    return path
