"""TensorBoard event files beside ``metrics.csv`` (``logger=tensorboard``, the optional extra ``slr[tensorboard]``).

Each logged step is one block of rows, one per live repeat (:class:`slr.io.MetricsWriter`'s input). For every logged
column the event file gets the median over the block's repeats under ``median/<column>`` and each repeat's value under
``repeat_<r>/<column>``, at the block's step; ``tensorboard --logdir <sweep dir>`` then shows every job's curves
side by side, one run per job folder. See ``docs/analysis.md``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np

NOT_LOGGED = ("step", "repeat")  # the coordinates of a row, not values


class TensorBoardWriter:
    """Writes the same blocks of rows as :class:`slr.io.MetricsWriter` into an event file in ``folder``."""

    def __init__(self, folder: Path, columns: Iterable[str]):
        from torch.utils.tensorboard import SummaryWriter

        self.columns = [c for c in columns if c not in NOT_LOGGED]
        self.writer = SummaryWriter(log_dir=str(folder))

    def write(self, rows: list[dict]) -> None:
        """One logged step: the median over repeats and each repeat's value of every column with a finite value."""
        if not rows:
            return
        step = int(rows[0]["step"])
        for c in self.columns:
            values = [(int(r.get("repeat", i)), _finite(r.get(c))) for i, r in enumerate(rows)]
            values = [(r, v) for r, v in values if v is not None]
            if not values:
                continue
            self.writer.add_scalar(f"median/{c}", float(np.median([v for _, v in values])), step)
            for r, v in values:
                self.writer.add_scalar(f"repeat_{r}/{c}", v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _finite(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class Writers:
    """Several writers as one: ``write`` and ``close`` go to each (metrics.csv first)."""

    def __init__(self, *writers):
        self.writers = writers
        self.columns = writers[0].columns  # metrics.csv's columns: what the logger makes rows of

    def write(self, rows: list[dict]) -> None:
        for w in self.writers:
            w.write(rows)

    def close(self) -> None:
        for w in self.writers:
            w.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def metrics_writers(folder: Path, columns: Iterable[str], logger: str = "csv"):
    """``metrics.csv`` in ``folder``, and with ``logger="tensorboard"`` an event file beside it."""
    from slr.io import MetricsWriter

    columns = tuple(columns)
    csv = MetricsWriter(Path(folder) / "metrics.csv", columns)
    if logger != "tensorboard":
        return Writers(csv)
    try:
        return Writers(csv, TensorBoardWriter(folder, columns))
    except BaseException:
        csv.close()
        raise
