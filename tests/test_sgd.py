"""Online SGD (``docs/training.md#online-sgd``): the projection keeps unit norms, the stochastic gradient is unbiased
for the closed-form population gradient, the manifold initialisation, and a short run that learns."""
import math

import numpy as np
import pytest
import torch

from helpers import Z4, one_thread, vectors_with_overlaps
from helpers import one_thread_per_module  # noqa: F401  (autouse: one torch thread in this module)
from slr import theory
from slr.core.predictors import ERF
from slr.core.seeding import numpy_generator, torch_generator
from slr.core.task import Task
from slr.training.algorithms import OVERLAPS, FullSGD, ReducedSGD, embed, init_manifold, init_sphere, squared_loss_gradient

GAMMA = 0.5**0.5


def make_full(d, L, R, lr, B=8, dtype=torch.float64, init=init_sphere, projected=True, seed=0):
    task = Task(d, L, GAMMA, eps=0.1, seed=seed)
    rng = numpy_generator(seed, "init")
    KV0 = embed(init(R, d, rng), task, rng)
    return FullSGD(task, ERF, KV0, lr=lr, batch_size=B, projected=projected, generator=torch_generator(seed, "train"),
                   dtype=dtype), task


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_full_sgd_stays_on_the_sphere(dtype, tol):
    algo, _ = make_full(d=20, L=4, R=8, lr=0.05, dtype=dtype)
    assert algo.KV.dtype == dtype
    with one_thread():
        for t in range(300):
            algo.step(1.0)
            if t % 50 == 49:
                norms = algo.KV.norm(dim=-1)
                assert float((norms - 1).abs().max()) < tol
    assert float((algo.KV.to(torch.float64) - embed(init_sphere(8, 20, numpy_generator(0, "init")), Task(20, 4, GAMMA),
                                                    numpy_generator(0, "init"))).abs().max()) > 0.1  # it moved


def test_reduced_sgd_stays_on_the_sphere():
    task = Task(20, 4, GAMMA, eps=0.1)
    C0 = init_sphere(8, 20, numpy_generator(0, "init"))
    algo = ReducedSGD(task, ERF, C0, lr=0.05, batch_size=8, projected=True, generator=torch_generator(0, "train"))
    for _ in range(300):
        algo.step(1.0)
        norms = np.sqrt((algo.KV**2).sum(-1))
        assert np.abs(norms - 1).max() < 1e-12
    # canonical form: k = (kappa, eta, a, 0) with a >= 0, v's last coordinate >= 0
    assert np.all(algo.KV[:, 0, 3] == 0) and np.all(algo.KV[:, 0, 2] >= 0) and np.all(algo.KV[:, 1, 3] >= 0)
    assert np.abs(algo.KV - C0).max() > 0.1


@pytest.mark.parametrize("projected", [True, False])
def test_full_sgd_step_is_the_written_update(projected):
    """One step of ``FullSGD`` against the update written from ``docs/training.md#online-sgd`` on the same batch (the
    generator's state is copied): ``grad`` of ``mean_b (T(X_b) - y_b)^2`` by autograd, then
    ``k <- (k - lr g)/||k - lr g||`` with ``g = grad - <k, grad> k`` (same for ``v``), or ``k <- k - lr grad``
    unprojected."""
    lr, lam, R, B = 0.2, 0.8, 5, 6
    algo, task = make_full(d=9, L=3, R=R, lr=lr, B=B, projected=projected)
    KV = algo.KV.clone()
    g = torch.Generator()
    g.set_state(algo.gen.get_state())
    batch = task.sample((R, B), g, torch.float64)
    algo.step(lam)
    KVg = KV.clone().requires_grad_(True)
    k, v = KVg[:, 0], KVg[:, 1]  # (R, d)
    T = (torch.erf(lam * torch.einsum("rbld,rd->rbl", batch.X, k)) * torch.einsum("rbld,rd->rbl", batch.X, v)).sum(-1)
    (grad,) = torch.autograd.grad((T - batch.y).square().mean(-1).sum(), KVg)
    if projected:
        tangent = grad - (KV * grad).sum(-1, keepdim=True) * KV
        new = KV - lr * tangent
        new = new / new.norm(dim=-1, keepdim=True)
    else:
        new = KV - lr * grad
    torch.testing.assert_close(algo.KV, new, atol=1e-13, rtol=0)
    assert float((new - KV).abs().max()) > 1e-3


def test_manifold_initialisation_in_R_d():
    """``init_manifold`` then ``embed``: ``k ⟂ v*``, ``v ⟂ k*``, ``k ⟂ v`` for real vectors, unit norms."""
    algo, task = make_full(d=50, L=4, R=32, lr=0.01, init=init_manifold)
    o = algo.overlaps()
    for k in ("theta", "eta", "rho"):
        assert np.abs(o[k]).max() < 1e-14, k
    np.testing.assert_allclose(o["norm_k"], 1, atol=1e-14)
    np.testing.assert_allclose(o["norm_v"], 1, atol=1e-14)
    assert np.std(o["kappa"]) > 0.05 and np.std(o["nu"]) > 0.05


@pytest.mark.parametrize("lam", [0.4, 1.5])
def test_stochastic_gradient_is_unbiased_for_the_population_gradient(lam):
    """The mean over samples of the per-sample gradient of ``(T - y)^2`` (the SGD gradient with batch 1) equals the
    gradient of the closed-form risk, on the tangent space of the spheres (each coordinate within 4 s.e.)."""
    d, L, n = 8, 4, 200_000
    task = Task(d, L, GAMMA, eps=0.2, seed=1)
    kappa, nu, theta, eta, rho = 0.5, 0.6, -0.3, 0.4, 0.25
    k, v = vectors_with_overlaps(task, kappa, nu, theta, eta, rho, seed=2)
    b = task.sample(n, torch.Generator().manual_seed(3))
    KV = torch.stack([k, v]).expand(n, 2, d)
    G, _ = squared_loss_gradient(ERF, KV, b.X[:, None], b.y[:, None], lam)  # (n, 2, d): one sample per "repeat"
    G = G.numpy()
    kn, vn, ks, vs = k.numpy(), v.numpy(), task.k_star.numpy(), task.v_star.numpy()
    tangent = lambda g, u: g - (g @ u)[..., None] * u
    Gt = np.stack([tangent(G[:, 0], kn), tangent(G[:, 1], vn)], 1)
    mean, se = Gt.mean(0), Gt.std(0, ddof=1) / math.sqrt(n)
    Rk, Rn, Rt, Re, Rr = theory.ErfRiskGradient(lam, M=task.M, L=L, gamma=GAMMA)(kappa, nu, theta, eta, rho)
    closed = np.stack([tangent(Rk * ks + Re * vs + Rr * vn, kn), tangent(Rn * vs + Rt * ks + Rr * kn, vn)])
    assert np.all(np.abs(mean - closed) < Z4 * se), (mean - closed) / se
    assert np.abs(closed).max() > 20 * se.max()  # the gradient is resolved, not lost in the noise


def test_short_run_learns():
    """A short projected SGD run from the sphere raises the median ``|nu|`` and lowers the median closed-form excess.

    lam=1 on purpose: at d=20, L=4, lam=0.5 the population dynamics from the sphere mostly go to the stationary
    point kappa = nu = 0 (excess 0.717, above the oracle's 0.652), so |nu| does not grow there.
    """
    lam = 1.0
    algo, task = make_full(d=20, L=4, R=16, lr=0.01)

    def state():
        o = algo.overlaps()
        ex = theory.erf_excess(lam, *(o[k] for k in OVERLAPS), d=task.d, L=task.L, gamma=task.gamma)
        return np.median(np.abs(o["nu"])), np.median(ex)

    nu0, ex0 = state()
    with one_thread():
        for _ in range(600):
            algo.step(lam)
    nu1, ex1 = state()
    assert nu1 > nu0 + 0.3, (nu0, nu1)
    assert ex1 < 0.8 * ex0, (ex0, ex1)
