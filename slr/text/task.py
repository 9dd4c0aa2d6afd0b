"""The frozen token states of one layer as a finite single-location task (``docs/text.md``): the sentence is a
sequence of ``T`` token states (padding masked), the label adjective's tokens play ``J0`` and the label ``y = +-1``
plays ``W``. Erf or softmax attention with masks, trained by ERM on the train split, scored on every split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from slr.text.encoder import HiddenStates
from slr.text.sentences import SPLITS, Sentences


@dataclass
class Tokens:
    """One split's tokens: ``X`` (n, T, d) standardised float32, ``mask`` (n, T) real tokens, ``j0`` (n, T) the
    label adjective's tokens, ``y`` (n,) in {-1, +1}."""

    X: torch.Tensor
    mask: torch.Tensor
    j0: torch.Tensor
    y: torch.Tensor


class TextTask:
    """Layer ``layer`` of ``states``: ``n_train`` train sentences drawn with ``seed`` (all of them if fewer), and
    every split. Coordinates are standardised with the mean and standard deviation of the training tokens, so that
    ``<X_l, k>`` is O(1) for a unit ``k``, as in the Gaussian task."""

    def __init__(self, states: HiddenStates, sentences: Sentences, layer: int, n_train: int, seed: int):
        self.states, self.sentences, self.layer = states, sentences, layer
        self.X_all = states.layer(layer)  # (N, T, d) float16, memory-mapped
        train = sentences.index("train")
        rng = np.random.default_rng([seed, 22])
        self.train_rows = np.sort(rng.choice(train, size=min(n_train, train.size), replace=False))
        tokens = np.asarray(self.X_all[self.train_rows], np.float32)[states.mask[self.train_rows]]  # (n_tok, d)
        self.mu, self.sd = tokens.mean(0), tokens.std(0) + 1e-6
        self.T, self.d = self.X_all.shape[1:]

    def rows(self, rows: np.ndarray) -> Tokens:
        X = (np.asarray(self.X_all[rows], np.float32) - self.mu) / self.sd  # (n, T, d)
        mask = self.states.mask[rows]
        X[~mask] = 0.0  # padding carries nothing (and is masked out of every attention too)
        return Tokens(torch.from_numpy(X), torch.from_numpy(mask), torch.from_numpy(self.states.j0[rows]),
                      torch.from_numpy(self.sentences.y[rows].astype(np.float32)))

    def train(self) -> Tokens:
        return self.rows(self.train_rows)

    def split(self, name: str) -> Tokens:
        return self.rows(self.sentences.index(name))


def project(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``<X_l, w>`` for every token and row ``w`` of ``W``, as one matrix product: (n, T, d), (m, d) -> (m, n, T)."""
    n, T, d = X.shape
    return (X.reshape(n * T, d) @ W.T).reshape(n, T, -1).permute(2, 0, 1)


def weights(kind: str, s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``erf(s_l)`` (erf) or ``softmax_l(s_l)`` over the real tokens (softmax), zero on padding: (R, n, T)."""
    if kind == "erf":
        return torch.erf(s) * mask
    return torch.softmax(s.masked_fill(~mask, -torch.inf), -1)


def attention_weights(kind: str, lam: float, k: torch.Tensor, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The masked weights ``a_l = erf(lam <X_l, k>)`` or ``softmax_l(lam <X_l, k>)``: (R, d), (n, T, d) -> (R, n, T)."""
    return weights(kind, lam * project(X, k), mask)


def predict(kind: str, lam: float, k: torch.Tensor, v: torch.Tensor, tok: Tokens) -> torch.Tensor:
    """``T(X) = sum_l a_l(X) <X_l, v>`` with the masked weights of :func:`attention_weights`: (R, n)."""
    R = k.shape[0]
    S = project(tok.X, torch.cat([k, v]))  # (2R, n, T): keys and values in one pass over the tokens
    return (weights(kind, lam * S[:R], tok.mask) * S[R:]).sum(-1)


def attention_on_j0(kind: str, lam: float, k: torch.Tensor, tok: Tokens) -> torch.Tensor:
    """The share of attention on the label adjective's tokens, ``sum_{l in J0} |a_l| / sum_l |a_l|``, averaged over
    sentences: (R,). For softmax it is the weight on J0; for erf, whose weights are not normalised, their share."""
    return attention_shares(attention_weights(kind, lam, k, tok.X, tok.mask), tok)["J0"]


def attention_shares(a: torch.Tensor, tok: Tokens) -> dict:
    """Where the attention goes: the share ``sum_{l in S} |a_l| / sum_l |a_l|`` (averaged over sentences, (R,)) of
    the label adjective's tokens (``J0``), the first token (``first``: [CLS]) and the last real one (``last``: [SEP])."""
    a = a.abs()  # (R, n, T)
    total = a.sum(-1).clamp_min(1e-30)
    n, T = tok.mask.shape
    last = torch.zeros(n, T, dtype=torch.bool)
    last[torch.arange(n), tok.mask.sum(-1) - 1] = True
    first = torch.zeros(n, T, dtype=torch.bool)
    first[:, 0] = True
    return {name: ((a * S).sum(-1) / total).mean(-1) for name, S in (("J0", tok.j0), ("first", first), ("last", last))}


@dataclass
class Trained:
    kind: str
    lam: float
    k: torch.Tensor  # (R, d)
    v: torch.Tensor  # (R, d)
    history: list  # rows {step, repeat, train_loss, train_accuracy}


def train_erm(kind: str, lam: float, tok: Tokens, *, repeats: int, steps: int, lr: float, optimizer: str,
              projected: bool, log_every: int, seed: int) -> Trained:
    """ERM on the training sentences: ``repeats`` independent (k, v) from unit-sphere starts drawn with ``seed``,
    minimising the mean squared loss ``(T(X) - y)^2`` by full-batch gradient descent or Adam (one batched
    expression for all repeats); ``projected`` keeps ``k`` on the unit sphere (``lam`` sets the temperature), ``v``
    is free."""
    g = torch.Generator().manual_seed(seed)
    d = tok.X.shape[-1]
    k = torch.randn(repeats, d, generator=g)
    v = torch.randn(repeats, d, generator=g)
    k, v = (k / k.norm(dim=-1, keepdim=True)).requires_grad_(), (v / v.norm(dim=-1, keepdim=True)).requires_grad_()
    opt = torch.optim.Adam([k, v], lr=lr) if optimizer == "adam" else torch.optim.SGD([k, v], lr=lr)
    history = []
    for step in range(steps + 1):
        y_hat = predict(kind, lam, k, v, tok)  # (R, n)
        per_repeat = ((y_hat - tok.y) ** 2).mean(-1)  # (R,)
        if step % log_every == 0 or step == steps:
            acc, per = (torch.sign(y_hat) == tok.y).float().mean(-1).tolist(), per_repeat.detach().tolist()
            history += [dict(step=step, repeat=r, train_loss=per[r], train_accuracy=acc[r])
                        for r in range(repeats)]
        if step == steps:
            break
        opt.zero_grad()
        per_repeat.sum().backward()  # the repeats are independent: the sum's gradient is each one's
        opt.step()
        if projected:
            with torch.no_grad():
                k /= k.norm(dim=-1, keepdim=True)
    return Trained(kind, lam, k.detach(), v.detach(), history)


def least_squares_first_token(tok: Tokens, ridge: float = 1e-3) -> torch.Tensor:
    """The linear baseline on the first token's state (the [CLS] probe by least squares): ``beta`` (d + 1,) minimising
    ``sum_i (<X_i0, beta> + b - y_i)^2 + ridge ||beta||^2`` on the training sentences."""
    Z = torch.cat([tok.X[:, 0].double(), torch.ones(len(tok.y), 1, dtype=torch.float64)], 1)  # (n, d + 1)
    A = Z.T @ Z + ridge * torch.eye(Z.shape[1], dtype=torch.float64)
    return torch.linalg.solve(A, Z.T @ tok.y.double())


def evaluate_splits(trained, beta: torch.Tensor, task: TextTask) -> dict:
    """Accuracy (sign of the prediction), squared loss and attention on J0 of the trained predictors (mean and per
    repeat), and accuracy and loss of the first-token least-squares baseline, on every split."""
    out = {}
    for split in SPLITS:
        tok = task.split(split)
        with torch.no_grad():
            if isinstance(trained, Trained):
                y_hat = predict(trained.kind, trained.lam, trained.k, trained.v, tok)  # (R, n)
                a = attention_weights(trained.kind, trained.lam, trained.k, tok.X, tok.mask)
            else:  # torch modules
                y_hat, a = trained.predict(tok), trained.attention(tok)
            nan = torch.full((len(y_hat),), torch.nan, dtype=torch.float64)
            shares = {k: nan for k in ("J0", "first", "last")} if a is None else attention_shares(a, tok)
            att = shares["J0"].double()
            acc = (torch.sign(y_hat) == tok.y).double().mean(-1)
            loss = ((y_hat - tok.y) ** 2).double().mean(-1)
            lin = tok.X[:, 0].double() @ beta[:-1] + beta[-1]
        out[split] = dict(n=len(tok.y), accuracy=acc.numpy(), loss=loss.numpy(), attention_on_J0=att.numpy(),
                          attention_on_first=shares["first"].double().numpy(),
                          attention_on_last=shares["last"].double().numpy(),
                          uniform_on_J0=float((tok.j0.sum(-1) / tok.mask.sum(-1)).double().mean()),
                          linear_accuracy=float((torch.sign(lin) == tok.y).double().mean()),
                          linear_loss=float(((lin - tok.y) ** 2).mean()))
    return out


def train_modules(modules: list, tok: Tokens, *, steps: int, lr: float, optimizer: str, weight_decay: float,
                  log_every: int) -> list[dict]:
    """ERM of torch modules (the transformer, a user's module) on the training sentences: each ``module(X, mask=mask)``
    maps tokens (n, T, d) and the real-token mask (n, T) to predictions (n,); the mean squared loss of every repeat,
    full batch, one optimiser over all of them (``gd``/``sgd``, ``adam`` or ``adamw``). Returns the logged rows."""
    params = [p for m in modules for p in m.parameters()]
    opts = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    opt = opts.get(optimizer, torch.optim.SGD)(params, lr=lr, weight_decay=weight_decay)
    history = []
    for step in range(steps + 1):
        y_hat = torch.stack([m(tok.X, mask=tok.mask) for m in modules])  # (R, n)
        per_repeat = ((y_hat - tok.y) ** 2).mean(-1)  # (R,)
        if step % log_every == 0 or step == steps:
            acc, per = (torch.sign(y_hat) == tok.y).float().mean(-1).tolist(), per_repeat.detach().tolist()
            history += [dict(step=step, repeat=r, train_loss=per[r], train_accuracy=acc[r]) for r in range(len(modules))]
        if step == steps:
            break
        opt.zero_grad()
        per_repeat.sum().backward()
        opt.step()
    return history


@dataclass
class ModulePredictor:
    """Trained torch modules behind the attention interface of :func:`evaluate_splits`: ``predict(tok)`` (R, n) and,
    for modules with an ``attention(X, mask)``, ``attention_on_j0(tok)`` (R,) (else None)."""

    modules: list
    name: str
    history: list | None = None

    def predict(self, tok: Tokens) -> torch.Tensor:
        return torch.stack([m(tok.X, mask=tok.mask) for m in self.modules])

    def attention(self, tok: Tokens) -> torch.Tensor | None:
        """The modules' weights on the tokens (R, n, T), if every module has ``attention(X, mask)``; else None."""
        if not all(hasattr(m, "attention") for m in self.modules):
            return None
        return torch.stack([m.attention(tok.X, mask=tok.mask) for m in self.modules])
