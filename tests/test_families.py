"""The model families behind one interface (slr.app.families), one step logger, one forward pass for predictions and
attention weights, the one derivative family of the closed forms, and the logged test excess with its standard error
next to the final evaluation (docs/transformer.md, docs/closed-forms.md)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate
from scipy.special import erf

from slr import theory
from slr.app.families import Attention, Module, family_of
from slr.app.final import logged_vs_final
from slr.app.run import run
from slr.core.predictors import ERF, SOFTMAX, BayesOptimal, erf_attention, softmax_attention
from slr.core.task import Task
from slr.models.transformer import Transformer
from slr.training.kernels import PGD, REDUCED_SGD
from slr.training.modules import StackedModel, Stack, build

TINY = ["task.d=10", "task.L=4", "train.repeats=2", "train.steps=20", "train.log_every=10", "eval.n_test=500",
        "eval.bayes_is=0", "train.log_test_size=300", "figures=false"]


# ----- families --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, family, columns_with_attention", [
    (["predictor=erf"], Attention, False), (["predictor=softmax"], Attention, False),
    (["predictor=transformer"], Module, True)])
def test_the_family_decides_columns_and_lam(make_cfg, overrides, family, columns_with_attention):
    cfg = make_cfg(*overrides, *TINY)
    fam = family_of(cfg)
    assert type(fam) is family
    assert ("attention_on_J0" in fam.columns) == columns_with_attention
    fields, schedule = fam.lam(Task(10, 4, 0.7, seed=0))
    assert (fields["lam"] is None) == (family is Module) and (schedule(7) is None) == (family is Module)


def test_the_transformer_preset_is_a_target_built_from_its_options(make_cfg, tmp_path):
    """predictor=transformer is ``model._target_: slr.models.transformer.Transformer`` like a user's module; the
    options predictor.d_model etc. reach its constructor."""
    cfg = make_cfg("predictor=transformer", "predictor.d_model=8", "predictor.n_heads=2", "predictor.pool=mean", *TINY)
    assert cfg.predictor.model._target_ == "slr.models.transformer.Transformer"
    algo = family_of(cfg).build(Task(10, 4, 0.7, seed=0), None, np.random.default_rng(0))
    model = algo.stack.base
    assert isinstance(model, Transformer) and (model.d_model, model.n_heads, model.pool) == (8, 2, "mean")
    summary = run(cfg, out_dir=tmp_path)
    assert summary["trained"]["predictor"] == "transformer" and summary["trained"]["algo"] == "online sgd"
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert {"test_excess", "test_excess_se", "attention_on_J0"} <= set(m.columns) and m["lam"].isna().all()


def test_attention_kinds_own_weights_kernel_id_and_closed_form():
    s = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    assert torch.allclose(SOFTMAX.weights(s), torch.softmax(s, -1))
    assert torch.allclose(ERF.weights(s), torch.erf(s).abs() / torch.erf(s).abs().sum())
    assert (ERF.kernel_id, SOFTMAX.kernel_id) == (0, 1) and SOFTMAX.excess is None
    for kernel in (REDUCED_SGD, PGD):
        assert kernel.path.is_file() and f"{kernel.symbol}(" in kernel.path.read_text()


# ----- one forward pass ------------------------------------------------------------------------------------------
def test_predictions_and_attention_in_one_pass_equal_the_separate_calls():
    task = Task(12, 5, 0.7, seed=1)
    X = task.sample(300, torch.Generator().manual_seed(0), dtype=torch.float64).X
    k, v = torch.randn(3, 12, dtype=torch.float64), torch.randn(3, 12, dtype=torch.float64)
    model = Transformer(12, 5, d_model=6).double()
    stacked = StackedModel(Stack(build(task, lambda: Transformer(12, 5, d_model=6).double(), 2, np.arange(2))), "t")
    for p in (erf_attention(k, v, 0.8), softmax_attention(k[0], v[0], 2.0), BayesOptimal.of(task), stacked):
        y, w = p.predict_and_attention(X)
        assert torch.equal(y, p.predict(X)) and torch.equal(w, p.attention(X))
    y, w = model.predict_and_attention(X)
    assert torch.equal(y, model(X)) and torch.equal(w, model.attention(X))


# ----- the derivative family of the closed forms -----------------------------------------------------------------
def test_erf_derivatives_are_hermite_times_the_gaussian():
    x = np.linspace(-3, 3, 13)
    g = 2 / math.sqrt(math.pi) * np.exp(-x * x)
    expected = [erf(x), g, -2 * x * g, (4 * x**2 - 2) * g, (12 * x - 8 * x**3) * g, (16 * x**4 - 48 * x**2 + 12) * g]
    for got, want in zip(theory.erf_derivatives(x, 5), expected):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_fourth_zeta_derivative_is_the_derivative_of_the_third():
    t, g, h = np.linspace(-2, 2, 9), 0.6, 1e-4
    fd = (theory.zeta_ttt(t + h, g) - theory.zeta_ttt(t - h, g)) / (2 * h)
    np.testing.assert_allclose(theory.zeta_derivatives(t, g, 4)[3], fd, atol=1e-7, rtol=0)


@pytest.mark.parametrize("lam", [0.3, 1.7])
def test_noise_token_moments_against_quadrature(lam):
    """A noise token ``x ~ N(0, I)``: ``B = erf(lam <x,k>) <x,v>``, ``<x,k> = a``, ``<x,v> = rho a + sqrt(1-rho^2) b``."""
    beta1, beta2, zeta0 = theory.noise_token_moments(lam)
    phi = lambda a: math.exp(-a * a / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    EB_rho = integrate.quad(lambda a: erf(lam * a) * a * phi(a), -12, 12)[0]  # E[B] / rho
    EB2 = [integrate.quad(lambda a: erf(lam * a) ** 2 * a**p * phi(a), -12, 12)[0] for p in (0, 2)]
    assert beta1 == pytest.approx(EB_rho, rel=1e-9) and zeta0 == pytest.approx(EB2[0], rel=1e-9)
    assert beta2 == pytest.approx(EB2[1] - EB2[0], rel=1e-9)  # E[B^2] = E erf^2 + rho^2 E[erf^2 (a^2 - 1)]


# ----- the logged test excess and the final evaluation -----------------------------------------------------------
def test_disagreeing_logged_and_final_excess_is_warned_about():
    rows = [dict(step=100, repeat=r, test_excess=0.011, test_excess_se=0.001) for r in range(4)]
    assert "differ by" in logged_vs_final(rows, dict(mc=0.021, se=0.0013), 100, 1000, 20000)
    assert logged_vs_final(rows, dict(mc=0.012, se=0.0013), 100, 1000, 20000) is None
    assert logged_vs_final(rows, None, 100, 1000, 20000) is None


def test_the_figure_draws_the_final_evaluation_with_its_error_bar(make_cfg, tmp_path):
    from slr.plots.dynamics import dynamics_figure

    run(make_cfg(*TINY), out_dir=tmp_path)
    rows = pd.read_csv(tmp_path / "metrics.csv")
    fig, axes = dynamics_figure(rows, {}, final=dict(step=20, excess=0.5, se=0.01, n_test=500), test_size=300)
    labels = axes[0].get_legend_handles_labels()[1]
    assert any("300 logged sequences" in s for s in labels) and any("final evaluation" in s for s in labels)
    assert any("±2 s.e." in s for s in labels) and len(axes[0].containers) == 1  # the error bar
