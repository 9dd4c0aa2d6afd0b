"""Torch modules on the task (issue 13, ``docs/transformer.md``): the transformer, the user-module contract, stacked
training, the attention diagnostic, and the refusals of broken modules and of options that do not apply to a module."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from helpers import one_thread_per_module  # noqa: F401  (one torch thread: these tensors are small)
from slr.app.config import ConfigError, check
from slr.core.evaluate import compare
from slr.models.transformer import Transformer
from slr.core.predictors import softmax_attention
from slr.app.run import run
from slr.core.task import Task
from slr.training.modules import OnlineTraining, build, lr_scheduler

HERE = __name__  # this file's module name: the user modules below are imported by Hydra from it
SMALL = ["task.d=10", "task.L=4", "train.repeats=2", "train.steps=40", "train.log_every=20", "eval.n_test=2000",
         "eval.bayes_is=2000", "train.log_test_size=200", "train.batch_size=64", "train.optimizer=adam",
         "train.lr=0.01"]


# ----- user modules, defined here and not in slr ---------------------------------------------------------------
class TinyNet(nn.Module):
    """A learned-query softmax attention with a ``width``-dim token encoder: ``attention(X)`` exposed."""

    def __init__(self, d: int, L: int, width: int = 8):
        super().__init__()
        self.encode = nn.Linear(d, width)
        self.key = nn.Linear(width, 1, bias=False)
        self.value = nn.Linear(d, 1)

    def attention(self, X):
        return torch.softmax(self.key(torch.tanh(self.encode(X))).squeeze(-1), dim=-1)  # (B, L)

    def forward(self, X):
        return (self.attention(X) * self.value(X).squeeze(-1)).sum(-1)  # (B,)


class Branchy(nn.Module):
    """Data-dependent control flow: ``torch.func.vmap`` cannot run it, so the repeats must loop."""

    def __init__(self, d: int, L: int):
        super().__init__()
        self.w = nn.Linear(d, 1)

    def forward(self, X):
        out = self.w(X).squeeze(-1).mean(-1)
        if out.sum() > 1e9:  # never true, but vmap cannot decide a tensor's truth value
            out = -out
        return out


class Boom(nn.Module):
    def __init__(self, d: int, L: int):
        raise ValueError("boom in the constructor")


class WrongShape(TinyNet):
    def forward(self, X):
        return super().forward(X)[:, None]  # (B, 1), not (B,)


class NaNOutput(TinyNet):
    def forward(self, X):
        return super().forward(X) * float("nan")


class NoParameters(nn.Module):
    def __init__(self, d: int, L: int):
        super().__init__()

    def forward(self, X):
        return X.sum((-1, -2))


def not_a_module(d: int, L: int):
    return lambda X: X.sum((-1, -2))


# ----- the transformer ------------------------------------------------------------------------------------------
ARCHITECTURES = [dict(), dict(norm="pre"), dict(pool="mean"), dict(n_heads=2, mlp=2.0, norm="pre"),
                 dict(n_layers=2, mlp=1.0), dict(n_layers=2, pool="mean", norm="pre", n_heads=4)]


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=[str(a) for a in ARCHITECTURES])
def test_transformer_shape_permutation_invariance_and_gradients(arch):
    torch.manual_seed(0)
    d, L, B = 7, 5, 6
    model = Transformer(d, L, d_model=8, **arch).double()
    X = torch.randn(B, L, d, dtype=torch.float64)
    y = model(X)
    assert y.shape == (B,) and torch.isfinite(y).all()
    perm = torch.randperm(L)
    torch.testing.assert_close(model(X[:, perm]), y, rtol=1e-12, atol=1e-12)  # no positional encoding
    A = model.attention(X)
    assert A.shape == (B, L)
    torch.testing.assert_close(A.sum(-1), torch.ones(B, dtype=torch.float64))
    torch.testing.assert_close(model.attention(X[:, perm]), A[:, perm], rtol=1e-12, atol=1e-12)
    (y - torch.randn(B, dtype=torch.float64)).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def _randomise(model: nn.Module, seed: int = 1) -> None:
    """Every parameter (biases and LayerNorm gains included) drawn at random, so that none is at a special value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_effective_directions_without_norm_make_it_softmax_attention():
    """One block, one head, no MLP, no norm: T(X) = sum_l softmax_l(<u_K, x_l>) <u_V, x_l> + c
    (``docs/transformer.md#the-transformer-and-tx``), c the same for every X; the model's own attention equals those
    softmax weights."""
    model = Transformer(9, 6, d_model=5).double()
    _randomise(model)
    key, value = model.effective_directions()
    X = torch.randn(200, 6, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    reference = softmax_attention(key, value, 1.0)
    c = model(X) - reference.predict(X)
    assert c.std() < 1e-12 and c.abs().max() > 1e-3  # a constant offset, from the biases
    torch.testing.assert_close(model.attention(X), reference.attention(X), rtol=1e-12, atol=1e-12)


def test_effective_key_direction_with_pre_norm():
    """Pre-LayerNorm: the query's score of token x is <u_K, x>/s(x) plus a constant, s(x) the LayerNorm scale
    sqrt(var(E x) + eps) of the embedded token; checked through the model's own attention weights (log-ratios)."""
    model = Transformer(9, 6, d_model=5, norm="pre").double()
    _randomise(model)
    key, _ = model.effective_directions()
    X = torch.randn(50, 6, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    H = model.embed(X)
    s = (H.var(-1, unbiased=False) + model.blocks[0].norm1.eps).sqrt()  # (50, 6)
    score = (X @ key) / s
    log_w = model.attention(X).log()
    torch.testing.assert_close(log_w - log_w[:, :1], score - score[:, :1], rtol=1e-9, atol=1e-9)


def test_effective_directions_are_refused_where_undefined():
    for arch in (dict(mlp=1.0), dict(n_heads=2), dict(n_layers=2), dict(pool="mean")):
        model = Transformer(6, 3, d_model=4, **arch)
        assert not model.defines_directions
        with pytest.raises(ValueError):
            model.effective_directions()


# ----- attention on J0 ------------------------------------------------------------------------------------------
def test_attention_on_J0_is_one_for_a_model_that_always_attends_to_J0_and_one_over_L_when_uniform():
    """A hand-built transformer whose effective key is 50 k* (scores 50 <x, k*>: J0's exceeds the others' by ~50 M)
    puts weight 1 on J0; a mean-pooled one, and a softmax attention with k = 0, put exactly 1/L."""
    d, L = 8, 5
    task = Task(d, L, 0.5**0.5, 0.1, signal=20.0, seed=0)
    sharp = Transformer(d, L, d_model=d).double()
    with torch.no_grad():
        for p in sharp.parameters():
            p.zero_()
        W = sharp.blocks[0].attn.in_proj_weight  # [W_Q; W_K; W_V]
        sharp.embed.weight.copy_(torch.eye(d))
        W[:d].copy_(torch.eye(d))
        W[d:2 * d].copy_(torch.eye(d))
        W[2 * d:].copy_(torch.eye(d))
        sharp.blocks[0].attn.out_proj.weight.copy_(torch.eye(d))
        sharp.query.copy_(50 * math.sqrt(d) * task.k_star)
        sharp.readout.weight.copy_(task.v_star[None])
    key, value = sharp.effective_directions()
    torch.testing.assert_close(key, 50 * task.k_star)
    torch.testing.assert_close(value, task.v_star)
    mean_pool = Transformer(d, L, d_model=4, pool="mean").double()
    for model in (sharp, mean_pool):
        model.name = "x"
        model.predict = model.forward
    uniform_softmax = softmax_attention(torch.zeros(d, dtype=torch.float64), task.v_star, 1.0)
    rows = compare([sharp, mean_pool, uniform_softmax], task, 3000, seed=0)
    assert rows[1].attention_on_J0 == pytest.approx(1.0, abs=1e-12)
    assert rows[2].attention_on_J0 == pytest.approx(1 / L, abs=1e-12)
    assert rows[3].attention_on_J0 == pytest.approx(1 / L, abs=1e-12)
    assert rows[1].excess < 1e-3  # and it is (nearly) the softmax oracle


def test_erf_attention_weights_are_normalised_absolute_erf():
    task = Task(6, 4, 0.5**0.5, seed=0)
    k, v = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    X = task.sample(30, torch.Generator().manual_seed(0)).X
    from slr.core.predictors import erf_attention

    w = torch.erf(0.7 * X @ k).abs()
    torch.testing.assert_close(erf_attention(k, v, 0.7).attention(X), w / w.sum(-1, keepdim=True))


# ----- stacked training ------------------------------------------------------------------------------------------
def _online(task, use_vmap: bool, optimizer="adam", steps=6):
    modules = build(task, lambda: Transformer(task.d, task.L, d_model=8, norm="pre", mlp=1.0), 3, np.arange(3))
    algo = OnlineTraining(task, modules, batch_size=16, optimizer=optimizer, lr=0.01, weight_decay=0.01, steps=steps,
                          warmup_steps=2, lr_decay="cosine", generator=torch.Generator().manual_seed(5),
                          dtype=torch.float32, name="transformer", use_vmap=use_vmap)
    for _ in range(steps):
        algo.step()
    return algo


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_stacked_repeats_equal_looped_repeats(optimizer):
    """vmap over stacked parameters and a loop over the repeats give the same parameters after a few optimiser
    steps (float32 rounding apart); and the repeats differ from one another (their own seeds and data)."""
    task = Task(7, 4, 0.5**0.5, 0.1, seed=0)
    stacked, looped = _online(task, True, optimizer), _online(task, False, optimizer)
    assert stacked.stack.use_vmap and not looped.stack.use_vmap
    for name, p in stacked.stack.params.items():
        torch.testing.assert_close(p, looped.stack.params[name], rtol=1e-4, atol=1e-5, msg=name)
        assert not torch.allclose(p[0], p[1])
    start = build(task, lambda: Transformer(7, 4, d_model=8, norm="pre", mlp=1.0), 3, np.arange(3))
    moved = stacked.stack.params["readout.weight"] - torch.stack([m.readout.weight for m in start])
    assert moved.abs().min() > 1e-5  # it trained


def test_lr_schedule_is_linear_warm_up_then_cosine():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([p], lr=0.3)
    w, T = 4, 20
    sched = lr_scheduler(opt, steps=T, warmup_steps=w, decay="cosine")
    seen = []
    for _ in range(T):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.3 * (t + 1) / (w + 1) if t < w else 0.3 * (1 + math.cos(math.pi * (t - w) / (T - w))) / 2
                for t in range(T)]
    np.testing.assert_allclose(seen, expected, rtol=1e-12, atol=1e-15)
    assert lr_scheduler(opt, steps=T, warmup_steps=0, decay="constant") is None


# ----- runs ------------------------------------------------------------------------------------------------------
def test_transformer_run_lowers_the_test_excess_and_reports_its_diagnostics(make_cfg, tmp_path):
    cfg = make_cfg("experiment=transformer", *SMALL, "train.steps=60", "train.log_every=30")
    summary = run(cfg, out_dir=tmp_path)
    assert summary["status"] == "ok"
    m = pd.read_csv(tmp_path / "metrics.csv")
    first, last = (m[m.step == s].set_index("repeat") for s in (0, 60))
    assert (last["test_excess"] < 0.5 * first["test_excess"]).all()
    assert m[["kappa", "nu", "attention_on_J0", "test_excess"]].notna().all().all() and m["excess"].isna().all()
    assert (last["attention_on_J0"] > first["attention_on_J0"]).all()
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    trained = on_disk["excess"]["trained"]
    assert trained["name"] == "trained transformer" and len(trained["per_repeat"]) == 2
    assert len(trained["attention_on_J0_per_repeat"]) == 2
    assert trained["attention_on_J0"] == pytest.approx(np.median(trained["attention_on_J0_per_repeat"]))
    assert 1 / 4 < trained["attention_on_J0"] <= 1 and on_disk["excess"]["bayes"]["attention_on_J0"] > 0.9
    assert on_disk["excess"]["oracle"]["name"] == "softmax oracle"
    assert on_disk["excess"]["oracle"]["lam"] == pytest.approx(summary["task"]["M"] / 0.5)
    assert on_disk["trained"]["predictor"] == "transformer" and on_disk["trained"]["stacked"] is True
    # the logged overlaps are those of the final effective directions
    final = np.array(on_disk["final_overlaps"]["per_repeat"]["kappa"])
    np.testing.assert_allclose(final, last["kappa"].to_numpy(), rtol=1e-12)
    assert (tmp_path / "figures" / "dynamics.png").stat().st_size > 10_000


def test_same_config_and_seed_give_the_same_numbers(make_cfg, tmp_path):
    """Bitwise: each repeat's initialisation comes from its own seed, the data from the run's train stream."""
    cfg = make_cfg("predictor=module", f"predictor.model._target_={HERE}.TinyNet", *SMALL, "train.steps=10",
                   "figures=false")
    a, b = (run(cfg, out_dir=tmp_path / name) for name in "ab")
    assert a["excess"]["trained"]["per_repeat"].tolist() == b["excess"]["trained"]["per_repeat"].tolist()
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()
    c = run(make_cfg("predictor=module", f"predictor.model._target_={HERE}.TinyNet", *SMALL, "train.steps=10",
                     "figures=false", "seed=1"), out_dir=tmp_path / "c")
    assert c["excess"]["trained"]["per_repeat"].tolist() != a["excess"]["trained"]["per_repeat"].tolist()


def test_erf_run_reports_attention_on_J0(make_cfg, tmp_path):
    summary = run(make_cfg("task.d=12", "task.L=4", "train.steps=10", "train.repeats=2", "eval.n_test=500",
                           "eval.bayes_is=0", "figures=false"), out_dir=tmp_path)
    trained = summary["excess"]["trained"]
    assert len(trained["attention_on_J0_per_repeat"]) == 2 and 0 < trained["attention_on_J0"] < 1


def test_user_module_trains_and_is_compared_with_bayes(make_cfg, tmp_path):
    cfg = make_cfg("predictor=module", f"predictor.model._target_={HERE}.TinyNet", "+predictor.model.width=5",
                   *SMALL, "train.steps=80")
    summary = run(cfg, out_dir=tmp_path)
    assert summary["status"] == "ok"
    assert summary["trained"]["parameters"] == 10 * 5 + 5 + 5 + 10 + 1  # width=5 reached the constructor
    excess = summary["excess"]
    assert set(excess) >= {"trained", "bayes", "oracle", "linear", "bilinear"}
    assert excess["trained"]["name"] == f"trained {HERE}.TinyNet"
    assert excess["trained"]["mc"] > excess["bayes"]["mc"] and excess["trained"]["over_bayes"] > 0
    assert excess["trained"]["mc"] < excess["linear"]["closed_form"]  # it learned something in 80 steps
    assert "attention_on_J0_per_repeat" in excess["trained"]
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert m["kappa"].isna().all() and m["test_excess"].notna().all()  # no effective directions defined


def test_erm_trains_a_transformer_on_a_fixed_set(make_cfg, tmp_path):
    cfg = make_cfg("predictor=transformer", "train=erm", "train.n_train=100", *SMALL[:-3], "train.optimizer=adam",
                   "train.lr=0.01", "train.steps=60", "train.log_every=30", "figures=false")
    summary = run(cfg, out_dir=tmp_path)
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert m["train_loss"].notna().all()
    loss = m.groupby("step")["train_loss"].mean()
    assert loss.iloc[-1] < loss.iloc[0]
    assert "least_squares" in summary["excess"]


def test_a_module_vmap_cannot_run_falls_back_to_a_loop(make_cfg, tmp_path, caplog):
    cfg = make_cfg("predictor=module", f"predictor.model._target_={HERE}.Branchy", *SMALL, "figures=false")
    with caplog.at_level("WARNING", logger="slr"):
        summary = run(cfg, out_dir=tmp_path)
    assert summary["status"] == "ok" and summary["trained"]["stacked"] is False
    assert "one after another" in caplog.text


def test_a_diverging_module_is_stopped_and_recorded(make_cfg, tmp_path):
    """Plain SGD at lr = 100 blows the parameters up: each repeat stops at the step it is found, status diverged."""
    cfg = make_cfg("predictor=transformer", "task.d=10", "task.L=4", "train.lr=100", "train.steps=30",
                   "train.log_every=10", "train.repeats=2", "eval.n_test=500", "eval.bayes_is=0", "figures=false")
    summary = run(cfg, out_dir=tmp_path)
    assert summary["status"] == "diverged" and all(0 < t <= 30 for t in summary["trained"]["diverged_at"])
    assert "trained" not in summary["excess"] and summary["excess"]["bayes"]["mc"] > 0


# ----- refusals --------------------------------------------------------------------------------------------------
BROKEN = {  # target: what the message must say
    f"{HERE}.NoSuchNet": "building it",
    "no_such_package_xyz.Net": "building it",
    f"{HERE}.Boom": "boom in the constructor",
    f"{HERE}.WrongShape": "returned (3, 1)",
    f"{HERE}.NaNOutput": "non-finite",
    f"{HERE}.NoParameters": "no parameters to train",
    f"{HERE}.not_a_module": "not a torch.nn.Module",
}


@pytest.mark.parametrize("target", BROKEN)
def test_broken_user_module_is_refused_naming_the_target(make_cfg, target):
    cfg = make_cfg("predictor=module", f"predictor.model._target_={target}", *SMALL)
    with pytest.raises(ConfigError) as info:
        check(cfg)
    msg = str(info.value)
    assert info.value.key == "predictor.model._target_" and target in msg and "\n" not in msg
    assert BROKEN[target] in msg


REFUSED = [  # (overrides, field named)
    (["predictor=module"], "predictor.model._target_"),  # no target given
    (["predictor=transformer", "train=pgd"], "train"),
    (["predictor=transformer", "train=none", "train.steps=0"], "train"),
    (["predictor=transformer", "train.simulator=reduced"], "train.simulator"),
    (["predictor=transformer", "eval.simulator=reduced"], "eval.simulator"),
    (["predictor=transformer", "train.lam_schedule=inverse"], "train.lam_schedule"),
    (["predictor=transformer", "train.projected=false"], "train.projected"),
    (["predictor=transformer", "train.init=manifold"], "train.init"),
    (["predictor=transformer", "train.optimizer=rmsprop"], "train.optimizer"),
    (["predictor=transformer", "train=erm", "train.optimizer=lbfgs"], "train.optimizer"),
    (["predictor=transformer", "train.weight_decay=-1"], "train.weight_decay"),
    (["predictor=transformer", "train.warmup_steps=-1"], "train.warmup_steps"),
    (["predictor=transformer", "train.lr_decay=linear"], "train.lr_decay"),
    (["predictor=transformer", "predictor.d_model=0"], "predictor.d_model"),
    (["predictor=transformer", "predictor.n_heads=3"], "predictor.n_heads"),  # 16 is not divisible by 3
    (["predictor=transformer", "predictor.n_layers=0"], "predictor.n_layers"),
    (["predictor=transformer", "predictor.mlp=-1"], "predictor.mlp"),
    (["predictor=transformer", "predictor.norm=post"], "predictor.norm"),
    (["predictor=transformer", "predictor.pool=max"], "predictor.pool"),
    (["predictor=transformer", "+predictor.lam=1"], "predictor.lam"),
    (["predictor=transformer", "+predictor.foo=1"], "predictor.foo"),
    (["predictor.name=transformer"], "predictor.name"),  # the erf group with another name
    (["predictor=transformer", "predictor.name=erf"], "predictor.name"),
    (["train.optimizer=adam"], "train.optimizer"),  # erf attention's online SGD is projected SGD
    (["train.weight_decay=0.1"], "train.weight_decay"),
    (["train=erm", "train.warmup_steps=10"], "train.warmup_steps"),
    (["train=erm", "train.lr_decay=cosine"], "train.lr_decay"),
]


@pytest.mark.parametrize("overrides,field", REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_options_that_do_not_apply_are_refused(make_cfg, overrides, field):
    cfg = make_cfg("task.d=10", "task.L=4", "train.repeats=2", "eval.bayes_is=0", *overrides)
    with pytest.raises(ConfigError) as info:
        check(cfg)
    assert info.value.key == field and "\n" not in str(info.value)


def test_the_cli_refuses_a_broken_module_before_its_run_folder_exists(tmp_path):
    """Exit code 2, one paragraph naming predictor.model._target_ on stderr, no traceback, no run folder."""
    env = dict(os.environ, CI="true", SLR_OUTPUTS=str(tmp_path / "out"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    env.pop("HYDRA_FULL_ERROR", None)
    procs = {t: subprocess.Popen([sys.executable, "-m", "slr", "predictor=module", f"predictor.model._target_={t}",
                                  *SMALL], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for t in (f"{HERE}.WrongShape", f"{HERE}.Boom", "no_such_package_xyz.Net")}
    for target, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2, err
        assert "Traceback" not in err + out and err.count("\n") == 1
        assert err.startswith("Invalid configuration: predictor.model._target_=") and target in err
    assert not (tmp_path / "out").exists()
