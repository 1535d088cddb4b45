# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: env demo test lint typecheck unit bench soak clean editor classroom-check binder-pins screenshot

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

test: lint typecheck unit classroom-check  ## ruff, mypy, the whole test suite, and every notebook as in a classroom

bench: env                        ## the performance budget, each figure beside raw pyzmq
	$(BIN)/python bench/run.py

soak: env                         ## 10 minutes of frames and small messages on 2 workers: RSS growth per process, 0 lost
	$(BIN)/python bench/soak.py

editor:                           ## rebuild the GraphEditor's browser bundle (chimera_lab/jupyter/static/graph_editor.*)
	cd widgets/graph_editor && npm ci && npm run build

# The classroom: a fresh virtual environment made the way Binder makes it (binder/requirements.txt, then
# binder/postBuild), then every notebook run top to bottom under a 2 GB memory limit, without Docker.
CLASSROOM := .classroom
classroom-check:                  ## every notebook in a fresh Binder-like environment: time and peak memory each
	rm -rf $(CLASSROOM)/venv $(CLASSROOM)/run
	$(PYTHON) -m venv $(CLASSROOM)/venv
	$(CLASSROOM)/venv/bin/pip install -q --upgrade pip
	$(CLASSROOM)/venv/bin/pip install -q -r binder/requirements.txt
	PATH="$(abspath $(CLASSROOM))/venv/bin:$$PATH" bash binder/postBuild
	$(CLASSROOM)/venv/bin/pip check
	cd $(CLASSROOM) && venv/bin/chimera-lab classroom-check $(abspath notebooks) --memory-limit 2G \
		--memory-budget 1.5G --time-budget 120 --workdir run --report report.json

binder-pins:                      ## re-resolve binder/requirements.txt: chimera_lab's dependencies, pinned
	rm -rf $(CLASSROOM)/pins
	$(PYTHON) -m venv $(CLASSROOM)/pins
	$(CLASSROOM)/pins/bin/pip install -q --upgrade pip
	$(CLASSROOM)/pins/bin/pip install -q .
	{ echo "# What Binder installs (then binder/postBuild installs chimera_lab). Made by \`make binder-pins\`;"; \
	  echo "# proven by \`make classroom-check\`, which builds a fresh environment from this file."; \
	  $(CLASSROOM)/pins/bin/pip freeze --exclude chimera_lab --exclude chimera-lab; } > binder/requirements.txt

screenshot: env                   ## notebooks/img/live-widgets.png: the video notebook's live widgets in JupyterLab
	$(BIN)/python tests/screenshot.py

clean:
	rm -rf $(VENV) $(CLASSROOM) .mypy_cache .ruff_cache .pytest_cache
