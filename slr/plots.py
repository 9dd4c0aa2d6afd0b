"""Tables in, figures out: repeats summarised as median and 95% band, and the training-dynamics figure."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from slr.io import METRIC_COLUMNS  # noqa: E402


def band(df: pd.DataFrame, column: str, by: str = "step", level: float = 0.95) -> pd.DataFrame:
    """Per value of ``by``: median of ``column`` over repeats and the central ``level`` interval (lo, hi)."""
    q = (1 - level) / 2
    g = df.dropna(subset=[column]).groupby(by)[column]
    return pd.DataFrame({"median": g.median(), "lo": g.quantile(q), "hi": g.quantile(1 - q), "n": g.size()}).reset_index()


def _band_plot(ax, table: pd.DataFrame, label: str, color, x: str = "step") -> None:
    ax.plot(table[x], table["median"], color=color, label=label, lw=1.6)
    ax.fill_between(table[x], table["lo"], table["hi"], color=color, alpha=0.22, lw=0)


def dynamics_figure(metrics: pd.DataFrame, references: Mapping[str, float] | None = None,
                    title: str | None = None, n_trajectories: int = 3):
    """The four-panel figure of SPEC 5 from a metrics table (one row per repeat and logged step).

    (a) excess risk vs step, median and 95% band over repeats, with horizontal reference lines (e.g. oracle,
    Bayes); (b) ``|kappa|`` and ``|nu|``; (c) ``(kappa, nu)`` trajectories of a few repeats coloured by step,
    chosen to span the final alignment (least to most aligned); (d) distance to the invariant manifold on a log
    axis. Returns ``(fig, axes)``.
    """
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    palette = sns.color_palette("deep")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), layout="constrained")
    axes = axes.ravel()
    df = metrics.reindex(columns=list(dict.fromkeys([*metrics.columns, *METRIC_COLUMNS])))
    df["abs_kappa"], df["abs_nu"] = df["kappa"].abs(), df["nu"].abs()
    R = df["repeat"].nunique()

    ax = axes[0]
    risk = "excess" if df["excess"].notna().any() else "test_excess"
    _band_plot(ax, band(df, risk), "closed form" if risk == "excess" else "test (Monte Carlo)", palette[0])
    if risk == "excess" and df["test_excess"].notna().any():
        _band_plot(ax, band(df, "test_excess"), "test (Monte Carlo)", palette[1])
    lo = np.nanmin(df[risk][df[risk] > 0]) if (df[risk] > 0).any() else 1e-12
    for i, (name, value) in enumerate((references or {}).items()):
        if value is None or not np.isfinite(value) or value <= 0:
            continue
        if value < lo / 1e3:  # far below the curves: named in the legend, not drawn, so the curves stay readable
            ax.plot([], [], ls="none", label=f"{name}: {value:.2g} (below the axis)")
        else:
            ax.axhline(value, ls="--", lw=1, color=palette[3 + i], label=f"{name} ({value:.3g})")
    ax.set(yscale="log", xlabel="step", ylabel="excess risk  E(f(X) - W)²", title="(a) excess risk")
    ax.legend(fontsize=8)

    ax = axes[1]
    _band_plot(ax, band(df, "abs_kappa"), "|κ| = |<k,k*>|", palette[0])
    _band_plot(ax, band(df, "abs_nu"), "|ν| = |<v,v*>|", palette[2])
    ax.set(ylim=(-0.02, 1.02), xlabel="step", ylabel="overlap (unit vectors)", title="(b) alignment")
    ax.legend(fontsize=8, loc="best")

    ax = axes[2]
    steps = df["step"].to_numpy()
    norm = plt.Normalize(steps.min(), max(steps.max(), 1))
    for r in _spread_repeats(df, n_trajectories):
        run = df[df["repeat"] == r]
        ax.plot(run["kappa"], run["nu"], color="0.7", lw=0.8, zorder=1)
        sc = ax.scatter(run["kappa"], run["nu"], c=run["step"], cmap="viridis", norm=norm, s=9, zorder=2)
        ax.annotate(f"#{r}", (run["kappa"].iloc[-1], run["nu"].iloc[-1]), fontsize=8, xytext=(3, 3),
                    textcoords="offset points")
    if n_trajectories and len(df):
        fig.colorbar(sc, ax=ax, label="step")
    ax.set(xlim=(-1.05, 1.05), ylim=(-1.05, 1.05), xlabel="κ = <k,k*>", ylabel="ν = <v,v*>",
           title=f"(c) trajectories of {min(n_trajectories, R)} repeats, least to most aligned")
    ax.set_aspect("equal")

    ax = axes[3]
    dist = df[df["dist_to_M"] > 0]
    if len(dist):
        _band_plot(ax, band(dist, "dist_to_M"), "median, 95% band", palette[4])
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "on the manifold (distance 0)", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlim(steps.min(), max(steps.max(), 1))
    ax.set(xlabel="step", ylabel="√(θ² + η² + ρ²)", title="(d) distance to the manifold θ=η=ρ=0")
    if title:
        fig.suptitle(f"{title}\nmedian and 95% band over {R} repeats")
    return fig, axes


def _spread_repeats(df: pd.DataFrame, n: int) -> list:
    """``n`` repeats spread over the final alignment ``|kappa| + |nu|`` (lowest, ..., highest; ties by repeat):
    the trajectories panel shows the range of outcomes, not only the first repeats."""
    last = df.sort_values("step").groupby("repeat").last()
    score = (last["kappa"].abs() + last["nu"].abs()).fillna(-1.0).sort_index(kind="stable").sort_values(kind="stable")
    if n <= 0 or score.empty:
        return []
    idx = np.unique(np.round(np.linspace(0, len(score) - 1, min(n, len(score)))).astype(int))
    return [score.index[i] for i in idx]


def save(fig, path_stem: Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``<stem>.<fmt>`` for each format and close it."""
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        p = path_stem.with_suffix(f".{fmt}")
        fig.savefig(p, dpi=130)
        out.append(p)
    plt.close(fig)
    return out


def module_figure(metrics: pd.DataFrame, references: Mapping[str, float] | None = None,
                  attention_references: Mapping[str, float] | None = None, title: str | None = None):
    """Training of a torch module (SPEC 9) from its metrics table (one row per repeat and logged step), median and
    95% band over repeats: (a) Monte Carlo test excess risk vs step with horizontal reference lines; (b) the mean
    attention weight on the informative token ``J0`` with references (uniform ``1/L``, the Bayes posterior's);
    (c) ``|kappa|``, ``|nu|``: cosines of the effective key and value directions with ``k*``, ``v*``, when the
    module defines them. Returns ``(fig, axes)``."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    palette = sns.color_palette("deep")
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), layout="constrained")
    df = metrics.reindex(columns=list(dict.fromkeys([*metrics.columns, *METRIC_COLUMNS, "attention_on_J0"])))
    R = df["repeat"].nunique()

    ax = axes[0]
    if df["test_excess"].notna().any():
        _band_plot(ax, band(df, "test_excess"), "test (Monte Carlo)", palette[0])
        lo = np.nanmin(df["test_excess"][df["test_excess"] > 0]) if (df["test_excess"] > 0).any() else 1e-12
        for i, (name, value) in enumerate((references or {}).items()):
            if value is None or not np.isfinite(value) or value <= 0:
                continue
            if value < lo / 1e3:
                ax.plot([], [], ls="none", label=f"{name}: {value:.2g} (below the axis)")
            else:
                ax.axhline(value, ls="--", lw=1, color=palette[3 + i], label=f"{name} ({value:.3g})")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "no test excess logged (train.log_test_size=0)")
    ax.set(xlabel="step", ylabel="excess risk  E(f(X) - W)²", title="(a) test excess risk")

    ax = axes[1]
    if df["attention_on_J0"].notna().any():
        _band_plot(ax, band(df, "attention_on_J0"), "trained", palette[2])
        for i, (name, value) in enumerate((attention_references or {}).items()):
            if value is not None and np.isfinite(value):
                ax.axhline(value, ls="--", lw=1, color=palette[5 + i], label=f"{name} ({value:.3g})")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8, loc="best")
    else:
        _no_data(ax, "the module has no attention(X)")
    ax.set(xlabel="step", ylabel="mean attention weight on J0", title="(b) attention on the informative token")

    ax = axes[2]
    if df["kappa"].notna().any():
        df["abs_kappa"], df["abs_nu"] = df["kappa"].abs(), df["nu"].abs()
        _band_plot(ax, band(df, "abs_kappa"), "|κ| = |cos(u_K, k*)|", palette[0])
        _band_plot(ax, band(df, "abs_nu"), "|ν| = |cos(u_V, v*)|", palette[2])
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8, loc="best")
    else:
        _no_data(ax, "no effective key/value directions\n(defined for pool=query, 1 block, 1 head, no MLP)")
    ax.set(xlabel="step", ylabel="cosine", title="(c) effective key and value directions")
    if title:
        fig.suptitle(f"{title}\nmedian and 95% band over {R} repeats")
    return fig, axes


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
