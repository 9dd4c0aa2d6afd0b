"""The polynomial tool behind the SGD limit's inner integrals (slr/theory/gaussian_polynomials.py): products, Gaussian
expectations (Isserlis) and the flattened batched evaluation, each against an independent computation — exact
Gauss-Hermite tensor rules on the polynomial evaluated directly, Monte Carlo, and the textbook moments."""
from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import Z4
from slr.theory.gaussian_polynomials import Algebra, evaluate, gaussian_expectation, term_table


def _value(p, names, **values):
    """A polynomial evaluated term by term at the given values (broadcasting)."""
    return sum(c * math.prod(np.asarray(values[n], dtype=float) ** e for n, e in zip(names, k)) for k, c in p.items())


def test_products_and_powers_expand_like_the_numbers():
    A = Algebra(("x", "y"))
    x, y = A.var("x"), A.var("y")
    p = A.mul(A.add(x, A.scale(y, -2.0), A.const(3.0)), A.pow(A.add(x, y), 3))
    for xv, yv in [(0.3, -1.2), (2.0, 0.5), (-1.5, -0.7)]:
        assert _value(p, A.names, x=xv, y=yv) == pytest.approx((xv - 2 * yv + 3) * (xv + yv) ** 3, rel=1e-14)
    assert A.add(x, A.scale(x, -1.0)) == {}  # cancelled terms are dropped


def test_textbook_bivariate_moments():
    A = Algebra(("U", "V"))
    U, V = A.var("U"), A.var("V")
    covs = {("U", "U"): "a", ("U", "V"): "b", ("V", "V"): "c"}
    expect = {(4, 0): {(2, 0, 0): 3.0}, (3, 1): {(1, 1, 0): 3.0}, (2, 2): {(1, 0, 1): 1.0, (0, 2, 0): 2.0},
              (1, 3): {(0, 1, 1): 3.0}, (2, 0): {(1, 0, 0): 1.0}, (1, 1): {(0, 1, 0): 1.0}, (3, 0): {}, (2, 1): {}}
    for (p, q), want in expect.items():
        got, names = gaussian_expectation(A.mul(A.pow(U, p), A.pow(V, q)), A.names, ("U", "V"), covs)
        assert names == ("a", "b", "c")
        assert got == want, (p, q)
    # six factors: 15 matchings of U^6 give 15 a^3
    got, _ = gaussian_expectation(A.pow(U, 6), A.names, ("U", "V"), covs)
    assert got == {(3, 0, 0): 15.0}


def test_expectation_against_an_exact_tensor_rule():
    """A random polynomial in (t, U, V) with (U, V) correlated: E over (U, V) by the expansion against 5x5 Gauss-Hermite
    (exact for these degrees) on U = s1 g1, V = c1 g1 + c2 g2."""
    rng = np.random.default_rng(0)
    A = Algebra(("t", "U", "V"))
    t, U, V = A.var("t"), A.var("U"), A.var("V")
    p = A.mul(A.add(A.scale(t, rng.normal()), U, A.scale(V, rng.normal())),
              A.pow(A.add(A.mul(t, U), A.scale(V, 0.7), A.const(rng.normal())), 3))
    s1, c1, c2 = 0.8, -0.3, 1.1
    covs = {("U", "U"): "Suu", ("U", "V"): "Suv", ("V", "V"): "Svv"}
    Ep, names = gaussian_expectation(p, A.names, ("U", "V"), covs)
    g, w = np.polynomial.hermite_e.hermegauss(5)
    w = w / w.sum()
    G1, G2 = np.meshgrid(g, g, indexing="ij")
    W = np.outer(w, w)
    for tv in (-1.3, 0.0, 0.9):
        ref = float((W * _value(p, A.names, t=tv, U=s1 * G1, V=c1 * G1 + c2 * G2)).sum())
        got = _value(Ep, names, t=tv, Suu=s1 * s1, Suv=s1 * c1, Svv=c1 * c1 + c2 * c2)
        assert got == pytest.approx(ref, rel=1e-12, abs=1e-12)


def test_expectation_against_monte_carlo():
    A = Algebra(("U", "V"))
    U, V = A.var("U"), A.var("V")
    p = A.add(A.mul(A.pow(U, 2), A.pow(V, 2)), A.scale(A.pow(V, 3), 2.0), A.mul(U, V))
    Ep, names = gaussian_expectation(p, A.names, ("U", "V"), {("U", "U"): "a", ("U", "V"): "b", ("V", "V"): "c"})
    cov = np.array([[1.5, -0.6], [-0.6, 0.8]])
    X = np.random.default_rng(1).multivariate_normal([0.0, 0.0], cov, size=400_000)
    x = X[:, 0] ** 2 * X[:, 1] ** 2 + 2 * X[:, 1] ** 3 + X[:, 0] * X[:, 1]
    got = _value(Ep, names, a=1.5, b=-0.6, c=0.8)
    assert abs(got - x.mean()) < Z4 * x.std() / math.sqrt(len(x))


def test_batched_evaluation_equals_the_sum_over_nodes():
    """``evaluate``: sum over nodes of w * P(f(z), z, scalars) for several outputs, against the polynomials evaluated
    node by node (two functions of z, z itself, two scalars; per-point and shared nodes)."""
    A = Algebra(("f", "g", "z", "s", "u"))
    f, g, z, s, u = (A.var(n) for n in A.names)
    polys = [A.mul(A.pow(f, 3), A.add(s, A.mul(z, u))), A.add(A.mul(g, A.pow(z, 2), s, s), A.const(2.0)),
             A.mul(f, g, A.pow(A.add(z, u), 2))]
    table = term_table(polys, 2)
    rng = np.random.default_rng(2)
    n, K = 4, 7
    for shared in (False, True):
        zz = rng.normal(size=(1 if shared else n, K))
        ww = rng.random(zz.shape)
        ff, gg = np.tanh(zz), np.exp(-zz * zz)
        sc = rng.normal(size=(n, 2))
        got = evaluate(table, [ff, gg], zz, ww, sc)  # (n, 3)
        for i in range(n):
            for o, p in enumerate(polys):
                j = 0 if shared else i
                ref = (ww[j] * _value(p, A.names, f=ff[j], g=gg[j], z=zz[j], s=sc[i, 0], u=sc[i, 1])).sum()
                assert got[i, o] == pytest.approx(ref, rel=1e-13), (shared, i, o)
    with pytest.raises(ValueError, match="zero polynomial"):
        term_table([{}], 2)
