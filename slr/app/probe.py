"""The Hydra app ``slr-probe``: logistic probes per layer of a pretrained transformer on the paper's template
sentences (``docs/text.md``): ``probes.csv`` (layer, features, split, accuracy), ``summary.json`` and
``figures/probes.png``. The work is :mod:`slr.text`; it needs the optional extra ``slr[text]``."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from slr.app.config import check_probe, figure_formats
from slr.app.schema import CONF_DIR
from slr.app.job import job_exits, run_in_folder, show_progress
from slr.app.text import text_states
from slr.io import write_json

log = logging.getLogger("slr")


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """One ``slr-probe`` job into ``out_dir`` (default: Hydra's output dir, else the working directory)."""
    return run_in_folder(cfg, out_dir, check_probe, _run, "slr-probe")


def _run(cfg: DictConfig, out: Path, summary: dict, t_start: float) -> None:
    import pandas as pd
    import torch

    from slr.plots.text import PAPER_BERT, SPLITS, layer_average
    from slr.text.probes import probe_all

    torch.set_num_threads(cfg.threads)
    sentences, states = text_states(cfg, show_progress())
    t_states = time.perf_counter()
    log.info("%s | probes on %s: %d states (0: embeddings) of %d sentences, cache %s", cfg.name, cfg.text.model,
             states.n_states, len(sentences), states.folder)
    table = pd.DataFrame(probe_all(states, sentences, C=cfg.probe.C, max_iter=cfg.probe.max_iter,
                                   token_sentences=cfg.probe.token_sentences, seed=cfg.seed))
    table.to_csv(out / "probes.csv", index=False)
    t_probes = time.perf_counter()
    wide = table.pivot_table(index=["features", "layer"], columns="split", values="accuracy")[list(SPLITS)]
    summary.update(model=cfg.text.model, n_layers=states.n_layers, cache=str(states.folder),
                   n={s: int(sentences.index(s).size) for s in SPLITS},
                   cls_layer_average={k: float(v) for k, v in layer_average(table, "cls").items()},
                   paper_bert_cls_layer_average=PAPER_BERT)
    formats = figure_formats(cfg)
    if formats:
        from slr.plots.dynamics import save
        from slr.plots.text import probe_figure

        fig, _ = probe_figure(table, cfg.text.model, title=f"{cfg.name}: linear probes on {cfg.text.model}")
        save(fig, out / "figures" / "probes", formats)
    t_end = time.perf_counter()
    summary["status"] = "ok"
    summary["timings"] = dict(states_s=t_states - t_start, probes_s=t_probes - t_states, figures_s=t_end - t_probes,
                              total_s=t_end - t_start)
    write_json(out / "summary.json", summary)
    avg = summary["cls_layer_average"]
    log.info("\naccuracy per layer and split (probes fitted on train):\n%s\n[CLS] probe, mean over layers 1-%d: %s "
             "(paper, BERT layers 1-12: %s)\nwall time %.1f s (hidden states %.1f s, probes %.1f s); outputs in %s",
             wide.round(3).to_string(), states.n_layers, ", ".join(f"{s} {v:.2f}" for s, v in avg.items()),
             ", ".join(f"{s} {v:.2f}" for s, v in PAPER_BERT.items()), t_end - t_start, t_states - t_start,
             t_probes - t_states, out)


@hydra.main(config_path=str(CONF_DIR), config_name="slr_probe", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """``slr-probe``: one probing job (a refused config exits 2, see :func:`slr.app.job.job_exits`)."""
    with job_exits(cfg, "slr-probe"):
        run(cfg)
