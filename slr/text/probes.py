"""Linear probes on the hidden states (``docs/text.md``): logistic regressions fitted on the train split and scored
on every split, per layer.

- ``cls``: the label from the first token's state (the paper's [CLS] probe);
- ``mean``: the label from the mean of the sentence's token states (padding excluded);
- ``k_star``: a token-level probe separating the label adjective's tokens from the others; its accuracy is how often
  the highest-scoring token of a sentence is one of the label adjective's (``argmax_l <X_l, k> in J0``);
- ``v_star``: the label from the label adjective's state alone (the mean over its tokens).
"""
from __future__ import annotations

import numpy as np

from slr.text.encoder import HiddenStates
from slr.text.sentences import SPLITS, Sentences

FEATURES = ("cls", "mean", "k_star", "v_star")


def _classifier(C: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))


def pooled(X: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_l w_l X_l / sum_l w_l``: the weighted mean of the token states (N, T, d) -> (N, d)."""
    w = weights.astype(np.float32)
    return np.einsum("nt,ntd->nd", w, X, dtype=np.float32) / w.sum(1, keepdims=True)


def probe_layer(X: np.ndarray, sentences: Sentences, mask: np.ndarray, j0: np.ndarray, *, C: float = 1.0,
                max_iter: int = 1000, token_sentences: int = 2000, seed: int = 0) -> list[dict]:
    """The four probes on one layer's states ``X`` (N, T, d); rows ``{features, split, accuracy}``. The ``k_star``
    probe is fitted on the tokens of ``token_sentences`` train sentences drawn with ``seed``."""
    X = np.asarray(X, dtype=np.float32)
    y = sentences.y
    train = sentences.index("train")
    feats = {"cls": X[:, 0], "mean": pooled(X, mask), "v_star": pooled(X, j0)}
    rows = []
    for name in ("cls", "mean"):
        clf = _classifier(C, max_iter).fit(feats[name][train], y[train])
        rows += [dict(features=name, split=s, accuracy=float(clf.score(feats[name][sentences.index(s)],
                                                                         y[sentences.index(s)]))) for s in SPLITS]
    sub = np.random.default_rng(seed).choice(train, size=min(token_sentences, train.size), replace=False)
    tokens = X[sub][mask[sub]]  # (n_tokens, d)
    k_clf = _classifier(C, max_iter).fit(tokens, j0[sub][mask[sub]])
    N, T, d = X.shape
    scaler, logistic = k_clf[0], k_clf[-1]
    k = (logistic.coef_[0] / scaler.scale_).astype(np.float32)  # the probe's direction in raw coordinates
    score = X @ k  # (N, T): <X_l, k>, the score of every token up to a constant
    hit = j0[np.arange(N), np.where(mask, score, -np.inf).argmax(1)]  # (N,) is the top token the adjective's
    rows += [dict(features="k_star", split=s, accuracy=float(hit[sentences.index(s)].mean())) for s in SPLITS]
    v_clf = _classifier(C, max_iter).fit(feats["v_star"][train], y[train])
    rows += [dict(features="v_star", split=s, accuracy=float(v_clf.score(feats["v_star"][sentences.index(s)],
                                                                         y[sentences.index(s)]))) for s in SPLITS]
    return rows


def probe_all(states: HiddenStates, sentences: Sentences, **kw) -> list[dict]:
    """:func:`probe_layer` for every state 0..n_layers; rows ``{layer, features, split, accuracy}``."""
    return [dict(layer=i, **row) for i in range(states.n_states)
            for row in probe_layer(states.layer(i), sentences, states.mask, states.j0, **kw)]
