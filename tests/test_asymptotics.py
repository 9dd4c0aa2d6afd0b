"""Small-``lam`` asymptotics of the oracle (``docs/closed-forms.md#6-the-best-oracle-lam``) against the exact closed
form, and the best oracle ``lam`` where it is far below any fixed search bound.

With ``u = lam^2 d``: ``excess ~ (2 gamma^2/pi) e^-u / u + (4(L-1)/pi) u / d``, minimised at ``u*`` solving
``u* = ln(gamma^2 d / (2(L-1))) - ln u*``, where it is ``(4(L-1)/pi)(u* + 1)/d``. The exact best excess
(:func:`slr.theory.best_oracle_lam`, Owen's T closed form minimised numerically) must approach these, with a relative
error that shrinks as ``d`` grows (the neglected terms are ``O(1/u*)`` relative).
"""
import math

import numpy as np
import pytest
from scipy.optimize import brentq

from slr import theory

GAMMA, L = 0.5**0.5, 10


def u_star(d: float, L: int = L, gamma: float = GAMMA) -> float:
    return brentq(lambda u: u - math.log(gamma**2 * d / (2 * (L - 1))) + math.log(u), 1e-6, 1e3)


def asymptotic_excess(u: float, d: float, L: int = L, gamma: float = GAMMA) -> float:
    return (2 * gamma**2 / math.pi) * math.exp(-u) / u + (4 * (L - 1) / math.pi) * u / d


@pytest.mark.parametrize("d", [10**4, 10**6, 10**8])
def test_oracle_excess_at_small_lam_follows_the_asymptotic_form(d):
    """At the best ``lam`` the two-term expansion gives the exact excess to within the size of the neglected terms."""
    lam, excess = theory.best_oracle_lam(d=d, L=L, gamma=GAMMA)
    u = lam**2 * d
    rel = abs(float(theory.oracle_excess(lam, d=d, L=L, gamma=GAMMA)) / asymptotic_excess(u, d) - 1)
    assert rel < 0.4 / u  # O(1/u) relative error; measured 0.065, 0.022, 0.010 at d = 1e4, 1e6, 1e8 (rel u: 0.26, 0.17, 0.13)


def test_best_oracle_excess_approaches_the_L_ln_d_over_d_law():
    ds = [10**4, 10**5, 10**6, 10**7, 10**8, 10**9, 10**10]
    ratios, us = [], []
    for d in ds:
        lam, excess = theory.best_oracle_lam(d=d, L=L, gamma=GAMMA)
        us.append(lam**2 * d)
        ratios.append(excess / ((4 * (L - 1) / math.pi) * (u_star(d) + 1) / d))
    ratios, us = np.array(ratios), np.array(us)
    assert np.all(np.diff(np.abs(1 - ratios)) < 0), ratios  # closer at every decade
    assert abs(1 - ratios[-1]) < 0.01 and abs(1 - ratios[2]) < 0.03, ratios
    # the best u = lam^2 d tracks u*, which grows like ln d
    assert np.allclose(us, [u_star(d) for d in ds], rtol=0.05), us


@pytest.mark.parametrize("d", [10**10, 10**12])
def test_best_oracle_lam_is_not_cut_off_by_its_search_interval(d):
    lam, excess = theory.best_oracle_lam(d=d, L=L, gamma=GAMMA)
    assert lam < 1e-4  # below the old fixed lower bound
    for other in (lam * 0.9, lam * 1.1):
        assert excess < float(theory.oracle_excess(other, d=d, L=L, gamma=GAMMA))
