#!/usr/bin/env bash
# Install the lowest versions that pyproject.toml allows (every direct dependency at its lower bound, torch aside:
# torch==2.13.0, the CPU build) into a fresh virtual environment and run the fast tests there.
#
#     bash scripts/lowest_versions.sh            # venv in $LOWEST_VENV (default: a new temporary folder)
#     make lowest
#
# Prints the installed versions of the direct dependencies, then pytest's result; exits with pytest's code.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${LOWEST_VENV:-$(mktemp -d -t slr-lowest-XXXXXX)/venv}
CONSTRAINTS=$(dirname "$VENV")/lowest-constraints.txt

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip packaging
# name==lower bound for every requirement with a >= bound (extras test and tensorboard too), torch left out
"$VENV/bin/python" - "$CONSTRAINTS" <<'PY'
import sys, tomllib
from packaging.requirements import Requirement

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = [*project["dependencies"], *(r for extra in ("test", "tensorboard")
                                    for r in project["optional-dependencies"][extra])]
lines = []
for text in reqs:
    req = Requirement(text)
    lower = [s.version for s in req.specifier if s.operator in (">=", "==")]
    if req.name != "torch" and lower:
        lines.append(f"{req.name}=={lower[0]}")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print("lowest versions:", " ".join(lines))
PY
"$VENV/bin/python" -m pip install --quiet torch==2.13.0
"$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" -e '.[test,tensorboard]'
"$VENV/bin/python" -m pip list --format=freeze 2>/dev/null \
  | grep -iE '^(torch|numpy|scipy|pandas|matplotlib|seaborn|tqdm|pyyaml|hydra-core|omegaconf|hydra-joblib-launcher|hydra-submitit-launcher|submitit|pytest|pytest-benchmark|tensorboard)==' \
  | tr '\n' ' '; echo
# the editable install points at this checkout; keep .venv's compiled kernels and Bayes cache apart
export SLR_CACHE_DIR=$(dirname "$VENV")/cache
"$VENV/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider "$@"
