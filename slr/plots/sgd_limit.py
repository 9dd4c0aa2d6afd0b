"""Figures of the SGD-limit sweeps (``docs/dynamics.md``): chain bands against ODE curves at growing ``d``
(:func:`limit_figure`, from :func:`slr.results.sgd_limit.curves`) and the phase diagram of final states
(:func:`phase_figure`, from :func:`slr.results.sgd_limit.phase`)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from slr.results.sgd_limit import QUANTITIES, STATES  # noqa: E402

LABELS = {"abs_kappa": "median |kappa|", "abs_nu": "median |nu|", "excess": "median excess risk"}
COLOURS = {"aligned": "#4C72B0", "swapped": "#DD8452", "stalled": "#8C8C8C", "undecided": "#E6D98A",
           "unstable": "#C44E52"}


def limit_figure(curves: pd.DataFrame, B: int, path: Path) -> None:
    """One row per (start, delta) at batch ``B``, one column per quantity: the chain's median with its 10-90% band
    (solid), the ODE (dashed) and the plain flow (dotted), coloured by ``d``, against ``t = step/d``."""
    sub = curves[curves.B == B]
    combos = sorted({(i, dl) for i, dl in zip(sub.init, sub.delta)})
    ds = sorted(sub.d.unique())
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, len(ds)))
    fig, axes = plt.subplots(len(combos), 3, figsize=(13, 2.6 * len(combos)), squeeze=False)
    for r, (init, delta) in enumerate(combos):
        for c, q in enumerate(QUANTITIES):
            ax = axes[r, c]
            for colour, d in zip(colours, ds):
                g = sub[(sub.init == init) & (sub.delta == delta) & (sub.d == d)]
                ch, od, fl = (g[g.model == m] for m in ("chain", "ode", "flow"))
                ax.fill_between(ch.t, ch[q + "_lo"], ch[q + "_hi"], color=colour, alpha=0.12, lw=0)
                ax.plot(ch.t, ch[q], color=colour, lw=1.0, alpha=0.8, label=f"chain d={d}")
                ax.plot(od.t, od[q], color=colour, lw=1.6, ls="--", label=f"ODE d={d}")
                ax.plot(fl.t, fl[q], color=colour, lw=0.8, ls=":")
            ax.set_title(f"{init}, delta={delta:g}, B={B}", fontsize=9)
            ax.set_xlabel("t = step / d")
            ax.set_ylabel(LABELS[q])
    axes[0, 0].legend(fontsize=6, ncol=2)
    fig.suptitle("SGD limit: chain median (solid) with its 10-90% band, ODE (dashed), plain flow at step delta (dotted)",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def phase_figure(table: pd.DataFrame, path: Path, title: str) -> None:
    """One cell per (delta, lam0), a horizontal bar split by the fractions of final states."""
    deltas, lams = sorted(table.delta.unique()), sorted(table.lam0.unique())
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for _, r in table.iterrows():
        x, y = deltas.index(r.delta), lams.index(r.lam0)
        left = 0.0
        for s in STATES:
            if r[s] > 0:
                ax.barh(y, r[s] * 0.9, left=x - 0.45 + left * 0.9, height=0.8, color=COLOURS[s], edgecolor="white", lw=0.3)
                left += r[s]
    ax.set_xticks(range(len(deltas)), [f"{d:g}" for d in deltas])
    ax.set_yticks(range(len(lams)), [f"{lam:g}" for lam in lams])
    ax.set_xlabel("step delta = lr d")
    ax.set_ylabel("initial lam0 of lam_t = lam0 / (1 + rate t)")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()], labels=list(COLOURS),
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="final state (fraction)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
