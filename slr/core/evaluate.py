"""Monte Carlo risks of any predictor, with standard errors, and paired comparisons with the Bayes-optimal estimator.

Per sample, ``E[(f(X) - W)^2 | X] = (f(X) - f*(X))^2 + Var(W | X)`` where ``f*`` and ``Var(W | X)`` are the
Bayes posterior mean and variance. The default estimator averages the right-hand side (Rao-Blackwellised:
unbiased, never noisier than averaging ``(f - W)^2``), and ``(f - f*)^2`` is the excess over Bayes, a paired
non-negative quantity with a small standard error even when both risks are large.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch

from slr.core.predictors import BayesOptimal, Predictor, predict_and_attention
from slr.core.reduced import ReducedTask, ReducedTokens, span_basis
from slr.core.seeding import torch_generator
from slr.core.task import Task
from slr.theory import bhattacharyya_distance

CHUNK_ELEMENTS = 2**22  # tokens' coordinates held at once while evaluating


class RunningMean:
    """Mean and standard error of samples arriving in chunks along the last axis (Chan's parallel update)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64).cpu().numpy()
        m = x.shape[-1]
        mean = x.mean(-1)
        m2 = ((x - mean[..., None]) ** 2).sum(-1)
        delta, n = mean - self.mean, self.n + m
        self.mean = self.mean + delta * m / n
        self.m2 = self.m2 + m2 + delta**2 * self.n * m / n
        self.n = n

    @property
    def se(self):
        return np.sqrt(self.m2 / (self.n - 1) / self.n) if self.n > 1 else np.full_like(np.asarray(self.mean), np.nan)


@dataclass
class Comparison:
    """One predictor's Monte Carlo excess risk and its excess over Bayes (arrays over repeats for batched ones)."""

    name: str
    excess: np.ndarray
    excess_se: np.ndarray
    over_bayes: np.ndarray
    over_bayes_se: np.ndarray
    n: int
    pooled_se: float = float("nan")  # Monte Carlo s.e. of the mean over repeats (samples are shared by repeats)
    pooled_over_bayes_se: float = float("nan")
    attention_on_J0: np.ndarray | None = None  # mean attention weight on the informative token (docs/transformer.md),
                                               # if any


def reduce(predictors: Sequence[Predictor], task: Task) -> tuple[list[Predictor], ReducedTask]:
    """Express predictors in an orthonormal basis of ``span{k*, v*, their vectors}`` and return the reduced task
    (docs/reduction.md §2)."""
    extra = [u for p in predictors for u in p.vectors if u is not task.k_star and u is not task.v_star]
    E = span_basis(task.k_star, task.v_star, *extra)  # (..., d, r)
    if E.shape[-1] > task.d:
        raise ValueError(f"the reduced sampler needs d >= {E.shape[-1]} for these predictors, got d={task.d}")
    reduced = ReducedTask.of(task, E.shape[-1])
    return [p.in_basis(E.to(reduced.dtype)) for p in predictors], reduced


def batches(task, n: int, generator: torch.Generator, chunk: int | None = None):
    """Samples of ``task`` in chunks of at most ``chunk`` sequences (default: a few million coordinates)."""
    width = task.L * (task.r if isinstance(task, ReducedTask) else task.d)
    chunk = chunk or max(1, CHUNK_ELEMENTS // width)
    for start in range(0, n, chunk):
        yield task.sample(min(chunk, n - start), generator, dtype=torch.float64)


def compare(predictors: Sequence[Predictor], task, n: int, seed: int = 0, *, simulator: str = "full",
            chunk: int | None = None) -> list[Comparison]:
    """Excess risk and excess over Bayes of every predictor on the same ``n`` test samples (Bayes first in the result)."""
    if simulator not in ("full", "reduced"):
        raise ValueError(f"simulator must be 'full' or 'reduced', got {simulator!r}")
    predictors = [bayes_of(task), *predictors]
    if simulator == "reduced" and not isinstance(task, ReducedTask):
        predictors, task = reduce(predictors, task)
    generator = torch_generator(seed, "eval", task.device)
    acc = [[RunningMean() for _ in range(4)] for _ in predictors]  # excess, over Bayes, and their repeat means
    att = [RunningMean() if callable(getattr(p, "attention", None)) else None for p in predictors]
    with torch.no_grad():
        for batch in batches(task, n, generator, chunk):
            if hasattr(predictors[0], "posterior"):  # Rao-Blackwellised: (f - f*)^2 + Var(W|X)
                f_star, var = predictors[0].posterior(batch.X)
            else:  # a user's task: its Bayes predictor has no posterior variance, so average (f - W)^2 itself
                f_star, var = None, None
                ref = (predictors[0].predict(batch.X) - batch.W).square()
            for p, (ex, ov, ex_pool, ov_pool), a in zip(predictors, acc, att):
                y, w = predict_and_attention(p, batch.X) if a is not None else (p.predict(batch.X), None)
                if f_star is not None:  # Rao-Blackwellised: (f - f*)^2 + Var(W|X)
                    d2 = (y - f_star).square()  # (..., m)
                    err, over = d2 + var, d2
                else:  # a user's task: (f - W)^2 itself, and the paired difference with its Bayes predictor
                    err = (y - batch.W).square()
                    over = err - ref
                ex.add(err)
                ov.add(over)
                ex_pool.add(err.reshape(-1, err.shape[-1]).mean(0))
                ov_pool.add(over.reshape(-1, over.shape[-1]).mean(0))
                if a is not None:
                    a.add(on_J0(w, batch.J0))
    return [Comparison(p.name, ex.mean, ex.se, ov.mean, ov.se, n, float(ex_pool.se), float(ov_pool.se),
                       None if a is None else a.mean)
            for p, (ex, ov, ex_pool, ov_pool), a in zip(predictors, acc, att)]


def bayes_of(task) -> Predictor:
    """The task's Bayes-optimal predictor: :class:`BayesOptimal` (with the posterior variance), or a user's task's own."""
    return task.bayes if hasattr(task, "bayes") else BayesOptimal.of(task)


def on_J0(weights: torch.Tensor, J0: torch.Tensor) -> torch.Tensor:
    """The weight on the informative token (..., m) of attention weights (..., m, L), ``J0`` (m,)
    (docs/transformer.md); with a set of ``s`` informative tokens, ``J0`` (m, s), the total weight on the set."""
    idx = J0.to(weights.device)
    idx = idx.unsqueeze(-1) if idx.dim() == 1 else idx  # (m, s)
    idx = idx.expand(*weights.shape[:-1], idx.shape[-1])
    return weights.gather(-1, idx).sum(-1)


def mc_excess(predictor: Predictor, task, n: int, seed: int = 0, *, simulator: str = "full",
              estimator: str = "rao-blackwell", chunk: int | None = None):
    """Monte Carlo excess risk ``E (f(X) - W)^2`` of ``predictor``: ``(mean, standard_error)``.

    ``estimator="plain"`` averages ``(f(X) - W)^2`` itself; the default averages its conditional expectation
    given ``X``. Batched predictors give arrays over their repeat axes.
    """
    if estimator == "rao-blackwell":
        row = compare([predictor], task, n, seed, simulator=simulator, chunk=chunk)[1]
        return _scalar(row.excess), _scalar(row.excess_se)
    if estimator != "plain":
        raise ValueError(f"estimator must be 'rao-blackwell' or 'plain', got {estimator!r}")
    if simulator == "reduced" and not isinstance(task, ReducedTask):
        (predictor,), task = reduce([predictor], task)
    acc = RunningMean()
    generator = torch_generator(seed, "eval", task.device)
    with torch.no_grad():
        for batch in batches(task, n, generator, chunk):
            acc.add((predictor.predict(batch.X) - batch.W).square())
    return _scalar(acc.mean), _scalar(acc.se)


def _scalar(x):
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


class LoggedTestSet:
    """The test sequences behind the Monte Carlo excess logged during training: ``n`` sequences drawn once from the
    task's ``log`` stream, with their Bayes posterior mean and variance (computed in float64), reused at every logged
    step. The curve of a run then moves only with the model (common random numbers), and a logged step costs one
    prediction, in ``dtype`` (float32 for the attention models: its rounding, 1e-7, is far below the Monte Carlo error
    of a thousand samples, and it halves the cost). Its standard error is logged beside it: the per-sample excess is
    heavy-tailed (a rare misattributed sequence costs ``O(M^2)``), so a small set can miss what the final evaluation's
    larger one sees (``docs/throughput.md`` §4)."""

    def __init__(self, task, n: int, seed: int, dtype: torch.dtype = torch.float64):
        generator = torch_generator(seed, "log", task.device)
        batch = task.sample(n, generator, dtype=torch.float64)
        bayes = bayes_of(task)
        with torch.no_grad():  # a user's task: no posterior, so (f - W)^2 itself (f* = W, Var = 0)
            f_star, var = bayes.posterior(batch.X) if hasattr(bayes, "posterior") else (batch.W, torch.zeros_like(batch.W))
        X = batch.X
        if dtype != torch.float64:
            X = type(X)(X.Z.to(dtype), X.q.to(dtype)) if isinstance(X, ReducedTokens) else X.to(dtype)
        self.batch, self.dtype = batch._replace(X=X), dtype
        self.f_star, self.var = f_star.to(dtype), var.to(dtype)

    def excess(self, predictor: Predictor, attention: bool = False) -> LoggedExcess:
        """Mean of ``(f - f*)^2 + Var(W|X)`` over the test sequences and its standard error, each (R,) for a
        predictor batched over repeats; with ``attention``, the mean weight on ``J0`` as well (one forward pass)."""
        with torch.no_grad():
            if attention:
                y, w = predict_and_attention(predictor, self.batch.X)
            else:
                y, w = predictor.predict(self.batch.X), None
            err = (y - self.f_star).square() + self.var
            n = err.shape[-1]
            se = err.to(torch.float64).std(-1) / math.sqrt(n) if n > 1 else torch.full(err.shape[:-1], math.nan)
            on = None if w is None else on_J0(w, self.batch.J0).mean(-1).cpu().numpy()
            return LoggedExcess(err.mean(-1, dtype=torch.float64).cpu().numpy(), se.cpu().numpy(), on)


class LoggedExcess(NamedTuple):
    """What :meth:`LoggedTestSet.excess` measures: ``excess`` and ``se`` (R,), ``attention_on_J0`` (R,) or None."""

    excess: np.ndarray
    se: np.ndarray
    attention_on_J0: np.ndarray | None


# ----- Bayes excess by exact importance sampling (docs/bayes.md §4) -------------------------------------------------
def _proposal(task, seed: int):
    """The importance sampler's proposal for ``task`` (docs/bayes.md): ``log`` of the Bhattacharyya coefficient, and
    ``tokens(shape, mean, var)`` drawing tokens from ``N(mean k*, var I)`` through their ``k*``, ``v*`` coordinates and
    squared norm, which returns the log-likelihood ratio of each (informative vs noise token) and its ``v*`` coordinate,
    each (*shape), from the ``eval`` stream of ``seed``."""
    d, g2, M = task.d, task.gamma**2, task.M
    gen = torch_generator(seed, "eval")
    rng = np.random.default_rng(torch.randint(0, 2**62, (1,), generator=gen).item())

    def tokens(shape, mean: float, var: float):
        z = torch.randn(*shape, 2, generator=gen, dtype=torch.float64)
        kc, vc = mean + math.sqrt(var) * z[..., 0], math.sqrt(var) * z[..., 1]
        rest = var * torch.as_tensor(rng.chisquare(d - 2, shape) if d > 2 else np.zeros(shape), dtype=torch.float64)
        llr = M * kc / g2 - M**2 / (2 * g2) + 0.5 * (1 - 1 / g2) * (kc**2 + vc**2 + rest) - 0.5 * d * math.log(g2)
        return llr, vc

    return -bhattacharyya_distance(d, task.gamma, task.signal), tokens


def bayes_excess_is(task, n: int, seed: int = 0, chunk: int = 2**16) -> tuple[float, float]:
    """Bayes excess ``(L-1) P12 + C(L-1,2) P23`` by importance sampling: ``(mean, standard_error)``.

    Below about ``1e-308`` (``d`` in the thousands at the paper's ``gamma``) the mean underflows to 0; use
    :func:`bayes_excess_is_log10` there, which returns the same estimate as a base-10 logarithm.
    """
    log10_mean, rel_se = bayes_excess_is_log10(task, n, seed, chunk)
    mean = 10.0**log10_mean
    return mean, mean * rel_se


def bayes_excess_is_log10(task, n: int, seed: int = 0, chunk: int = 2**16) -> tuple[float, float]:
    """Bayes excess by importance sampling, in log space: ``(log10 of the mean, relative standard error)``.

    ``Var(W|X) = sum_{l<l'} pi_l pi_l' (y_l - y_l')^2`` and, by exchangeability, the pairs are (J0, noise) or
    (noise, noise). The two tokens of the pair are drawn from the geometric-mean density
    ``g = N(M k*/(1+gamma^2), 2 gamma^2/(1+gamma^2) I)`` and reweighted; the others from their own laws. Tokens
    are simulated through their ``k*``, ``v*`` coordinates and squared norm (docs/reduction.md §2), so the cost does not
    depend
    on ``d``. Both pair terms are estimated on the same draws; each draw's contribution is kept as a logarithm and
    averaged by log-mean-exp, so the estimate never underflows.
    """
    d, L, g2, M = task.d, task.L, task.gamma**2, task.M
    if L == 1:
        return -math.inf, 0.0
    log_bc = -bhattacharyya_distance(d, task.gamma, task.signal)
    sg2 = 2.0 * g2 / (1.0 + g2)  # variance of the proposal g per direction
    mg = M / (1.0 + g2)  # mean of g along k*
    gen = torch_generator(seed, "eval")
    rng = np.random.default_rng(torch.randint(0, 2**62, (1,), generator=gen).item())

    def tokens(m, mean, var):
        """``(<x,k*>, <x,v*>, ||x||^2)`` of ``m`` tokens of ``N(mean k*, var I_d)``: shapes (m, L')."""
        z = torch.randn(m, 2, generator=gen, dtype=torch.float64)
        kc, vc = mean + math.sqrt(var) * z[:, 0], math.sqrt(var) * z[:, 1]
        rest = var * torch.as_tensor(rng.chisquare(d - 2, m) if d > 2 else np.zeros(m), dtype=torch.float64)
        return kc, vc, kc**2 + vc**2 + rest

    def llr(kc, sq):
        """``log p1(x)/p0(x)``: informative vs noise density."""
        return M * kc / g2 - M**2 / (2 * g2) + 0.5 * (1 - 1 / g2) * sq - 0.5 * d * math.log(g2)

    log_n12, log_n23 = math.log(L - 1), math.log((L - 1) * (L - 2) / 2) if L > 2 else -math.inf
    logs = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        # P12: pair (J0, noise) from g; P23: pair (noise, noise) from g with J0 from p1; the rest from p0
        ka, va, sa = tokens(m, mg, sg2)
        kb, vb, sb = tokens(m, mg, sg2)
        la, lb = llr(ka, sa), llr(kb, sb)
        others = [tokens(m, 0.0, 1.0) for _ in range(max(L - 2, 0))]
        lo = [llr(k, s) for k, _, s in others]
        log_dv2 = torch.log((va - vb) ** 2)
        log_s = torch.logsumexp(torch.stack([la, lb, *lo]), 0)
        log_p12 = 2 * log_bc + 1.5 * la + 0.5 * lb - 2 * log_s + log_dv2
        if L > 2:
            kj, _, sj = tokens(m, M, g2)
            lj = llr(kj, sj)
            log_s23 = torch.logsumexp(torch.stack([lj, la, lb, *lo[1:]]), 0)
            log_p23 = 2 * log_bc + 0.5 * (la + lb) - 2 * log_s23 + log_dv2
            logs.append(torch.logaddexp(log_n12 + log_p12, log_n23 + log_p23))
        else:
            logs.append(log_n12 + log_p12)
    log_v = torch.cat(logs)
    top = log_v.max()
    w = torch.exp(log_v - top)  # the draws rescaled by the largest: no underflow of the mean
    mean_w = w.mean()
    rel_se = float(w.std() / math.sqrt(w.numel()) / mean_w) if w.numel() > 1 else math.nan
    return float((top + torch.log(mean_w)) / math.log(10.0)), rel_se


def bayes_excess_is_sets_log10(task, n: int, seed: int = 0) -> tuple[float, float]:
    """Bayes excess with ``s`` informative tokens by importance sampling, in log space
    (``docs/variant-several-tokens.md``): ``(log10 of the mean, relative standard error)``.

    ``Var(W|X) = (1/2) sum_{S, S'} P(S|X) P(S'|X) (W_S - W_S')^2`` over ordered pairs of sets; with
    ``p(X) = p0(X) e_s(r) / C(L, s)``, ``E[P(S|X) P(S'|X) h] = E_0[r_S r_S' / e_s(r) h] / C(L, s)``. A pair enters
    only through ``k = |S ∩ S'|``: the ``k`` shared tokens are drawn from ``N1`` (``N0 r^2 = N1 r``), the ``2(s-k)``
    tokens of the symmetric difference from the geometric-mean density ``g`` (``N0 r = BC g sqrt(r)``), the others
    from ``N0``, with weight ``BC^(2(s-k)) prod_shared r prod_diff sqrt(r) / e_s(r)``; there are
    ``C(L,s) C(s,k) C(L-s,s-k)`` ordered pairs with overlap ``k``. Each ``k`` has its own draws; ``k = s`` adds 0.
    """
    from slr.core.predictors import log_elementary_symmetric

    L, g2, M, s = task.L, task.gamma**2, task.M, task.n_informative
    if s == L:
        return -math.inf, 0.0
    log_bc, tokens = _proposal(task, seed)

    means, variances = [], []  # per overlap k: log of the contribution's mean, and its variance relative to the total
    for k in range(max(0, 2 * s - L), s):
        j = s - k  # tokens in S \ S' (and as many in S' \ S)
        log_pairs = math.log(math.comb(s, k) * math.comb(L - s, j) / 2)  # C(L,s) cancels the 1/C(L,s)
        logs = []
        chunk = max(1, 2**20 // L)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            l_sh, _ = tokens((m, k), M, g2)  # shared: N1
            l_a, y_a = tokens((m, j), M / (1 + g2), 2 * g2 / (1 + g2))  # S \ S': g
            l_b, y_b = tokens((m, j), M / (1 + g2), 2 * g2 / (1 + g2))  # S' \ S: g
            l_0, _ = tokens((m, L - s - j), 0.0, 1.0)  # the rest: N0
            log_e = log_elementary_symmetric(torch.cat([l_sh, l_a, l_b, l_0], -1), s)[..., s]  # (m,)
            dw2 = (y_a.sum(-1) - y_b.sum(-1)) ** 2
            logs.append(2 * j * log_bc + l_sh.sum(-1) + 0.5 * (l_a.sum(-1) + l_b.sum(-1)) - log_e + torch.log(dw2))
        log_v = torch.cat(logs) + log_pairs
        top = log_v.max()
        x = torch.exp(log_v - top)
        means.append(float(top + torch.log(x.mean())))
        variances.append((float(top), float(x.var() / x.numel()) if x.numel() > 1 else math.nan))
    log_total = float(torch.logsumexp(torch.tensor(means), 0))
    var_rel = sum(v * math.exp(2 * (t - log_total)) for t, v in variances)  # sum of the k's variances / total^2
    return log_total / math.log(10.0), math.sqrt(var_rel)


def bayes_excess_is_prior_log10(task, n: int, seed: int = 0) -> tuple[float, float]:
    """Bayes excess under a position prior ``w`` by importance sampling, in log space (``docs/variant-prior.md``):
    ``(log10 of the mean, relative standard error)``.

    ``Var(W|X) = sum_{l<m} pi_l pi_m (y_l - y_m)^2`` and ``E[pi_l pi_m h(X)] = w_l w_m E_0[r_l r_m / S h]`` with
    ``S = sum_j w_j r_j`` and ``E_0`` over noise tokens only. Drawing tokens ``l``, ``m`` from the geometric-mean
    density ``g`` (``N1 = BC g sqrt(r)``) and the others from ``N0`` gives, for every pair,
    ``w_l w_m BC^2 E[sqrt(r_a r_b) / S (y_a - y_b)^2]``: one set of draws serves all pairs, the two ``g`` tokens put
    at positions ``l``, ``m`` and the noise tokens at the others. Tokens are simulated through their ``k*``, ``v*``
    coordinates and squared norm (cost independent of ``d``).
    """
    L, g2, M = task.L, task.gamma**2, task.M
    w = (task.prior if task.prior is not None else torch.full((L,), 1.0 / L)).to(torch.float64)
    if L == 1:
        return -math.inf, 0.0
    log_bc, tokens = _proposal(task, seed)

    pairs = torch.combinations(torch.arange(L), 2)  # (P, 2)
    rest = torch.stack([torch.tensor([k for k in range(L) if k not in (int(l), int(m))], dtype=torch.long)
                        for l, m in pairs]) if L > 2 else torch.zeros(len(pairs), 0, dtype=torch.long)  # (P, L-2)
    log_w = torch.log(w)
    chunk = max(1, 2**22 // (len(pairs) * L))
    logs = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        la, va = tokens((m,), M / (1 + g2), 2 * g2 / (1 + g2))
        lb, vb = tokens((m,), M / (1 + g2), 2 * g2 / (1 + g2))
        lz, _ = tokens((m, L - 2), 0.0, 1.0)  # (m, L-2)
        terms = torch.cat([(log_w[pairs[:, 0]][:, None] + la)[..., None], (log_w[pairs[:, 1]][:, None] + lb)[..., None],
                           log_w[rest][:, None, :] + lz[None]], -1)  # (P, m, L)
        log_s = torch.logsumexp(terms, -1)  # (P, m)
        per_pair = (log_w[pairs].sum(-1)[:, None] + 2 * log_bc + 0.5 * (la + lb) - log_s
                    + torch.log((va - vb) ** 2))  # (P, m)
        logs.append(torch.logsumexp(per_pair, 0))
    log_v = torch.cat(logs)
    top = log_v.max()
    x = torch.exp(log_v - top)
    rel_se = float(x.std() / math.sqrt(x.numel()) / x.mean()) if x.numel() > 1 else math.nan
    return float((top + torch.log(x.mean())) / math.log(10.0)), rel_se

