# stepup — `make run` starts the bot on its embedded defaults, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	STEPUP_POLICY_FILE=$${STEPUP_POLICY_FILE:-manifests/policy.example.yaml} $(BIN)/stepup serve

test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check core bot stepup_client tests bench examples
	$(BIN)/ruff format --check core bot stepup_client tests bench examples
	$(BIN)/mypy

# bench: phases of 20-30 s (~50 min on 2 cores); bench-quick: short phases (~8 min), a smoke run.
bench: $(STAMP)
	$(BIN)/python bench/policy_bench.py
	$(BIN)/python bench/audit_bench.py
	$(BIN)/python bench/api_bench.py --requests 8000 --warmup 500 --floor-threads 8 --rss-requests 20000 --rss-every 5000
	$(BIN)/python bench/openloop_bench.py --duration 25 --warmup 3
	$(BIN)/python bench/expiry_bench.py
	$(BIN)/python bench/growth_bench.py

bench-quick: $(STAMP)
	$(BIN)/python bench/policy_bench.py
	$(BIN)/python bench/audit_bench.py
	$(BIN)/python bench/api_bench.py --quick --floor-threads 8
	$(BIN)/python bench/openloop_bench.py --quick
	$(BIN)/python bench/expiry_bench.py --quick
	$(BIN)/python bench/growth_bench.py --quick

clean:
	rm -rf $(VENV) .stepup .pytest_cache .mypy_cache .ruff_cache
