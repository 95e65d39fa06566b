# stepup — `make run` starts the bot on its embedded defaults, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint bench clean

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

bench: $(STAMP)
	$(BIN)/python bench/policy_bench.py
	$(BIN)/python bench/audit_bench.py
	$(BIN)/python bench/api_bench.py --quick --floor-threads 8
	$(BIN)/python bench/expiry_bench.py --quick

clean:
	rm -rf $(VENV) .stepup .pytest_cache .mypy_cache .ruff_cache
