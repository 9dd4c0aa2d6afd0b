"""Tables in, figures out, for the text features (``docs/text.md``): the probes of ``slr-probe`` per split and layer
beside the paper's BERT numbers, and the training of attention on a layer's tokens (``task=text``)."""
from __future__ import annotations


import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from slr.plots.dynamics import DEEP, styled  # noqa: E402

SPLITS = ("train", "test", "ood_tokens", "ood_structure", "ood_both")
SPLIT_TITLES = {"train": "train", "test": "test", "ood_tokens": "OOD\ntokens", "ood_structure": "OOD\nstructure",
                "ood_both": "OOD structure\n+ tokens"}
# The paper's [CLS] probes on bert-base-uncased, averaged over layers 1-12 (its probing figure)
PAPER_BERT = {"train": 1.00, "test": 0.95, "ood_tokens": 0.64, "ood_structure": 0.75, "ood_both": 0.69}
FEATURE_TITLES = {"cls": "first token ([CLS]) probe", "mean": "mean-pooled tokens probe",
                  "k_star": "k* probe: top token is the label adjective", "v_star": "v* probe: label from its token"}


def layer_average(probes: pd.DataFrame, features: str = "cls", first_layer: int = 1) -> pd.Series:
    """Accuracy per split of one probe averaged over layers ``first_layer`` and up (the paper averages 1-12)."""
    sel = probes[(probes["features"] == features) & (probes["layer"] >= first_layer)]
    return sel.groupby("split")["accuracy"].mean().reindex([s for s in SPLITS if s in set(sel["split"])])


@styled
def probe_figure(probes: pd.DataFrame, model: str, title: str | None = None):
    """(a) the paper's bars: [CLS]-probe accuracy per split averaged over layers 1.., ours beside the paper's BERT;
    (b)-(e) accuracy per layer of each probe (``probes``: rows layer, features, split, accuracy), one line per split.
    Returns ``fig, axes``."""
    features = [f for f in FEATURE_TITLES if f in set(probes["features"])]
    fig, grid = plt.subplots(2, 3, figsize=(15, 8.5))
    axes = grid.ravel()
    ax = axes[0]
    ours = layer_average(probes, "cls")
    x = np.arange(len(ours))
    n_layers = int(probes["layer"].max())
    for off, values, label, colour in ((-0.2, ours.to_numpy(), f"{model}, layers 1-{n_layers}", DEEP[0]),
                                       (0.2, [PAPER_BERT[s] for s in ours.index], "paper: BERT, layers 1-12", DEEP[7])):
        bars = ax.bar(x + off, values, width=0.4, color=colour, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(x, [SPLIT_TITLES[s] for s in ours.index], fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("accuracy of the [CLS] probe (mean over layers)")
    ax.set_title("(a) linear probe on the first token")
    ax.legend(loc="lower left", fontsize=8)
    for i, (ax, feat) in enumerate(zip(axes[1:], features)):
        sel = probes[probes["features"] == feat]
        for j, split in enumerate(SPLITS):
            row = sel[sel["split"] == split].sort_values("layer")
            if len(row):
                ax.plot(row["layer"], row["accuracy"], "o-", ms=3, color=DEEP[j], label=SPLIT_TITLES[split].replace("\n", " "))
        ax.axhline(0.5 if feat != "k_star" else np.nan, color="grey", lw=0.8, ls=":")
        ax.set_ylim(-0.02 if feat == "k_star" else 0.3, 1.04)
        ax.set_xlabel("layer (0: embeddings)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"({chr(98 + i)}) {FEATURE_TITLES[feat]}", fontsize=9)
    handles, labels = axes[1].get_legend_handles_labels()
    for extra in axes[1 + len(features):]:
        extra.axis("off")
    axes[-1].legend(handles, labels, title="split (probe fitted on train)", loc="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, axes


@styled
def text_training_figure(history: list[dict], summary: dict, title: str | None = None):
    """(a) training loss per repeat against the step; (b) accuracy per split of the trained attention (mean over
    repeats) beside the first-token least-squares baseline; (c) attention on the label adjective per split, with the
    uniform share. Returns ``fig, axes``."""
    h = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    for r, g in h.groupby("repeat"):
        ax.plot(g["step"], g["train_loss"], color=DEEP[0], alpha=0.6, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("ERM step")
    ax.set_ylabel("training squared loss (per repeat)")
    ax.set_title("(a) training")
    splits = [s for s in SPLITS if s in summary["accuracy"]]
    x = np.arange(len(splits))
    lin = summary["baselines"]["linear_first_token"]["accuracy"]
    for off, vals, label, colour in ((-0.2, [summary["accuracy"][s] for s in splits], summary["trained"]["predictor"], DEEP[0]),
                                     (0.2, [lin[s] for s in splits], "least squares on the first token", DEEP[7])):
        bars = axes[1].bar(x + off, vals, width=0.4, color=colour, label=label)
        axes[1].bar_label(bars, fmt="%.2f", fontsize=8)
    axes[1].set_xticks(x, [SPLIT_TITLES[s] for s in splits], fontsize=8)
    axes[1].set_ylim(0, 1.12)
    axes[1].set_ylabel("accuracy (sign of the prediction)")
    axes[1].set_title("(b) accuracy per split")
    axes[1].legend(fontsize=8, loc="lower left")
    att, uni = summary["attention_on_J0"], summary["baselines"]["uniform_on_J0"]
    axes[2].bar(x - 0.2, [np.nan if att[s] is None else att[s] for s in splits], width=0.4, color=DEEP[0], label="trained attention")
    axes[2].bar(x + 0.2, [uni[s] for s in splits], width=0.4, color=DEEP[7], label="uniform over the tokens")
    axes[2].set_xticks(x, [SPLIT_TITLES[s] for s in splits], fontsize=8)
    axes[2].set_ylim(0, 1)
    axes[2].set_ylabel("share of attention on the label adjective")
    axes[2].set_title("(c) attention on J0")
    axes[2].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, axes
