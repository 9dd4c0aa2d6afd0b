"""Tables in, figures out, for sweeps: excess risk of every predictor against the swept parameter, and its ratio to
the Bayes-optimal excess. The tables are :func:`slr.results.sweep.series` output (one row per curve and x value, with
``label``, ``value``, ``se``, ``source``, ``ratio``, ``ratio_se``); nothing here knows which experiment made them.
"""
from __future__ import annotations

from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

# what a swept config key means, for axis labels (keys not listed are shown as they are)
AXIS_LABELS = {
    "task.d": "token dimension d",
    "task.L": "sequence length L (tokens)",
    "task.gamma": "informative-token scale γ",
    "task.eps": "output noise ε",
    "task.signal": "signal norm M",
    "task.n_informative": "informative tokens s",
    "task.df": "Student-t degrees of freedom df",
    "task.prior": "prior weight on position 1 (uniform: 1/L)",
    "predictor.lam": "inverse temperature λ",
    "train.n_train": "training-set size n (samples)",
    "train.steps": "training steps",
    "train.lr": "learning rate",
    "train.batch_size": "batch size",
    "eval.n_test": "test samples",
}
EXCESS_LABEL = "excess risk  E(f(X) − W)²  (units of Y²)"


def spans_decades(values, factor: float = 10.0) -> bool:
    """Whether positive ``values`` span at least a factor ``factor`` (then a log axis reads better)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and v.max() / v.min() >= factor


def _styles(labels, reference: str | None) -> dict[str, dict]:
    palette = sns.color_palette("tab10", max(len(labels), 3))
    markers = "osD^v<>pXh*"
    out, i = {}, 0
    for label in labels:
        if label == reference:
            out[label] = dict(color="black", marker="s", ls="-", lw=2.2, zorder=4)
            continue
        out[label] = dict(color=palette[i % len(palette)], marker=markers[i % len(markers)], ls="-", lw=1.6, zorder=3)
        i += 1
    return out


def _draw(ax, curves: pd.DataFrame, x: str, column: str, se: str, styles: dict, log_y: bool,
          skip=()) -> tuple[list, list[str]]:
    """One line with error bars per label; returns the legend entries ``(handle, text)`` and notes on values that
    a log axis cannot show."""
    notes, legend = [], []
    for label, c in curves.groupby("label", sort=False):
        if label in skip:
            continue
        c = c.sort_values(x)
        xs, ys, es = c[x].to_numpy(float), c[column].to_numpy(float), c[se].to_numpy(float)
        ok = np.isfinite(ys) & ((ys > 0) if log_y else True)
        if not ok.any():
            notes.append(f"{label}: no positive value to show")
            continue
        zero = ~ok & np.isfinite(ys)
        if zero.any():
            logs = c["log10"].to_numpy(float) if "log10" in c else np.full(len(c), np.nan)
            if np.isfinite(logs[zero]).all():  # below the floating-point range, known in log10
                at = ", ".join(f"10^{lg:.0f} at {v:g}" for v, lg in zip(xs[zero], logs[zero]))
                notes.append(f"{label}: below the axis, {at} ({x})")
            else:
                zeros = ", ".join(f"{v:g}" for v in xs[zero])
                notes.append(f"{label}: 0 at {x}={zeros} (not shown on a log axis)")
        st = dict(styles[label])
        closed = (c["source"] == "closed form").all() if "source" in c else False
        if closed:  # exact: a dashed line, no error bars
            st.update(ls="--", lw=1.3, ms=4)
            (h,) = ax.plot(xs[ok], ys[ok], **st)
            legend.append((h, label + " [closed form]"))
        else:
            hi = np.nan_to_num(es[ok])
            lo = np.minimum(hi, ys[ok] * 0.999) if log_y else hi  # keep the lower bar above 0 on a log axis
            legend.append((ax.errorbar(xs[ok], ys[ok], yerr=[lo, hi], capsize=3, ms=5, **st), label))
    return legend, notes


def _clip_far_below(ax, curves: pd.DataFrame, x: str, reference: str | None, styles: dict,
                    decades: float = 1.5) -> list[str]:
    """Keep the log axis on the other curves when the reference (Bayes) falls many decades below them: its points
    under the axis are drawn as arrows on the bottom edge with their values written beside them."""
    if reference is None:
        return []
    others = curves.loc[(curves["label"] != reference) & (curves["value"] > 0), "value"]
    ref = curves[(curves["label"] == reference) & (curves["value"] > 0)]
    if others.empty or ref.empty or ref["value"].min() >= others.min() / 10**decades:
        return []
    bottom, top = others.min() / 10**decades, max(others.max(), ref["value"].max()) * 3
    ax.set_ylim(bottom, top)
    below = ref[ref["value"] < bottom]
    trans = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for xv, v in zip(below[x], below["value"]):
        ax.plot([xv], [0.015], marker="v", color=styles[reference]["color"], ms=8, transform=trans, clip_on=False,
                zorder=5)
        ax.annotate(f"{v:.1e}", (xv, 0.015), xycoords=trans, xytext=(0, 8), textcoords="offset points", fontsize=8,
                    rotation=90, ha="center", va="bottom")
    return [f"▼ {reference} below the axis: its value is written above the arrow"] if len(below) else []


def _power_of_ten(v: float, _pos=None) -> str:
    """Tick label of a log10 value: ``10^k``, with a plain number for small k."""
    if abs(v) <= 2 and abs(v - round(v)) < 1e-9:
        return f"{10.0 ** round(v):g}"
    return f"$10^{{{v:g}}}$"


LEGEND_FONTSIZE = 9


def _wrap(text: str, fig, ncol: int) -> str:
    """``text`` broken into lines that fit one of ``ncol`` legend columns across the figure (a long label, e.g. a
    curve named by several overrides, would otherwise run past the figure's edge and be cut off)."""
    import textwrap

    char_in = 0.62 * LEGEND_FONTSIZE / 72  # a generous mean character width, in inches
    width = int(fig.get_figwidth() * 0.92 / ncol / char_in) - 6  # minus the handle and the column gap
    return "\n".join(textwrap.wrap(text, max(width, 20), subsequent_indent="  ")) or text


def _wrap_title(title: str, fig) -> str:
    """Each line of a figure title broken to fit the figure's width (a sweep's title names the task and the training
    and would otherwise be cut at both edges)."""
    import textwrap

    from matplotlib.font_manager import FontProperties

    size = FontProperties(size=plt.rcParams["figure.titlesize"]).get_size_in_points()
    width = max(int(fig.get_figwidth() * 0.95 / (0.6 * size / 72)), 20)
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


def excess_vs_parameter(curves: pd.DataFrame, x: str, *, reference: str | None = None, title: str | None = None,
                        xlabel: str | None = None, vlines: Mapping[str, float] | None = None):
    """Excess risk of every curve against ``x`` (left) and, when ``reference`` (the Bayes curve's label) has positive
    values, the ratio of each excess to the reference's (right, log axis). Log axes where values span a decade.

    ``curves``: :func:`slr.results.sweep.series` output; ``vlines``: labelled vertical markers (e.g. ``n = L d + 1``).
    Returns ``(fig, axes)``.
    """
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.15)
    labels = list(dict.fromkeys(curves["label"]))
    styles = _styles(labels, reference)
    has_ratio = reference is not None and "ratio" in curves and (curves["ratio"] > 0).any() and \
        (curves.loc[curves["label"] == reference, "value"] > 0).any()
    fig, axes = plt.subplots(1, 2 if has_ratio else 1, figsize=(14 if has_ratio else 8.5, 6.2), squeeze=False,
                             sharex=True, layout="constrained")
    axes = axes[0]
    log_x = bool((curves[x] > 0).all()) and spans_decades(curves[x])
    log_y = spans_decades(curves["value"])

    ax = axes[0]
    legend, notes = _draw(ax, curves, x, "value", "se", styles, log_y)
    ax.set(xlabel=xlabel or AXIS_LABELS.get(x, x), ylabel=EXCESS_LABEL, title="(a) excess risk")
    if log_y:
        ax.set_yscale("log")
        notes += _clip_far_below(ax, curves, x, reference, styles)

    if has_ratio:
        ax = axes[1]
        ratio = curves[(curves["label"] != reference) & (curves["ratio"] > 0)].copy()
        log_r = np.log10(ratio["ratio"])
        one = log_r.min() < 3  # ratio 1 is on the axis, or near enough to draw without squashing the rest
        if log_r.max() < 200:  # a log axis
            _draw(ax, ratio, x, "ratio", "ratio_se", styles, True)
            ax.set_yscale("log")
        else:  # log10 on a linear axis labelled in powers of ten: matplotlib's log axes overflow near 1e300
            ratio["log_ratio"] = log_r
            ratio["log_ratio_se"] = ratio["ratio_se"] / (ratio["ratio"] * np.log(10.0))
            _draw(ax, ratio, x, "log_ratio", "log_ratio_se", styles, False)
            ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=8, integer=True))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_power_of_ten))
        if one:
            legend.append((ax.axhline(1.0 if log_r.max() < 200 else 0.0, color="black", lw=1.2, ls=":"),
                           f"ratio 1 = {reference}"))
        else:
            notes.append(f"(b): every ratio is above 1000, ratio 1 = {reference} is off the axis")
        ax.set(xlabel=xlabel or AXIS_LABELS.get(x, x), ylabel="excess risk / Bayes excess risk  (ratio)",
               title="(b) ratio to the Bayes-optimal excess (where it is > 0)")
    for ax in axes:
        if log_x:
            ax.set_xscale("log")
        for i, (name, xv) in enumerate((vlines or {}).items()):
            h = ax.axvline(xv, color="0.35", ls=(0, (1, 2 + i)), lw=1.2)
            if ax is axes[0]:
                legend.append((h, name))
    legend += [(plt.Line2D([], [], ls="none"), note) for note in notes]
    ncol = 2 if has_ratio else 1
    fig.legend([h for h, _ in legend], [_wrap(t, fig, ncol) for _, t in legend], loc="outside lower center",
               ncol=ncol, fontsize=LEGEND_FONTSIZE, frameon=False)
    if title:
        fig.suptitle(_wrap_title(title, fig))
    return fig, axes


def excess_bars(curves: pd.DataFrame, *, reference: str | None = None, title: str | None = None):
    """Excess risk of every predictor of a sweep with no swept parameter (only seeds): horizontal bars with error
    bars, log axis when values span a decade. Returns ``(fig, ax)``."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.15)
    c = curves.reset_index(drop=True)
    styles = _styles(list(c["label"]), reference)
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(c) + 2.2), layout="constrained")
    y = np.arange(len(c))
    ax.barh(y, c["value"], xerr=c["se"], color=[styles[label]["color"] for label in c["label"]], capsize=3)
    ax.set_yticks(y, c["label"])
    ax.invert_yaxis()
    if spans_decades(c["value"]):
        ax.set_xscale("log")
    ax.set(xlabel=EXCESS_LABEL)
    fig.suptitle(_wrap_title(title or "excess risk of every predictor", fig))
    return fig, ax
