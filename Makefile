# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast demo lint ui bench clean

install: $(STAMP)

# torch==2.13.0 is installed first and on its own: it is the CPU wheel on these machines, and any
# other torch requirement resolved later would pull gigabytes of CUDA wheels from the registry.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,dask]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

# The edit-test loop: skips tests marked slow.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/atft demo --config deployments/demo.yaml --fresh

# The local stack with the UI at http://127.0.0.1:4200: server, work pool, deployments and a worker; Ctrl-C stops it.
ui: $(STAMP)
	$(VENV)/bin/atft serve

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	-$(PY) benchmarks/bench_ingest.py
	-$(PY) benchmarks/bench_csz.py
	-$(PY) benchmarks/bench_features.py
	-$(PY) benchmarks/bench_loader.py
	-$(PY) benchmarks/bench_train.py
	-$(PY) benchmarks/bench_e2e.py
	-$(PY) benchmarks/bench_learning.py --config deployments/demo.yaml --models atft_gat_fan

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
