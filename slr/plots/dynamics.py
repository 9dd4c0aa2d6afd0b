"""Tables in, figures out: repeats summarised as median and 95% band, and the training-dynamics figure.

Drawn with matplotlib alone (seaborn's whitegrid look and "deep" palette as fixed settings, bands computed with
numpy, no layout engine, at most :data:`MAX_POINTS` steps per line): the figure of a run costs a fraction of a
second, and neither seaborn nor pandas is imported for it.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from slr.io import METRIC_COLUMNS  # noqa: E402

MAX_POINTS = 400  # logged steps drawn per line: more are thinned evenly (first and last kept)
DEEP = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD")
STYLE = {  # seaborn's whitegrid style, "paper" context at font_scale 1.1, without importing seaborn
    "axes.facecolor": "white", "axes.edgecolor": ".8", "axes.grid": True, "grid.color": ".8", "axes.axisbelow": True,
    "axes.labelcolor": ".15", "text.color": ".15", "xtick.color": ".15", "ytick.color": ".15", "font.size": 10.5,
    "axes.labelsize": 10.5, "axes.titlesize": 10.5, "xtick.labelsize": 9.7, "ytick.labelsize": 9.7,
    "legend.fontsize": 8, "xtick.major.size": 0, "ytick.major.size": 0, "axes.spines.top": True,
    "axes.spines.right": True, "lines.solid_capstyle": "round", "patch.edgecolor": "w", "legend.frameon": True}


def styled(figure):
    """Draw ``figure`` in slr's figure style (:data:`STYLE`), without touching matplotlib's global settings."""
    @functools.wraps(figure)
    def drawn(*args, **kwargs):
        with plt.rc_context(STYLE):
            return figure(*args, **kwargs)
    return drawn


class Grid:
    """A metrics table as arrays (steps x repeats), one per column: what the bands and trajectories are drawn from.

    ``metrics``: a DataFrame, or the row dicts of :class:`slr.training.algorithms.History` (one per repeat and logged step).
    """

    def __init__(self, metrics, columns: tuple[str, ...] = METRIC_COLUMNS):
        if isinstance(metrics, (list, tuple)):
            cols = {c: np.array([np.nan if r.get(c) is None else r[c] for r in metrics], dtype=float) for c in columns}
        else:
            cols = {c: (metrics[c].to_numpy(dtype=float) if c in metrics else np.full(len(metrics), np.nan))
                    for c in columns}
        cols = {c: np.where(np.isnan(v), np.nan, v) for c, v in cols.items()}  # None -> NaN
        self.steps, si = np.unique(cols["step"], return_inverse=True)
        repeats, ri = np.unique(cols["repeat"], return_inverse=True)
        self.repeats = repeats.astype(int)  # repeat numbers (0 .. R-1 in a run)
        self._values = {}
        for c, v in cols.items():
            g = np.full((len(self.steps), len(self.repeats)), np.nan)
            g[si, ri] = v
            self._values[c] = g

    def __getitem__(self, column: str) -> np.ndarray:
        """(steps, repeats), NaN where a repeat has no (finite) value."""
        return self._values[column]

    def has(self, column: str) -> bool:
        return bool(np.isfinite(self._values[column]).any())


def _band(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, ...]:
    """Median and central ``level`` interval over repeats (axis 1) per step, NaN where no repeat has a value."""
    q = (1 - level) / 2
    if not np.isnan(values).any():  # the common case: one vectorised call (nanquantile loops over the rows)
        return tuple(np.quantile(values, [0.5, q, 1 - q], axis=1))
    with np.errstate(all="ignore"), _quiet():
        return tuple(np.nanquantile(values, [0.5, q, 1 - q], axis=1))


class _quiet:
    """Silence numpy's all-NaN-slice warnings (a step at which every repeat has diverged)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _thin(n: int, most: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``most`` of ``n`` points, evenly spread, first and last included."""
    return np.arange(n) if n <= most else np.unique(np.linspace(0, n - 1, most).round().astype(int))


def _title(ax, text: str) -> None:
    """A panel title at a fixed height (matplotlib otherwise searches, at every draw, for tick labels to avoid)."""
    ax.set_title(text, y=1.0, pad=6)


def _band_plot(ax, x: np.ndarray, values: np.ndarray, label: str, color) -> None:
    med, lo, hi = _band(values)
    ax.plot(x, med, color=color, label=label, lw=1.6)
    ax.fill_between(x, lo, hi, color=color, alpha=0.22, lw=0)


def _reference_lines(ax, references: Mapping[str, float] | None, values: np.ndarray) -> None:
    """Horizontal dashed lines at the positive ``references`` of an excess-risk panel on a log axis; one far below
    the curve's ``values`` (by 1e3) is named in the legend, not drawn, so that the curves stay readable."""
    positive = values[values > 0]
    lo = positive.min() if positive.size else 1e-12
    for i, (name, value) in enumerate((references or {}).items()):
        if value is None or not np.isfinite(value) or value <= 0:
            continue
        if value < lo / 1e3:
            ax.plot([], [], ls="none", label=f"{name}: {value:.2g} (below the axis)")
        else:
            ax.axhline(value, ls="--", lw=1, color=DEEP[3 + i], label=f"{name} ({value:.3g})")


def _test_excess(ax, x: np.ndarray, grid: Grid, keep: np.ndarray, color, test_size: int | None,
                 final: Mapping | None) -> None:
    """The logged test excess: its median over repeats and 95% band between repeats, the band of ±2 Monte Carlo
    standard errors (of the logged test set) around the median when logged, and the final evaluation of the same
    models (mean over repeats, ±2 standard errors, on ``eval.n_test`` other sequences) as a point at the last step."""
    size = f", {test_size} logged sequences" if test_size else ""
    _band_plot(ax, x, grid["test_excess"][keep], f"test (Monte Carlo{size})", color)
    if grid.has("test_excess_se"):
        med = _band(grid["test_excess"][keep])[0]
        se = _band(grid["test_excess_se"][keep])[0]
        ax.fill_between(x, med - 2 * se, med + 2 * se, facecolor="none", edgecolor=color, hatch="////", lw=0,
                        alpha=0.6, label="±2 s.e. of the logged test set")
    if final is not None and np.isfinite(final.get("excess", np.nan)):
        ax.errorbar([final["step"]], [final["excess"]], yerr=[2 * final["se"]], fmt="o", color="k", ms=4, capsize=3,
                    zorder=5, label=f"final evaluation, {final['n_test']} sequences (±2 s.e.)")


def dynamics_figure(metrics, references: Mapping[str, float] | None = None,
                    title: str | None = None, n_trajectories: int = 3, final: Mapping | None = None,
                    test_size: int | None = None):
    """The four-panel figure of the paper's experiments (docs/training.md, The paper's five experiments) from a metrics
    table (one row per repeat and logged step; a DataFrame or
    row dicts).

    (a) excess risk vs step, median and 95% band over repeats, with horizontal reference lines (e.g. oracle,
    Bayes), the Monte Carlo error band of the logged test excess (on ``test_size`` sequences) and the ``final``
    evaluation (``step``, ``excess``, ``se``, ``n_test``) as a point with its error bar; (b) ``|kappa|`` and ``|nu|``;
    (c) ``(kappa, nu)`` trajectories of a few repeats coloured by step,
    chosen to span the final alignment (least to most aligned); (d) distance to the invariant manifold on a log
    axis. Returns ``(fig, axes)``.
    """
    grid = Grid(metrics)
    keep = _thin(len(grid.steps))
    x = grid.steps[keep]
    R = len(grid.repeats)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(12, 8.5))
        axes = fig.subplots(2, 2, gridspec_kw=dict(left=0.07, right=0.97, bottom=0.07, top=0.88, wspace=0.22,
                                                   hspace=0.3)).ravel()

        ax = axes[0]
        risk = "excess" if grid.has("excess") else "test_excess"
        if risk == "excess":
            _band_plot(ax, x, grid[risk][keep], "closed form", DEEP[0])
        if grid.has("test_excess"):
            _test_excess(ax, x, grid, keep, DEEP[1] if risk == "excess" else DEEP[0], test_size, final)
        _reference_lines(ax, references, grid[risk])
        ax.set(yscale="log", xlabel="step", ylabel="excess risk  E(f(X) - W)²")
        _title(ax, "(a) excess risk")
        ax.legend(fontsize=8)

        ax = axes[1]
        _band_plot(ax, x, np.abs(grid["kappa"][keep]), "|κ| = |<k,k*>|", DEEP[0])
        _band_plot(ax, x, np.abs(grid["nu"][keep]), "|ν| = |<v,v*>|", DEEP[2])
        ax.set(ylim=(-0.02, 1.02), xlabel="step", ylabel="overlap (unit vectors)")
        _title(ax, "(b) alignment")
        ax.legend(fontsize=8, loc="best")

        ax = axes[2]
        norm = plt.Normalize(grid.steps.min(), max(grid.steps.max(), 1))
        shown = _spread_repeats(grid, n_trajectories)
        for r in shown:
            j = int(np.flatnonzero(grid.repeats == r)[0])
            k, v = grid["kappa"][keep, j], grid["nu"][keep, j]
            ok = np.isfinite(k) & np.isfinite(v)
            ax.plot(k[ok], v[ok], color="0.7", lw=0.8, zorder=1)
            sc = ax.scatter(k[ok], v[ok], c=x[ok], cmap="viridis", norm=norm, s=9, zorder=2, linewidths=0)
            if ok.any():  # the label inside the panel (the colour bar is on its right)
                right = k[ok][-1] > 0.7
                ax.annotate(f"#{r}", (k[ok][-1], v[ok][-1]), fontsize=8, xytext=(-3 if right else 3, 3),
                            textcoords="offset points", ha="right" if right else "left")
        if shown:
            fig.colorbar(sc, cax=ax.inset_axes([1.04, 0.0, 0.045, 1.0]), label="step")  # follows the square panel
        ax.set(xlim=(-1.05, 1.05), ylim=(-1.05, 1.05), xlabel="κ = <k,k*>", ylabel="ν = <v,v*>")
        _title(ax, f"(c) trajectories of {min(n_trajectories, R)} repeats, least to most aligned")
        ax.set_aspect("equal")
        ax.set_anchor("W")  # the square panel at the left of its cell: room for the colour bar on its right

        ax = axes[3]
        dist = np.where(grid["dist_to_M"] > 0, grid["dist_to_M"], np.nan)[keep]
        if np.isfinite(dist).any():
            _band_plot(ax, x, dist, "median, 95% band", DEEP[4])
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        else:
            _no_data(ax, "on the manifold (distance 0)")
            ax.set_xlim(grid.steps.min(), max(grid.steps.max(), 1))
        ax.set(xlabel="step", ylabel="√(θ² + η² + ρ²)")
        _title(ax, "(d) distance to the manifold θ=η=ρ=0")
        _suptitle(fig, title, R)
    return fig, axes


def _spread_repeats(metrics, n: int) -> list:
    """``n`` repeats spread over the final alignment ``|kappa| + |nu|`` (lowest, ..., highest; ties by repeat):
    the trajectories panel shows the range of outcomes, not only the first repeats. ``metrics``: a :class:`Grid`
    or a metrics table."""
    grid = metrics if isinstance(metrics, Grid) else Grid(metrics)
    if n <= 0 or not len(grid.repeats):
        return []
    last = np.full(len(grid.repeats), -1.0)  # the last finite |kappa| + |nu| of each repeat (-1: none)
    score = np.abs(grid["kappa"]) + np.abs(grid["nu"])
    for j in range(len(grid.repeats)):
        finite = np.flatnonzero(np.isfinite(score[:, j]))
        if finite.size:
            last[j] = score[finite[-1], j]
    order = np.argsort(last, kind="stable")  # repeats are sorted already: ties stay in repeat order
    idx = np.unique(np.round(np.linspace(0, len(order) - 1, min(n, len(order)))).astype(int))
    return [int(grid.repeats[order[i]]) for i in idx]


def save(fig, path_stem: Path, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Save ``fig`` as ``<stem>.<fmt>`` for each format (PNG by default; ``("png", "pdf")`` for both) and close it."""
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        p = path_stem.with_suffix(f".{fmt}")
        fig.savefig(p, dpi=130)
        out.append(p)
    plt.close(fig)
    return out


def module_figure(metrics, references: Mapping[str, float] | None = None,
                  attention_references: Mapping[str, float] | None = None, title: str | None = None,
                  final: Mapping | None = None, test_size: int | None = None):
    """Training of a torch module (docs/transformer.md) from its metrics table (one row per repeat and logged step; a
    DataFrame or
    row dicts), median and 95% band over repeats: (a) Monte Carlo test excess risk vs step (on ``test_size`` logged
    sequences, with its Monte Carlo error band) with horizontal reference lines and the ``final`` evaluation as a
    point with its error bar; (b) the mean attention weight on the informative token ``J0`` with references (uniform
    ``1/L``, the Bayes
    posterior's); (c) ``|kappa|``, ``|nu|``: cosines of the effective key and value directions with ``k*``, ``v*``,
    when the module defines them. Returns ``(fig, axes)``."""
    grid = Grid(metrics, (*METRIC_COLUMNS, "attention_on_J0"))
    keep = _thin(len(grid.steps))
    x = grid.steps[keep]
    R = len(grid.repeats)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(17, 5.4))
        axes = fig.subplots(1, 3, gridspec_kw=dict(left=0.05, right=0.98, bottom=0.11, top=0.83, wspace=0.22))

        ax = axes[0]
        if grid.has("test_excess"):
            _test_excess(ax, x, grid, keep, DEEP[0], test_size, final)
            _reference_lines(ax, references, grid["test_excess"])
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        else:
            _no_data(ax, "no test excess logged (train.log_test_size=0)")
        ax.set(xlabel="step", ylabel="excess risk  E(f(X) - W)²")
        _title(ax, "(a) test excess risk")

        ax = axes[1]
        if grid.has("attention_on_J0"):
            _band_plot(ax, x, grid["attention_on_J0"][keep], "trained", DEEP[2])
            for i, (name, value) in enumerate((attention_references or {}).items()):
                if value is not None and np.isfinite(value):
                    ax.axhline(value, ls="--", lw=1, color=DEEP[5 + i], label=f"{name} ({value:.3g})")
            ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize=8, loc="best")
        else:
            _no_data(ax, "the module has no attention(X)")
        ax.set(xlabel="step", ylabel="mean attention weight on J0")
        _title(ax, "(b) attention on the informative token")

        ax = axes[2]
        if grid.has("kappa"):
            _band_plot(ax, x, np.abs(grid["kappa"][keep]), "|κ| = |cos(u_K, k*)|", DEEP[0])
            if grid.has("nu"):
                _band_plot(ax, x, np.abs(grid["nu"][keep]), "|ν| = |cos(u_V, v*)|", DEEP[2])
            ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize=8, loc="best")
        else:
            _no_data(ax, "no effective key/value directions\n(defined for pool=query, 1 block, 1 head, no MLP)")
        ax.set(xlabel="step", ylabel="cosine (dimensionless)")
        _title(ax, "(c) effective key and value directions")
        _suptitle(fig, title, R)
    return fig, axes


def _suptitle(fig, title: str | None, R: int) -> None:
    if title:
        fig.suptitle(f"{title}\nmedian and 95% band over {R} repeats")


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
