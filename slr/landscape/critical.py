"""The landscape of the population risk of erf attention on the product of unit spheres (docs/landscape.md).

Points are ``(k, v)`` in the reduced coordinates of docs/reduction.md §3: arrays ``KV`` of shape (N, 2, 4) on an
orthonormal basis
``(k*, v*, e3, e4)``, so ``k* = e1``, ``v* = e2``. The risk depends on a point only through its five overlaps, and
its Riemannian gradient and Hessian are exact for any ``d`` at the cost of ``d = 4``: the gradient lies in
``span{k*, v*, k, v}``; the Hessian is a 6x6 matrix on the tangent space of ``S^3 x S^3`` plus, on every direction
orthogonal to ``e1..e4`` (``d - 4`` of them), the same 2x2 block ``[[-a, R_rho], [R_rho, -b]]`` acting on
``(xi_k, xi_v)``. Rotations fixing ``k*`` and ``v*`` leave the risk unchanged; their orbit through a point is spanned
by the rotation of the ``(e3, e4)`` plane and, in each outer direction ``w``, by ``(k_i w, v_i w)`` for ``i = 3, 4``;
those directions are exact zero modes of the Hessian at a critical point and are counted apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from slr.theory import OVERLAPS, ErfRiskJet, erf_excess, signal_norm

SWAP = np.block([[np.zeros((4, 4)), np.eye(4)], [np.eye(4), np.zeros((4, 4))]])  # Hessian of rho in (k, v)


# ----- overlaps, gradient and Hessian in reduced coordinates ----------------------------------------------------
def overlaps(KV: np.ndarray) -> np.ndarray:
    """``(kappa, nu, theta, eta, rho)`` of points (N, 2, 4) -> (N, 5)."""
    k, v = KV[:, 0], KV[:, 1]
    return np.stack([k[:, 0], v[:, 1], v[:, 0], k[:, 1], (k * v).sum(-1)], axis=-1)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).sum(-1, keepdims=True))


def tangent_basis(u: np.ndarray) -> np.ndarray:
    """Orthonormal bases (N, 4, 3) of the planes ``u^⟂`` for unit vectors ``u`` (N, 4)."""
    _, vecs = np.linalg.eigh(np.eye(u.shape[-1]) - u[:, :, None] * u[:, None, :])  # eigenvalues 0, 1, 1, 1
    return vecs[:, :, 1:]


class Landscape:
    """The risk ``R`` of erf attention at one ``lam`` for a task ``(d, L, gamma, M)``, on the product of spheres."""

    def __init__(self, lam: float, *, d: int, L: int, gamma: float, M: float):
        self.lam, self.d, self.L, self.gamma, self.M = float(lam), int(d), int(L), float(gamma), float(M)
        self.jet = ErfRiskJet(lam, M=M, L=L, gamma=gamma)

    def excess(self, KV: np.ndarray) -> np.ndarray:
        """Closed-form excess (docs/closed-forms.md §4) of unit points (N, 2, 4) -> (N,)."""
        return erf_excess(self.lam, *overlaps(KV).T, d=self.d, L=self.L, gamma=self.gamma, signal=self.M)

    def derivatives(self, KV: np.ndarray):
        """``(R, Euclidean gradient (N, 8), Euclidean Hessian (N, 8, 8), a, b)`` of docs/landscape.md §2 at points (N,
        2, 4).

        ``grad_k R = R_kappa k* + R_eta v* + R_rho v``, ``grad_v R = R_nu v* + R_theta k* + R_rho k``; the Hessian is
        ``J^T H J + R_rho [[0, I], [I, 0]]`` with ``J`` (5 x 8) the Jacobian of the overlaps and ``H`` their 5x5
        second partials; ``a = <k, grad_k R>``, ``b = <v, grad_v R>``.
        """
        k, v = KV[:, 0], KV[:, 1]
        R, g5, H5 = self.jet(*overlaps(KV).T)
        Rk, Rn, Rt, Re, Rr = np.moveaxis(g5, -1, 0)
        N = len(KV)
        e1, e2 = np.eye(4)[0], np.eye(4)[1]
        J = np.zeros((N, 5, 8))
        J[:, 0, :4] = e1  # kappa = <k, k*>
        J[:, 1, 4:] = e2  # nu = <v, v*>
        J[:, 2, 4:] = e1  # theta = <v, k*>
        J[:, 3, :4] = e2  # eta = <k, v*>
        J[:, 4, :4], J[:, 4, 4:] = v, k  # rho = <k, v>
        grad = np.einsum("ni,nij->nj", g5, J)  # (N, 8)
        hess = np.einsum("nai,nab,nbj->nij", J, H5, J) + Rr[:, None, None] * SWAP
        a = (k * grad[:, :4]).sum(-1)
        b = (v * grad[:, 4:]).sum(-1)
        return R, grad, hess, a, b, Rr

    def riemannian_gradient(self, KV: np.ndarray) -> np.ndarray:
        """``(P_k grad_k R, P_v grad_v R)`` (N, 8); its norm is the gradient norm in ``R^d x R^d``."""
        k, v = KV[:, 0], KV[:, 1]
        _, grad, _, a, b, _ = self.derivatives(KV)
        return np.concatenate([grad[:, :4] - a[:, None] * k, grad[:, 4:] - b[:, None] * v], axis=-1)

    def riemannian_hessian(self, KV: np.ndarray):
        """``(B, H, block)``: tangent bases ``B`` (N, 8, 6) of ``S^3 x S^3``, the Riemannian Hessian ``H`` (N, 6, 6)
        on them (``Hess R[xi] = P(d2R xi) - (a xi_k, b xi_v)``, docs/landscape.md §2), and the 2x2 out-of-span blocks
        (N, 2, 2)."""
        _, _, hess, a, b, Rr = self.derivatives(KV)
        N = len(KV)
        B = np.zeros((N, 8, 6))
        B[:, :4, :3] = tangent_basis(KV[:, 0])
        B[:, 4:, 3:] = tangent_basis(KV[:, 1])
        shift = np.concatenate([np.repeat(a[:, None], 4, 1), np.repeat(b[:, None], 4, 1)], axis=1)  # (N, 8)
        H = B.transpose(0, 2, 1) @ (hess - shift[:, None, :] * np.eye(8)) @ B
        block = np.stack([np.stack([-a, Rr], -1), np.stack([Rr, -b], -1)], -2)
        return B, 0.5 * (H + H.transpose(0, 2, 1)), block

    # ----- Newton on the gradient ------------------------------------------------------------------------------
    def newton(self, KV0: np.ndarray, *, tol: float = 1e-10, max_iter: int = 100, max_step: float = 0.5,
               extra: int = 2):
        """Riemannian Newton iterations on the gradient from every start (N, 2, 4), vectorised: solve
        ``Hess R[xi] = -grad R`` in the tangent space (pseudo-inverse: the symmetry zero modes carry no gradient),
        cap ``|xi|`` at ``max_step``, retract ``k <- (k + xi_k)/|k + xi_k|``. Converges to saddles as to minima.

        Returns ``(KV, grad_norm, converged)``; a start has converged once its gradient norm is at most ``tol``
        (then ``extra`` more iterations polish it, kept only if they lower the norm).
        """
        KV = unit(np.array(KV0, dtype=float))
        N = len(KV)
        gnorm = np.full(N, np.inf)
        left = np.full(N, extra + 1)  # iterations still to take once converged
        active = np.ones(N, dtype=bool)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            for _ in range(max_iter + extra):
                if not active.any():
                    break
                idx = np.flatnonzero(active)
                X = KV[idx]
                g = self.riemannian_gradient(X)
                gn = np.sqrt((g * g).sum(-1))
                better = ~(gn >= gnorm[idx])  # NaN-safe: a worse polish step is undone below
                gnorm[idx] = np.where(better, gn, gnorm[idx])
                done = gnorm[idx] <= tol
                left[idx[done]] -= 1
                stop = (left[idx] <= 0) | ~np.isfinite(gn)
                active[idx[stop]] = False
                go = ~stop
                if not go.any():
                    break
                X, g = X[go], g[go]
                B, H, _ = self.riemannian_hessian(X)
                w, U = np.linalg.eigh(H)
                gt = np.einsum("nij,ni->nj", B, g)  # (n, 6) tangent coordinates
                coef = np.einsum("nij,ni->nj", U, gt)
                cut = 1e-12 * np.abs(w).max(-1, keepdims=True)
                xt = -np.einsum("nij,nj->ni", U, np.where(np.abs(w) > cut, coef / w, 0.0))
                xi = np.einsum("nij,nj->ni", B, xt)  # (n, 8)
                size = np.sqrt((xi * xi).sum(-1, keepdims=True))
                xi *= np.minimum(1.0, max_step / np.maximum(size, 1e-300))
                new = unit(X + xi.reshape(-1, 2, 4))
                sel = idx[go]
                # a polishing step on a converged point is kept only if it lowers the gradient norm
                KV_before = KV[sel].copy()
                KV[sel] = new
                polished = gnorm[sel] <= tol
                if polished.any():
                    gp = self.riemannian_gradient(new[polished])
                    worse = np.sqrt((gp * gp).sum(-1)) > gnorm[sel][polished]
                    rows = sel[polished][worse]
                    KV[rows] = KV_before[polished][worse]
                    active[rows] = False
        g = self.riemannian_gradient(KV)
        gnorm = np.sqrt((g * g).sum(-1))
        return KV, gnorm, gnorm <= tol

    # ----- the spectrum of a critical point ------------------------------------------------------------------------
    def spectrum(self, kv: np.ndarray, *, rank_tol: float = 1e-7) -> "Spectrum":
        """Eigenvalues of the Riemannian Hessian at one point ``kv`` (2, 4) for the full ``d``, the symmetry directions
        taken out (see the module docstring): in-span eigenvalues (multiplicity 1) and out-of-span ones (multiplicity
        ``d - 4`` each)."""
        KV = kv[None]
        B, H, block = self.riemannian_hessian(KV)
        B, H, block = B[0], H[0], block[0]
        k, v = kv
        P = np.array([[k[2], k[3]], [v[2], v[3]]])  # rows: k, v on (e3, e4)
        # rotation of the (e3, e4) plane: (Omega k, Omega v) with Omega e3 = e4, Omega e4 = -e3
        z = np.r_[0.0, 0.0, -k[3], k[2], 0.0, 0.0, -v[3], v[2]]
        zt = B.T @ z
        inside, n_sym_in = H, 0
        if np.linalg.norm(zt) > rank_tol:
            Q = _complement(zt)
            inside, n_sym_in = Q.T @ H @ Q, 1
        lam_in = np.linalg.eigvalsh(inside)
        # each outer direction w: orbit directions (k_i, v_i), i = 3, 4 (the columns of P), in (xi_k, xi_v) space
        s = np.linalg.svd(P, compute_uv=False)
        rank = int((s > rank_tol).sum())
        if rank == 0:
            lam_out = np.linalg.eigvalsh(block)
        elif rank == 1:
            _, _, Vt = np.linalg.svd(P.T)  # P.T rows are the orbit directions (k_i, v_i)
            u = Vt[-1]  # orthogonal to them
            lam_out = np.array([u @ block @ u])
        else:
            lam_out = np.zeros(0)
        return Spectrum(inside=lam_in, outside=lam_out, multiplicity=self.d - 4,
                        symmetry_modes=n_sym_in + rank * (self.d - 4))


def _complement(z: np.ndarray) -> np.ndarray:
    """Orthonormal basis (n, n-1) of the orthogonal complement of a vector ``z`` (n,)."""
    return tangent_basis(unit(z[None]))[0]


@dataclass
class Spectrum:
    """Hessian eigenvalues at a point, symmetry directions excluded: ``inside`` (each once), ``outside`` (each
    ``multiplicity = d - 4`` times), and the number of symmetry zero modes (the dimension of the orbit)."""

    inside: np.ndarray
    outside: np.ndarray
    multiplicity: int
    symmetry_modes: int

    def all(self) -> tuple[np.ndarray, np.ndarray]:
        """``(eigenvalues, multiplicities)``."""
        return (np.r_[self.inside, self.outside],
                np.r_[np.ones(len(self.inside), int), np.full(len(self.outside), self.multiplicity)])

    def scale(self) -> float:
        w, _ = self.all()
        return float(np.abs(w).max()) if w.size else 1.0

    def counts(self, zero_tol: float) -> tuple[int, int, float]:
        """``(index, zero_modes, min_eigenvalue)``: negative eigenvalues below ``-zero_tol * scale`` with multiplicity;
        zero modes (symmetry ones plus eigenvalues within ``zero_tol * scale`` of 0) with multiplicity; the smallest
        eigenvalue off the symmetry directions."""
        w, m = self.all()
        tol = zero_tol * max(self.scale(), 1.0)
        index = int(m[w < -tol].sum())
        zeros = int(m[np.abs(w) <= tol].sum()) + self.symmetry_modes
        return index, zeros, float(w.min()) if w.size else math.nan


# ----- seeds for Newton ---------------------------------------------------------------------------------------------
def sphere_seeds(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniform on ``S^3 x S^3`` in the reduced coordinates (every overlap configuration is reached;
    uniform points of ``S^(d-1)`` would all sit near overlaps ``~ 1/sqrt(d)``)."""
    return unit(rng.standard_normal((n, 2, 4)))


def spec8_seeds(n_angles: int = 7) -> np.ndarray:
    """The points docs/landscape.md §4 names, and their neighbourhoods: the oracle ``k = k*, v = v*``; swapped points
    ``k = v*``,
    ``v = cos(phi) k* + sin(phi) e3``; points of the invariant manifold ``k = cos(a) k* + sin(a) e3``,
    ``v = cos(b) v* + sin(b) e4``; and ``k = e3, v = e4`` (all overlaps zero)."""
    e = np.eye(4)
    pts = [np.stack([e[0], e[1]]), np.stack([e[2], e[3]])]
    for phi in np.linspace(0.0, np.pi, n_angles, endpoint=False):
        pts.append(np.stack([e[1], np.cos(phi) * e[0] + np.sin(phi) * e[2]]))
    for a in np.linspace(0.0, np.pi / 2, n_angles):
        for b in np.linspace(0.0, np.pi / 2, n_angles):
            pts.append(np.stack([np.cos(a) * e[0] + np.sin(a) * e[2], np.cos(b) * e[1] + np.sin(b) * e[3]]))
    return np.array(pts)


def swapped_line_seed(ls: "Landscape") -> np.ndarray:
    """The lowest point (1, 2, 4) of the line of swapped points ``k = v*``, ``v = theta k* + sqrt(1 - theta^2) e3``:
    there ``R = K + N + C theta^2 + D theta`` (``eta = 1``, ``kappa = nu = rho = 0``; docs/landscape.md §4), a quadratic
    in ``theta`` read off the excess at ``theta = -1, 0, 1``, minimised at ``-D/(2C)`` (clipped to [-1, 1]). Newton's
    seeds of :func:`spec8_seeds` miss it from ``d ~ 1e10`` (the line's curvature ``C ~ M^2 zeta`` dwarfs the rest),
    this one lands on it."""
    e = np.eye(4)
    line = lambda theta: np.stack([e[1], theta * e[0] + math.sqrt(1.0 - theta * theta) * e[2]])
    r_minus, r_zero, r_plus = ls.excess(np.stack([line(-1.0), line(0.0), line(1.0)]))
    b, c = 0.5 * (r_plus - r_minus), 0.5 * (r_plus + r_minus) - r_zero
    theta = float(np.clip(-b / (2.0 * c), -1.0, 1.0)) if c > 0 else (1.0 if b < 0 else -1.0)
    return line(theta)[None]


def from_overlaps(o: np.ndarray) -> np.ndarray:
    """Canonical reduced coordinates (N, 2, 4) of unit ``(k, v)`` with overlaps ``o`` (N, 5): ``k = (kappa, eta, a, 0)``,
    ``v = (theta, nu, b, c)`` (any point of ``R^d`` is a rotation fixing ``k*``, ``v*`` away from this one)."""
    kappa, nu, theta, eta, rho = o.T
    a = np.sqrt(np.clip(1.0 - kappa**2 - eta**2, 0.0, None))
    b = np.where(a > 1e-12, (rho - kappa * theta - eta * nu) / np.maximum(a, 1e-300), 0.0)
    c = np.sqrt(np.clip(1.0 - theta**2 - nu**2 - b**2, 0.0, None))
    KV = np.zeros((len(o), 2, 4))
    KV[:, 0, 0], KV[:, 0, 1], KV[:, 0, 2] = kappa, eta, a
    KV[:, 1, 0], KV[:, 1, 1], KV[:, 1, 2], KV[:, 1, 3] = theta, nu, b, c
    return KV


# ----- symmetry classes, labels ------------------------------------------------------------------------------------
# The symmetries of R on the overlaps (kappa, nu, theta, eta, rho), beyond the rotations fixing k* and v* (which
# leave the overlaps unchanged): (k, v) -> (-k, -v) (docs/landscape.md §3: erf is odd), and (k, v) -> (S k, -S v) with S
# the
# reflection through the hyperplane orthogonal to v* (the task is invariant under X -> S X, Y -> -Y), and their product.
SYMMETRIES = np.array([[1.0, 1, 1, 1, 1], [-1, -1, -1, -1, 1], [1, 1, -1, -1, -1], [-1, -1, 1, 1, -1]])
LABELS = ("oracle", "swapped", "manifold", "other")


def canonical_sign(o: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Overlaps (N, 5) with the discrete symmetries fixed. The group flips the signs of ``(kappa, nu)`` by ``a``, of
    ``(theta, eta)`` by ``b`` and of ``rho`` by ``ab``: ``a`` makes the first of ``kappa, nu`` above ``tol`` positive,
    ``b`` the first of ``theta, eta``; when one pair is zero its sign is chosen to make ``rho >= 0``. Two points are
    in one symmetry class iff their canonical overlaps agree."""
    o = np.array(o, dtype=float)

    def first_sign(pair):
        big = np.abs(pair) > tol
        x = pair[np.arange(len(pair)), big.argmax(1)]
        return np.where(big.any(1), np.where(x < 0, -1.0, 1.0), 0.0)

    a, b = first_sign(o[:, :2]), first_sign(o[:, 2:4])
    r = np.where(o[:, 4] < 0, -1.0, 1.0)
    a, b = np.where(a == 0, np.where(b == 0, r, b * r), a), np.where(b == 0, np.where(a == 0, 1.0, a * r), b)
    return o * np.stack([a, a, b, b, a * b], -1)


def class_distance(o: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Distance (N, M) between the symmetry classes of points with overlaps ``o`` (N, 5) and ``ref`` (M, 5): the
    Euclidean distance of the overlaps, minimised over :data:`SYMMETRIES`."""
    return np.min([np.linalg.norm(o[:, None, :] * g - ref[None, :, :], axis=-1) for g in SYMMETRIES], axis=0)


def label_of(o: np.ndarray, tol: float = 1e-6) -> str:
    """``oracle`` (``k = ±k*``, ``v = ±v*``, same sign), ``swapped`` (``k = ±v*``), ``manifold`` (on the invariant
    manifold ``theta = eta = rho = 0``), else ``other``."""
    kappa, nu, theta, eta, rho = o
    if abs(abs(kappa) - 1) < tol and abs(abs(nu) - 1) < tol and kappa * nu > 0:
        return "oracle"
    if abs(abs(eta) - 1) < tol:
        return "swapped"
    if max(abs(theta), abs(eta), abs(rho)) < tol:
        return "manifold"
    return "other"


def dedupe(o: np.ndarray, tol: float) -> np.ndarray:
    """Greedy clustering of points (N, 5 overlaps) by symmetry class: ``cluster[i]`` is the index of the first point
    within ``tol`` of point ``i`` (points are taken in the given order)."""
    reps: list[int] = []
    cluster = np.empty(len(o), dtype=int)
    for i in range(len(o)):
        if reps:
            dist = class_distance(o[i:i + 1], o[reps])[0]
            j = int(dist.argmin())
            if dist[j] <= tol:
                cluster[i] = reps[j]
                continue
        reps.append(i)
        cluster[i] = i
    return cluster


# ----- the table of critical points ----------------------------------------------------------------------------------
COLUMNS = ("label", "kind", "kappa", "nu", "theta", "eta", "rho", "excess", "grad_norm", "index", "zero_modes",
           "symmetry_modes", "min_eigenvalue", "seeds", "sources", "members")


@dataclass
class CriticalPoints:
    """The critical points found: ``table`` (one row per symmetry class, :data:`COLUMNS`, sorted by excess),
    ``KV`` (rows, 2, 4) a representative of each, and the overlaps of every distinct point merged into a row
    (``member_overlaps`` (n, 5) with ``member_row`` (n,)), which basin assignment uses."""

    table: "pd.DataFrame"
    KV: np.ndarray
    member_overlaps: np.ndarray
    member_row: np.ndarray


def critical_points(ls: Landscape, seeds: dict[str, np.ndarray], *, grad_tol: float = 1e-10, max_iter: int = 100,
                    dedup_tol: float = 1e-6, zero_tol: float = 1e-11) -> CriticalPoints:
    """Newton from every seed (``{source: (n, 2, 4)}``), the converged points (gradient norm <= ``grad_tol``) grouped
    by symmetry class (overlaps within ``dedup_tol`` up to the sign symmetry), each class's Hessian spectrum for the
    full ``d`` (``index``, ``zero_modes`` with multiplicity, ``min_eigenvalue`` off the symmetry directions).

    Classes whose Hessian has a zero mode beyond the symmetries (a flat direction, e.g. ``kappa`` near 1 once erf
    saturates at large ``lam``; its points carry different labels, the oracle among them) and whose index and excess
    agree (excess within ``1e-9`` relative: at ``d ~ 1e10`` the oracle and the swapped point differ by less than
    ``1e-9`` in absolute terms, 3% in relative ones) are one flat family: one row, ``members`` counting its distinct
    points; the best-polished point represents it.
    """
    import pandas as pd

    sources = np.concatenate([[name] * len(x) for name, x in seeds.items()]) if seeds else np.zeros(0, str)
    starts = np.concatenate([np.asarray(x, float).reshape(-1, 2, 4) for x in seeds.values()]) if seeds else np.zeros((0, 2, 4))
    KV, gnorm, ok = ls.newton(starts, tol=grad_tol, max_iter=max_iter)
    order = np.flatnonzero(ok)[np.argsort(gnorm[ok], kind="stable")]
    KV, gnorm, sources = KV[order], gnorm[order], sources[order]
    o = overlaps(KV)
    cluster = dedupe(o, dedup_tol)
    reps = np.unique(cluster)
    rows = []
    for r in reps:
        members = cluster == r
        spec = ls.spectrum(KV[r])
        index, zeros, w_min = spec.counts(zero_tol)
        oc = canonical_sign(o[r:r + 1])[0]
        oc = np.where(np.abs(oc) < 1e-14, 0.0, oc)  # rounding noise of exact zeros
        rows.append(dict(label=label_of(oc), kappa=oc[0], nu=oc[1], theta=oc[2], eta=oc[3], rho=oc[4],
                         excess=float(ls.excess(KV[r:r + 1])[0]), grad_norm=float(gnorm[r]), index=index,
                         zero_modes=zeros, symmetry_modes=spec.symmetry_modes, min_eigenvalue=w_min,
                         seeds=int(members.sum()), sources="+".join(sorted(set(sources[members]))), members=1, rep=r))
    # flat families: degenerate classes with the same index and excess
    merged_into = {}
    by_excess = sorted(range(len(rows)), key=lambda i: rows[i]["excess"])
    for a, b in zip(by_excess, by_excess[1:]):
        ra, rb = rows[a], rows[b]
        flat = ra["zero_modes"] > ra["symmetry_modes"] and rb["zero_modes"] > rb["symmetry_modes"]
        if flat and ra["index"] == rb["index"] and abs(ra["excess"] - rb["excess"]) <= 1e-9 * max(abs(ra["excess"]),
                                                                                                 abs(rb["excess"])):
            merged_into[b] = merged_into.get(a, a)
    family = {i: merged_into.get(i, i) for i in range(len(rows))}
    keep = []
    for head in sorted(set(family.values())):
        group = [i for i in family if family[i] == head]
        best = min(group, key=lambda i: rows[i]["grad_norm"])
        row = dict(rows[best])
        row["seeds"] = sum(rows[i]["seeds"] for i in group)
        row["sources"] = "+".join(sorted({s for i in group for s in rows[i]["sources"].split("+")}))
        row["members"] = len(group)
        row["group"] = group
        keep.append(row)
    keep.sort(key=lambda r: (r["excess"], r["index"]))
    member_o, member_row = [], []
    for i, row in enumerate(keep):
        for g in row["group"]:
            member_o.append(o[rows[g]["rep"]])
            member_row.append(i)
    for r in keep:
        r["kind"] = kind_of(r)
    table = pd.DataFrame([{c: r[c] for c in COLUMNS} for r in keep], columns=list(COLUMNS))
    KV_rows = np.array([KV[r["rep"]] for r in keep]).reshape(-1, 2, 4)
    return CriticalPoints(table, KV_rows, np.array(member_o).reshape(-1, 5), np.array(member_row, dtype=int))


def kind_of(row: dict) -> str:
    """``minimum`` (index 0, only symmetry zero modes), ``flat minimum`` (index 0 and a flat direction),
    ``saddle``."""
    if row["index"] > 0:
        return "saddle"
    return "minimum" if row["zero_modes"] == row["symmetry_modes"] else "flat minimum"


def assign(points: CriticalPoints, KV_end: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Each end point (N, 2, 4) to the row of the nearest critical point (distance between symmetry classes of the
    overlaps, :func:`class_distance`), or -1 when none is within ``tol``: ``(row (N,), distance (N,))``."""
    if len(points.member_row) == 0:
        return np.full(len(KV_end), -1), np.full(len(KV_end), np.inf)
    dist = class_distance(overlaps(KV_end), points.member_overlaps)  # (N, members)
    j = dist.argmin(1)
    best = dist[np.arange(len(KV_end)), j]
    return np.where(best <= tol, points.member_row[j], -1), best


def basin_table(rows: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(count, fraction, standard error)`` per critical point (binomial, ``sqrt(f(1-f)/N)``) and the number of end
    points left unassigned."""
    N = len(rows)
    count = np.bincount(rows[rows >= 0], minlength=n_points)[:n_points]
    frac = count / max(N, 1)
    return count, frac, np.sqrt(frac * (1 - frac) / max(N, 1)), int((rows < 0).sum())


def geodesic_path(ls: Landscape, A: np.ndarray, B: np.ndarray, n: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Risk along the geodesic of ``S^(d-1) x S^(d-1)`` from point ``A`` (2, 4) to point ``B`` (2, 4), ``B`` taken up to
    the sign symmetry whichever is closer: ``(t, excess)`` with ``t`` in [0, 1]."""
    if np.sum((A - B) ** 2) > np.sum((A + B) ** 2):
        B = -B
    t = np.linspace(0.0, 1.0, n)
    pts = np.empty((n, 2, 4))
    for i in range(2):
        omega = np.arccos(np.clip(A[i] @ B[i], -1.0, 1.0))
        if omega < 1e-12:
            pts[:, i] = A[i]
            continue
        pts[:, i] = (np.sin((1 - t) * omega)[:, None] * A[i] + np.sin(t * omega)[:, None] * B[i]) / np.sin(omega)
    return t, ls.excess(unit(pts))


def swapped_point(lam: float, *, d: int, L: int, gamma: float, signal: float | None = None) -> dict | None:
    """The lowest critical point with ``k = ±v*`` at this ``lam`` (Newton from the seeds of docs/landscape.md §4): its
    overlaps, excess,
    index and kind, or None if Newton finds none."""
    ls = Landscape(lam, d=d, L=L, gamma=gamma, M=signal_norm(d, signal))
    t = critical_points(ls, {"spec8": spec8_seeds(), "swapped_line": swapped_line_seed(ls)}).table
    t = t[t["label"] == "swapped"]
    return None if t.empty else t.iloc[0].to_dict()
