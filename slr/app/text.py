"""The text features in the apps (``docs/text.md``): their checks (the extra, the model folder, the layer) and the
``task=text`` job of ``slr``, kept here so that ``run.py`` only dispatches to it. The work is :mod:`slr.text`."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from slr.app.config import as_config_error, figure_formats, is_module
from slr.io import MetricsWriter, write_json

log = logging.getLogger("slr")


def text_states(cfg: DictConfig, progress: bool):
    """The sentences and the cached hidden states of ``text.model`` (computed on first use), refusals as
    :class:`ConfigError`."""
    from slr.text.encoder import TextInputError, hidden_states
    from slr.text.sentences import build

    sentences = build()
    try:
        return sentences, hidden_states(cfg.text.model, sentences, batch_size=cfg.text.batch_size, progress=progress)
    except TextInputError as err:
        raise as_config_error(err) from None


def run_text(cfg: DictConfig, out: Path, summary: dict, t_start: float) -> None:
    """The body of an ``slr`` job with ``task=text``: ERM of erf or softmax attention on the layer's frozen tokens,
    scored on every split (accuracy, squared loss, attention on J0), with the first-token least-squares baseline;
    ``metrics.csv``, ``summary.json`` and ``figures/text_training.png``."""
    import torch

    from slr.app.job import show_progress
    from slr.results.tables import text_table
    from slr.text.sentences import SPLITS
    from slr.text.task import TextTask, evaluate_splits, least_squares_first_token, train_erm

    torch.set_num_threads(cfg.threads)
    tc = cfg.train
    lam = None if is_module(cfg) else float(cfg.predictor.lam)
    sentences, states = text_states(cfg, show_progress())
    t_states = time.perf_counter()
    task = TextTask(states, sentences, cfg.text.layer, tc.n_train, cfg.seed)
    summary["task"] = dict(name="text", model=cfg.text.model, layer=cfg.text.layer, n_layers=states.n_layers,
                           d=int(task.d), T=int(task.T), n_train=int(task.train_rows.size), cache=str(states.folder),
                           n={s: int(sentences.index(s).size) for s in SPLITS})
    log.info("%s | task=text: %s layer %d of %d (d=%d, T=%d), %s attention, ERM on %d sentences, %d repeats x %d "
             "steps -> %s", cfg.name, cfg.text.model, cfg.text.layer, states.n_layers, task.d, task.T,
             cfg.predictor.name, task.train_rows.size, tc.repeats, tc.steps, out)
    train_tok = task.train()
    if is_module(cfg):
        trained = _train_modules(cfg, task, train_tok)
        history, predictor, lam = trained.history, trained.name, None
    else:
        trained = train_erm(cfg.predictor.name, lam, train_tok, repeats=tc.repeats, steps=tc.steps, lr=tc.lr,
                            optimizer=tc.optimizer, projected=tc.projected, log_every=tc.log_every, seed=cfg.seed)
        history, predictor = trained.history, f"{cfg.predictor.name} attention"
    with MetricsWriter(out / "metrics.csv", ("step", "repeat", "train_loss", "train_accuracy")) as writer:
        writer.write(history)
    t_train = time.perf_counter()
    beta = least_squares_first_token(train_tok)
    ev = evaluate_splits(trained, beta, task)
    mean = {key: {s: float(np.nanmean(ev[s][key])) if np.isfinite(ev[s][key]).any() else None for s in SPLITS}
            for key in ("accuracy", "loss", "attention_on_J0", "attention_on_first", "attention_on_last")}
    summary.update(lam=lam, accuracy=mean["accuracy"], loss=mean["loss"], attention_on_J0=mean["attention_on_J0"],
                   attention_on_first=mean["attention_on_first"], attention_on_last=mean["attention_on_last"])
    summary["trained"] = dict(predictor=predictor, algo=f"erm {tc.optimizer}", lam=lam,
                              repeats=tc.repeats, steps_done=tc.steps,
                              per_repeat={key: {s: ev[s][key] for s in SPLITS}
                                          for key in ("accuracy", "loss", "attention_on_J0")})
    summary["baselines"] = {"uniform_on_J0": {s: ev[s]["uniform_on_J0"] for s in SPLITS},
                            "linear_first_token": {"accuracy": {s: ev[s]["linear_accuracy"] for s in SPLITS},
                                                   "loss": {s: ev[s]["linear_loss"] for s in SPLITS}}}
    t_eval = time.perf_counter()
    formats = figure_formats(cfg)
    if formats:
        from slr.plots.dynamics import save
        from slr.plots.text import text_training_figure

        fig, _ = text_training_figure(history, summary, title=f"{cfg.name}: {cfg.text.model} layer {cfg.text.layer}, "
                                                              f"{predictor}" + ("" if lam is None else f", lam={lam:g}"))
        save(fig, out / "figures" / "text_training", formats)
    t_end = time.perf_counter()
    summary["status"] = "ok"
    summary["timings"] = dict(states_s=t_states - t_start, train_s=t_train - t_states, eval_s=t_eval - t_train,
                              figures_s=t_end - t_eval, total_s=t_end - t_start)
    write_json(out / "summary.json", summary)
    log.info("\n%s\nwall time %.1f s (hidden states %.1f s, training %.1f s); outputs in %s", text_table(summary),
             t_end - t_start, t_states - t_start, t_train - t_states, out)


def _train_modules(cfg: DictConfig, task, train_tok):
    """``train.repeats`` transformers or user modules on the layer's tokens (d of the model, L the padded length),
    each initialised from its own seed, trained by :func:`slr.text.task.train_modules`."""
    import torch

    from slr.app.user_code import build_user_module
    from slr.models.transformer import Transformer
    from slr.text.task import ModulePredictor, train_modules

    tc, pc = cfg.train, cfg.predictor
    modules = []
    for r in range(tc.repeats):
        torch.manual_seed(cfg.seed * 1000 + r)
        if pc.name == "transformer":
            modules.append(Transformer(task.d, task.T, d_model=pc.d_model, n_heads=pc.n_heads, n_layers=pc.n_layers,
                                       mlp=pc.mlp, norm=pc.norm, pool=pc.pool, positional=pc.positional))
        else:
            modules.append(build_user_module(pc.model, task.d, task.T))
    history = train_modules(modules, train_tok, steps=tc.steps, lr=tc.lr, optimizer=tc.optimizer,
                            weight_decay=tc.weight_decay, log_every=tc.log_every)
    predictor = ModulePredictor(modules, "transformer" if pc.name == "transformer" else str(pc.model._target_))
    predictor.history = history
    return predictor
