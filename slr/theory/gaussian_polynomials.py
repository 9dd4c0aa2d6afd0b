"""Polynomials with exact expectations over Gaussian variables, expanded once at import: the tool behind the inner
integrals of the SGD-limit quadrature (``docs/dynamics.md``, "The expectations: quadrature, never Monte Carlo").

A polynomial is a dict ``{exponents: coefficient}`` over named variables. :func:`gaussian_expectation` replaces the
powers of zero-mean jointly Gaussian variables by their moments (Isserlis), written in their covariances;
:func:`term_table` flattens several polynomials into arrays a batched evaluation contracts (``TermTable``).
"""
from __future__ import annotations

from collections import defaultdict
from itertools import product
from typing import NamedTuple

import numpy as np

Poly = dict  # {tuple of exponents: coefficient}


class Algebra:
    """Polynomials over the variables ``names`` (a tuple of strings)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = tuple(names)

    def var(self, name: str) -> Poly:
        return {tuple(int(n == name) for n in self.names): 1.0}

    def const(self, c: float) -> Poly:
        return {(0,) * len(self.names): float(c)} if c else {}

    @staticmethod
    def add(*ps: Poly) -> Poly:
        out: dict = defaultdict(float)
        for p in ps:
            for k, c in p.items():
                out[k] += c
        return {k: c for k, c in out.items() if c}

    @staticmethod
    def scale(p: Poly, c: float) -> Poly:
        return {k: c * v for k, v in p.items()} if c else {}

    @staticmethod
    def mul(*ps: Poly) -> Poly:
        out: Poly = ps[0]
        for q in ps[1:]:
            acc: dict = defaultdict(float)
            for (k1, c1), (k2, c2) in product(out.items(), q.items()):
                acc[tuple(a + b for a, b in zip(k1, k2))] += c1 * c2
            out = {k: c for k, c in acc.items() if c}
        return out

    def pow(self, p: Poly, n: int) -> Poly:
        return self.mul(self.const(1.0), *([p] * n))


def _moment(powers: tuple[int, ...], cov_names: dict[tuple[int, int], str]) -> dict[tuple[str, ...], float]:
    """``E prod_i G_i^{p_i}`` for zero-mean jointly Gaussian ``G`` as ``{sorted covariance names: coefficient}``: the
    sum over the perfect matchings of the multiset of factors (Isserlis), each pair ``(i, j)`` its covariance."""
    items = [i for i, p in enumerate(powers) for _ in range(p)]
    if len(items) % 2:
        return {}
    out: dict = defaultdict(float)

    def match(rest: list[int], chosen: tuple[str, ...]) -> None:
        if not rest:
            out[tuple(sorted(chosen))] += 1.0
            return
        first, others = rest[0], rest[1:]
        for k in range(len(others)):
            pair = tuple(sorted((first, others[k])))
            match(others[:k] + others[k + 1:], chosen + (cov_names[pair],))

    match(items, ())
    return dict(out)


def gaussian_expectation(p: Poly, names: tuple[str, ...], gaussians: tuple[str, ...],
                         cov_names: dict[tuple[str, str], str]) -> tuple[Poly, tuple[str, ...]]:
    """``E p`` over the zero-mean jointly Gaussian variables ``gaussians`` (the rest held fixed), as a polynomial
    over the other variables followed by the covariance names (the new variable tuple is returned with it);
    ``cov_names[(a, b)]`` names ``Cov(a, b)`` for ``a <= b`` in the order of ``gaussians``."""
    g_idx = [names.index(g) for g in gaussians]
    keep = [i for i in range(len(names)) if i not in g_idx]
    covs = tuple(dict.fromkeys(cov_names.values()))
    by_pair = {(gaussians.index(a), gaussians.index(b)): name for (a, b), name in cov_names.items()}
    out: dict = defaultdict(float)
    for k, c in p.items():
        for cov_term, m in _moment(tuple(k[i] for i in g_idx), by_pair).items():
            exps = tuple(k[i] for i in keep) + tuple(cov_term.count(name) for name in covs)
            out[exps] += c * m
    return {k: c for k, c in out.items() if c}, tuple(names[i] for i in keep) + covs


class TermTable(NamedTuple):
    """Polynomials ``P_o = sum_t coef_t f_t(z) z^r_t s^mu_t`` flattened for a batched evaluation, given the
    quadrature sums ``Y[phi, r] = sum_K w f_phi(z_K) z_K^r`` of the features ``f_phi`` (monomials in the functions of
    ``z``) and the scalars ``s`` (monomials over the remaining variables): the terms sorted by output, so that
    ``P_o`` is one segment sum of ``coef_t Y[phi_t, r_t] S[mu_t]``."""

    features: np.ndarray  # (F, n_functions): exponents of the functions of z in each feature
    z_degree: int
    scalars: np.ndarray  # (Mu, n_scalars): exponents of the scalars in each scalar monomial
    phi: np.ndarray  # (T,) feature of term t
    r: np.ndarray  # (T,) power of z
    mu: np.ndarray  # (T,) scalar monomial
    coef: np.ndarray  # (T,)
    starts: np.ndarray  # (n_outputs,) first term of each output


def term_table(polys: list[Poly], n_functions: int) -> TermTable:
    """Flatten ``polys`` over variables ``(functions of z..., z, scalars...)`` (``n_functions`` of the first kind);
    none may be zero."""
    feats, scal, rows, starts = {}, {}, [], []
    for p in polys:
        if not p:
            raise ValueError("a zero polynomial has no terms to sum")
        starts.append(len(rows))
        for k, c in p.items():
            f, r, s = k[:n_functions], k[n_functions], k[n_functions + 1:]
            rows.append((feats.setdefault(f, len(feats)), r, scal.setdefault(s, len(scal)), c))
    rows = np.array(rows, dtype=float)
    phi, r, mu = (rows[:, i].astype(np.int64) for i in range(3))
    return TermTable(np.array(list(feats), dtype=np.int64), int(r.max()), np.array(list(scal), dtype=np.int64),
                     phi, r, mu, rows[:, 3], np.array(starts, dtype=np.int64))


def _powers(x: np.ndarray, top: int, axis: int) -> np.ndarray:
    """``x^0 .. x^top`` stacked on a new ``axis`` (>= 0, or -1 for last), by repeated multiplication (exact integer
    powers, fast)."""
    ax = x.ndim if axis == -1 else axis
    out = np.empty(x.shape[:ax] + (top + 1,) + x.shape[ax:])
    at = (slice(None),) * ax
    out[at + (0,)] = 1.0
    for p in range(1, top + 1):
        np.multiply(out[at + (p - 1,)], x, out=out[at + (p,)])
    return out


def quadrature_sums(table: TermTable, functions: list[np.ndarray], z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``Y[phi, r] = sum_K w f_phi(z_K) z_K^r`` (n or 1, F, r) from the functions of ``z`` (each (n or 1, K)), the
    nodes ``z`` and weights ``w`` (n or 1, K)."""
    feats = None  # (n, F, K): each feature a product of powers of the functions of z
    for j, f in enumerate(functions):
        term = _powers(f, int(table.features[:, j].max()), 1)[:, table.features[:, j]]
        feats = term if feats is None else feats * term
    wz = _powers(z, table.z_degree, -1) * w[..., None]  # (n, K, r): the weights times z^r
    return np.matmul(feats, wz)


def contract(table: TermTable, Y: np.ndarray, scalars: np.ndarray) -> np.ndarray:
    """``P`` (n, n_outputs) from the quadrature sums ``Y`` (n or 1, F, r) and the scalars (n, n_scalars)."""
    powers = _powers(scalars, int(table.scalars.max()), -1)  # (n, n_scalars, p)
    S = powers[:, np.arange(scalars.shape[1]), table.scalars].prod(-1)  # (n, Mu): the scalar monomials
    Yt = Y.reshape(len(Y), -1)[:, table.phi * Y.shape[-1] + table.r]  # (n or 1, T)
    return np.add.reduceat(Yt * S[:, table.mu] * table.coef, table.starts, axis=1)


def evaluate(table: TermTable, functions: list[np.ndarray], z: np.ndarray, w: np.ndarray,
             scalars: np.ndarray) -> np.ndarray:
    """``P`` (n, n_outputs): :func:`quadrature_sums` then :func:`contract`."""
    return contract(table, quadrature_sums(table, functions, z, w), scalars)
