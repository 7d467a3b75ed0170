# rftbench: `make demo` installs everything into .venv and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.rftbench-installed

.PHONY: install demo test test-fast test-cluster test-repeat bench lint-imports clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# 1) everything with pinned versions (with the `dashboard` extra: optuna-dashboard, which the
	# README points to); 2) torchattacks alone, without its stale deps (its requests~=2.25 pin
	# conflicts with MLflow); 3) robustbench + pyautoattack after it (the
	# torchattacks wheel ships an old robustbench/ copy that must be overwritten), with the
	# modules robustbench imports but does not declare (gdown for its downloads, geotorch and
	# torchdiffeq for one architecture).
	$(PIP) install -q -c constraints.txt -e '.[test,dashboard]'
	$(PIP) install -q --no-deps torchattacks==3.5.1
	$(PIP) install -q --no-deps --force-reinstall robustbench==1.1.1 pyautoattack==0.2.0 \
	  gdown==5.1.0 beautifulsoup4==4.15.0 soupsieve==4.1.3 geotorch==0.4.0 torchdiffeq==0.2.5
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rftbench demo

test: $(STAMP)
	$(PY) -m pytest -q

# the inner loop: everything except the tests marked slow (several processes, servers, browsers)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# flakiness before CI sees it: the slow and signal tests N times, with failures counted per test
N ?= 3
# the launchers on a real single-node SLURM (slurm-wlm, with and without slurmdbd) and a real
# two-node Ray cluster, started by the tests (apt-get install slurm-wlm slurmdbd munge mariadb-server)
test-cluster: $(STAMP)
	RFTBENCH_TEST_CLUSTERS=1 $(PY) -m pytest -q tests/launch/test_slurm_cluster.py tests/launch/test_ray_cluster.py \
	  tests/launch/test_cross_engine.py

# (the DDP failure test launches 10 times in each round, 3 in `make test`)
test-repeat: $(STAMP)
	RFTBENCH_TEST_LAUNCHES=10 $(PY) tools/test_repeat.py -n $(N)

# the stages' layers (pyproject.toml [tool.importlinter]): each stage imports only those below it
lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	for f in benchmarks/perf_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) mlflow.db mlartifacts rftbench-runs optuna.db
