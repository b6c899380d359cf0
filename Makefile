# capsim: two commands on a fresh machine.
#   make run    create .venv, install, run the flagship scenario
#   make test   create .venv, install with dev extras, run the tests
#   make verify build the reference stack (cached in ~/.cache/capsim), run capsim verify against it
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
SCENARIO ?= scenarios/order_support.yaml

.PHONY: run test lint test-long bench calibration clean venv verify

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/capsim run $(SCENARIO); rc=$$?; [ $$rc -le 1 ] || [ $$rc -eq 3 ] || exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check sim tests benchmarks
	$(BIN)/ruff format --check sim tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

test-long: $(STAMP)
	CAPSIM_LONG=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_startup.py
	$(BIN)/python benchmarks/bench_engine.py

calibration: $(STAMP)
	$(BIN)/capsim calibrate retrieval --docs 5000,20000,50000 --dim 768 --top-k 5 --queries 500 \
	  --index hnsw,linear_numpy,linear_python,ivf --M 16 --ef-construction 100 \
	  --ef 10,20,50,100,200 --nprobe 1,4,8,16,32 --threads 1,2 --seed 0 \
	  --python-docs 5000 --python-queries 100 --out sim/data/retrieval_calibration.json

VERIFY_USERS ?= 1,4,7
VERIFY_DURATION_S ?= 100
verify: $(STAMP)
	bash sim/verify/stack/run_verify.sh $(abspath $(BIN)/python) $(VERIFY_USERS) $(VERIFY_DURATION_S)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
