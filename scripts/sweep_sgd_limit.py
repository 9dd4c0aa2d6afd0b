"""The SGD-limit validation table and figure from an ``experiment=sweep_sgd_limit`` folder (``docs/dynamics.md``,
section "Online SGD: the high-dimensional limit").

For each start, step ``delta = lr d``, batch ``B`` and ``d``, the gap is the sup over logged steps of |median over
repeats of the chain - median of the ODE runs| for ``|kappa|``, ``|nu|`` and the excess (``ode``: with the correction;
``flow``: without it); its log-log slope in ``d`` is fitted over the ``d`` swept (:mod:`slr.results.sgd_limit`).

    .venv/bin/python -m slr -m experiment=sweep_sgd_limit hydra/launcher=joblib hydra.sweep.dir=outputs/sweep_sgd_limit
    .venv/bin/python scripts/sweep_sgd_limit.py outputs/sweep_sgd_limit

Writes ``curves.csv`` (every logged median), ``table.csv`` (gaps and training wall times), ``slopes.csv``,
``table.md`` and ``figures/sgd_limit_B<B>.png`` into the sweep folder (or ``--out``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slr.plots.sgd_limit import limit_figure
from slr.results.sgd_limit import job_config, markdown, validation


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", type=Path, help="the experiment=sweep_sgd_limit folder")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep folder)")
    args = ap.parse_args(argv)
    out = args.out or args.sweep
    v = validation(args.sweep)
    for job in v["skipped"]:
        print(f"skipped {job.name}: {job.status} {job.error or ''}", file=sys.stderr)
    if v["table"].empty:
        print(f"no chain and ODE pair finished under {args.sweep}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    v["curves"].to_csv(out / "curves.csv", index=False)
    v["table"].to_csv(out / "table.csv", index=False)
    v["slopes"].to_csv(out / "slopes.csv", index=False)
    cfg = job_config(v["jobs"][0])
    with open(out / "table.md", "w") as fh:
        fh.write(f"sup over logged steps of |median chain - median ODE| ({cfg['train']['repeats']} repeats, "
                 f"lam={cfg['predictor']['lam']}); flow = the ODE without its correction\n\n")
        fh.write(markdown(v["table"], ".3g") + "\n\nlog-log slopes in d\n\n")
        fh.write(markdown(v["slopes"], ".2f") + "\n")
    for B in sorted(v["curves"].B.unique()):
        limit_figure(v["curves"], int(B), out / "figures" / f"sgd_limit_B{B}.png")
    print((out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
