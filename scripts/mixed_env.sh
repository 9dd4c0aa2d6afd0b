#!/usr/bin/env bash
# The wheel in a researcher's environment: a fresh venv that already holds other compatible versions of numpy, scipy
# and pandas (not those of requirements.lock) gets the wheel with an ordinary `pip install`; the script checks that
# they are kept, then runs slr, a sweep, slr-report and slr-compare from a folder outside the checkout.
#
#     bash scripts/mixed_env.sh        # venv in $MIXED_VENV (default: a new temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${MIXED_VENV:-$(mktemp -d -t slr-mixed-XXXXXX)/venv}
WORK=$(dirname "$VENV")/work
PRESET=${PRESET:-"numpy==2.2.6 scipy==1.15.3 pandas==2.3.3"}

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet torch==2.13.0 $PRESET
before=$("$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | grep -iE '^(numpy|scipy|pandas)==' | sort)
echo "before: $(echo $before)"
"$VENV/bin/python" -m pip wheel --quiet --no-deps -w "$(dirname "$VENV")/dist" . 2> "$(dirname "$VENV")/wheel.log"
"$VENV/bin/python" -m pip install --quiet "$(dirname "$VENV")"/dist/slr-*.whl
after=$("$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | grep -iE '^(numpy|scipy|pandas)==' | sort)
echo "after:  $(echo $after)"
[ "$before" = "$after" ] || { echo "the wheel changed numpy, scipy or pandas"; exit 1; }
"$VENV/bin/python" -m pip check

mkdir -p "$WORK" && cd "$WORK"
export CI=true SLR_CACHE_DIR="$WORK/cache"
TINY="task.d=6 task.L=3 train.steps=20 train.log_every=10 train.repeats=2 eval.n_test=400 eval.bayes_is=1000"
"$VENV/bin/slr" $TINY hydra.run.dir=run > slr.log
"$VENV/bin/slr" -m $TINY task.d=6,8 seed=0,1 figures=false hydra.sweep.dir=sweep > sweep.log
"$VENV/bin/slr-report" run > report-run.txt && sed -n 2p report-run.txt
"$VENV/bin/slr-report" sweep > report-sweep.txt && sed -n 1p report-sweep.txt
"$VENV/bin/slr-compare" sweep > compare.txt && tail -n 1 compare.txt
echo "mixed environment: OK ($WORK)"
