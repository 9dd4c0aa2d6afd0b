"""Phase diagram of online SGD through its high-dimensional limit from an ``experiment=phase_sgd`` folder
(``docs/dynamics.md``): the final state of the ODE over a grid of step ``delta = lr d`` x initial ``lam0`` of the
inverse schedule ``lam_t = lam0 / (1 + rate t)``.

Final states (:func:`slr.results.sgd_limit.classify`): aligned (``|kappa|, |nu| >= 0.9``), swapped (``|eta| >= 0.9``:
the key on ``v*``), unstable (the fluctuation ``V`` of ``M theta`` exceeds ``M^2``, or the solver failed: past the
noise's stability edge the limit breaks down; the chain is noise-dominated there), undecided (on the way every overlap
fell below 1e-4, 100 times the solver's atol: where the ODE goes from there is integration error, and the chain's
``1/sqrt d`` noise decides instead), stalled (anything else).

    .venv/bin/python -m slr -m experiment=phase_sgd hydra/launcher=joblib hydra.sweep.dir=outputs/phase_sgd
    .venv/bin/python scripts/phase_sgd.py outputs/phase_sgd

Writes ``phase.csv`` (fractions per cell) and ``figures/phase_sgd.png`` into the sweep folder (or ``--out``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slr.plots.sgd_limit import phase_figure
from slr.results.sgd_limit import job_config, phase
from slr.results.sweep import find_job_dirs, read_job


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", type=Path, help="the experiment=phase_sgd folder")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep folder)")
    args = ap.parse_args(argv)
    out = args.out or args.sweep
    table = phase(args.sweep)
    if table.empty:
        print(f"no finished cell under {args.sweep}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "phase.csv", index=False)
    cfg = job_config(read_job(find_job_dirs(args.sweep)[0]))
    t = cfg["train"]
    how = {"ode": "SGD limit ODE", "reduced": "online SGD, the exact reduced chain"}.get(
        t.get("simulator"), f"online SGD ({t.get('simulator')} simulator)")
    phase_figure(table, out / "figures" / "phase_sgd.png",
                 f"{how}: final state after {t['steps']} steps\nd={cfg['task']['d']}, L={cfg['task']['L']}, "
                 f"B={t['batch_size']}, {t['init']} starts, rate={t['schedule_rate']:g} ({t['repeats']} per cell)")
    print(table.drop(columns="message").to_string(index=False))
    print(f"{len(table)} cells; {out / 'figures' / 'phase_sgd.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
