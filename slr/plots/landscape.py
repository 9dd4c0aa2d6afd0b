"""Tables in, figures out, for ``slr-landscape``: the critical points of one run on the excess axis, the risk along
the path from the oracle to the swapped point, basin fractions; and the bifurcation picture of a sweep over ``lam``."""
from __future__ import annotations


import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402

from slr.landscape import LABELS as LABEL_ORDER  # noqa: E402
from slr.plots.dynamics import DEEP, _no_data, styled  # noqa: E402
INDEX_BINS = (0, 1, 2, 3, 10, 100, 1000, 10**9)  # index classes: 0, 1, 2, 3-9, 10-99, 100-999, >= 1000


def index_colors():
    """A discrete colour map and norm for Hessian indices (classes :data:`INDEX_BINS`; 0 = minimum)."""
    cmap = ListedColormap(["#d62728", "#ff7f0e", "#e6c229", "#2ca02c", "#17becf", "#1f77b4", "#6a3d9a"])
    return cmap, BoundaryNorm(INDEX_BINS, cmap.N)


def _index_colorbar(fig, ax, cmap, norm) -> None:
    cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, spacing="uniform",
                      ticks=[(a + b) / 2 for a, b in zip(INDEX_BINS, INDEX_BINS[1:])])
    cb.ax.set_yticklabels(["0 (min.)", "1", "2", "3-9", "10-99", "100-999", "≥1000"])
    cb.set_label("Hessian index (negative eigenvalues,\nwith multiplicity, for the full d)")


@styled
def landscape_figure(table: pd.DataFrame, path: tuple[np.ndarray, np.ndarray] | None = None, title: str | None = None):
    """(a) every critical point at its excess (log axis), one row per label, coloured by its Hessian index and
    annotated with it (a star marks minima); (b) the excess along the geodesic from the oracle to the swapped point;
    (c) with basins, the fraction of PGD end points in each critical point's basin (± one standard error)."""
    basins = "basin_fraction" in table and table["basin_count"].sum() > 0
    fig, axes = plt.subplots(1, 3 if basins else 2, figsize=(17 if basins else 12.5, 5.2), layout="constrained")
    cmap, norm = index_colors()
    ax = axes[0]
    labels = [lbl for lbl in LABEL_ORDER if (table["label"] == lbl).any()]
    for _, r in table.iterrows():
        y = labels.index(r["label"])
        minimum = r["index"] == 0
        ax.scatter(max(r["excess"], 1e-300), y, s=190 if minimum else 60, marker="*" if minimum else "o",
                   color=cmap(norm(r["index"])), edgecolor="black", lw=0.6, zorder=3)
        ax.annotate(f"{r['index']}", (r["excess"], y), xytext=(0, 8), textcoords="offset points", ha="center",
                    fontsize=7)
    _index_colorbar(fig, ax, cmap, norm)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    if (table["excess"] > 0).all() and table["excess"].max() / table["excess"].min() > 10:
        ax.set_xscale("log")
    ax.set(xlabel="excess risk  E(f(X) − W)²  (units of Y²)", ylabel="critical point",
           title="(a) critical points (★ minima; number: index)")
    ax = axes[1]
    if path is not None:
        t, risk = path
        ax.plot(t, risk, color="C0", lw=1.8)
        ax.scatter([0, 1], [risk[0], risk[-1]], color="black", zorder=3)
        ax.annotate(f"oracle\n{risk[0]:.4g}", (0, risk[0]), xytext=(6, 6), textcoords="offset points", fontsize=8)
        ax.annotate(f"swapped\n{risk[-1]:.4g}", (1, risk[-1]), xytext=(-50, 6), textcoords="offset points", fontsize=8)
        i = int(risk.argmax())
        ax.annotate(f"max {risk[i]:.4g}", (t[i], risk[i]), xytext=(0, 6), textcoords="offset points", fontsize=8,
                    ha="center")
        if risk.min() > 0 and risk.max() / risk.min() > 100:
            ax.set_yscale("log")
        ax.set(xlabel="t on the geodesic of the product of spheres (0: oracle, 1: swapped point)",
               ylabel="excess risk (units of Y²)", title="(b) risk on the path oracle → swapped point")
    else:
        _no_data(ax, "no oracle–swapped pair among the critical points")
        ax.set(title="(b) risk on the path oracle → swapped point")
    if basins:
        ax = axes[2]
        b = table[table["basin_count"] > 0].sort_values("basin_fraction")
        names = [f"{r['label']}, index {r['index']}\nexcess {r['excess']:.4g}" for _, r in b.iterrows()]
        ax.barh(range(len(b)), b["basin_fraction"], xerr=b["basin_se"], color=[cmap(norm(i)) for i in b["index"]],
                edgecolor="black", capsize=3)
        ax.set_yticks(range(len(b)), names, fontsize=8)
        n = int(table["basin_count"].sum())
        ax.set(xlim=(0, 1), xlabel=f"fraction of PGD end points (± s.e.; {n} assigned runs)",
               title="(c) basins of PGD from train.init")
    if title:
        fig.suptitle(title)
    return fig, axes


@styled
def bifurcation_figure(points: pd.DataFrame, basins: pd.DataFrame | None = None, title: str | None = None):
    """The landscape vs ``lam`` from one table of critical points of many runs (columns ``lam``, ``family``,
    ``label``, ``excess``, ``index``): (a) excess of each family (a line per family, markers coloured by index,
    stars for minima), (b) index of each family (symlog axis), (c) with ``basins`` (columns ``lam``, ``label``,
    ``fraction``, ``se``), the fraction of PGD end points per label vs ``lam`` with error bars."""
    with_basins = basins is not None and len(basins)
    fig, axes = plt.subplots(1, 3 if with_basins else 2, figsize=(18 if with_basins else 12.5, 5.4),
                             layout="constrained")
    cmap, norm = index_colors()
    palette = dict(zip(LABEL_ORDER, DEEP))
    for fam, f in points.groupby("family", sort=False):
        f = f.sort_values("lam")
        color = palette.get(f["label"].iloc[0], "0.5")
        axes[0].plot(f["lam"], f["excess"], color=color, lw=1.0, alpha=0.8, zorder=2)
        axes[1].plot(f["lam"], f["index"], color=color, lw=1.0, alpha=0.8, zorder=2)
        for ax, ycol in ((axes[0], "excess"), (axes[1], "index")):
            mins = f["index"] == 0
            ax.scatter(f.loc[~mins, "lam"], f.loc[~mins, ycol], s=18, color=cmap(norm(f.loc[~mins, "index"])),
                       edgecolor="black", lw=0.3, zorder=3)
            ax.scatter(f.loc[mins, "lam"], f.loc[mins, ycol], s=90, marker="*", color=cmap(norm(0)),
                       edgecolor="black", lw=0.5, zorder=4)
    for lbl, c in palette.items():
        if (points["label"] == lbl).any():
            axes[0].plot([], [], color=c, label=f"{lbl} families")
    axes[0].legend(fontsize=8, loc="upper left")
    _index_colorbar(fig, axes[1], cmap, norm)
    axes[0].set(xscale="log", yscale="log", xlabel="inverse temperature λ", ylabel="excess risk (units of Y²)",
                title="(a) critical points vs λ (★ minima)")
    axes[1].set_yscale("symlog", linthresh=1.0)
    axes[1].set_ylim(-0.3, max(2.0, float(points["index"].max())) * 2)
    axes[1].set(xscale="log", xlabel="inverse temperature λ",
                ylabel="Hessian index (with multiplicity)", title="(b) index of each family")
    if with_basins:
        ax = axes[2]
        for lbl, g in basins.groupby("label", sort=False):
            g = g.sort_values("lam")
            ax.errorbar(g["lam"], g["fraction"], yerr=g["se"], marker="o", capsize=3, label=lbl,
                        color=palette.get(lbl, "0.3"))
        ax.set(xscale="log", ylim=(-0.03, 1.03), xlabel="inverse temperature λ (at the end of PGD)",
               ylabel="fraction of PGD end points (± s.e.)", title="(c) basins of PGD from the sphere")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig, axes
