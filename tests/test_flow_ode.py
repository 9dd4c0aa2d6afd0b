"""The overlap ODE of the gradient flow (docs/dynamics.md): drift against the flow of explicit d-vectors, Jacobian against
central finite differences, the gradient norm against the vectors' projected gradients."""
from __future__ import annotations

import numpy as np
import pytest

from slr.theory import ErfRiskJet, signal_norm
from slr.theory.flow import overlap_drift, overlap_drift_and_jacobian, riemannian_grad_norm

D, L, GAMMA = 400, 10, np.sqrt(0.5)


def _vectors(rng, n, d=7):
    """``n`` random (k, v) pairs of unit vectors with k* = e1, v* = e2 in R^d, and their overlaps (n, 5)."""
    k = rng.standard_normal((n, d))
    v = rng.standard_normal((n, d))
    k[:, :2] += 2.0 * rng.standard_normal((n, 2))  # overlaps away from 0
    v[:, :2] += 2.0 * rng.standard_normal((n, 2))
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    o = np.stack([k[:, 0], v[:, 1], v[:, 0], k[:, 1], (k * v).sum(1)], axis=1)
    return k, v, o


@pytest.mark.parametrize("lam", [0.1, 0.9])
def test_drift_is_the_flow_of_the_vectors(lam):
    rng = np.random.default_rng(0)
    k, v, o = _vectors(rng, 20)
    _, G, _ = ErfRiskJet(lam, M=signal_norm(D, None), L=L, gamma=GAMMA)(*o.T)
    Rk, Rn, Rt, Re, Rr = G.T
    d = k.shape[1]
    ks, vs = np.eye(d)[0], np.eye(d)[1]
    gk = Rk[:, None] * ks + Re[:, None] * vs + Rr[:, None] * v  # Euclidean gradients in R^d
    gv = Rn[:, None] * vs + Rt[:, None] * ks + Rr[:, None] * k
    dk = -(gk - (k * gk).sum(1, keepdims=True) * k)  # minus the Riemannian gradients
    dv = -(gv - (v * gv).sum(1, keepdims=True) * v)
    expected = np.stack([dk[:, 0], dv[:, 1], dv[:, 0], dk[:, 1], (dk * v).sum(1) + (k * dv).sum(1)], axis=1)
    got = overlap_drift(o, lam, d=D, L=L, gamma=GAMMA)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    norm = np.sqrt((dk**2).sum(1) + (dv**2).sum(1))
    np.testing.assert_allclose(riemannian_grad_norm(o, G), norm, rtol=1e-10)


@pytest.mark.parametrize("lam", [0.05, 0.5, 2.0])
def test_jacobian_matches_finite_differences(lam):
    rng = np.random.default_rng(1)
    _, _, o = _vectors(rng, 8)
    kw = dict(d=D, L=L, gamma=GAMMA)
    f, J = overlap_drift_and_jacobian(o, lam, **kw)
    h = 1e-6
    fd = np.empty_like(J)
    for j in range(5):
        e = np.zeros(5)
        e[j] = h
        fd[..., j] = (overlap_drift(o + e, lam, **kw) - overlap_drift(o - e, lam, **kw)) / (2 * h)
    err = np.abs(J - fd).max(axis=(1, 2)) / np.abs(J).max(axis=(1, 2))  # per point, relative to its largest entry
    assert err.max() < 1e-7, err
