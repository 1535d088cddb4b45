# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: env demo test lint typecheck unit bench clean editor

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

env: $(VENV)/.installed          ## create .venv with chimera_lab and the test tools

demo: env                         ## run the built-in pipeline on a local cluster of 2 worker processes
	$(BIN)/chimera-lab demo

lint: env
	$(BIN)/ruff check chimera_lab tests bench

typecheck: env
	$(BIN)/mypy chimera_lab

unit: env
	$(BIN)/pytest -q -rs

test: lint typecheck unit         ## ruff, mypy and the whole test suite

bench: env                        ## the performance budget, each figure beside raw pyzmq
	$(BIN)/python bench/run.py

editor:                           ## rebuild the GraphEditor's browser bundle (chimera_lab/jupyter/static/graph_editor.*)
	cd widgets/graph_editor && npm ci && npm run build

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
