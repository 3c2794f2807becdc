# convstream — every way of running things; the README and CI use these targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
KAFKA  := deploy/kafka/kafka.sh
WITH_BROKER := deploy/kafka/with-broker.sh

.DEFAULT_GOAL := help
.PHONY: help install demo test unit integration lint bench bench-e2e bench-forward kafka-up kafka-down kafka-status clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## create .venv and install convstream with dev tools

demo: install ## local broker + worker + sample traffic; prints output and metrics (KEEP_RUNNING=1 keeps it up)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(WITH_BROKER) $(BIN)/convstream demo $(if $(filter 1,$(KEEP_RUNNING)),--keep-running,)

test: install ## the whole suite: lint, types, unit, conformance, integration on a real broker
	$(BIN)/ruff check streams agents tests bench
	$(BIN)/mypy
	PATH="$(CURDIR)/$(BIN):$$PATH" $(WITH_BROKER) $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

unit: install ## only the tests that need no broker
	$(BIN)/python -m pytest -q tests/unit tests/conformance $(PYTEST_ARGS)

integration: install ## only the real-broker tests
	PATH="$(CURDIR)/$(BIN):$$PATH" $(WITH_BROKER) $(BIN)/python -m pytest -q tests/integration $(PYTEST_ARGS)

lint: install ## ruff + mypy
	$(BIN)/ruff check streams agents tests bench
	$(BIN)/ruff format --check streams agents
	$(BIN)/mypy

bench: install ## offline benchmarks (convstream process path, ingest stage, PII vs SDK)
	$(BIN)/python bench/offline.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/pii_vs_sdk.py

bench-e2e: install ## worker vs bare aiokafka throughput through the real broker
	PATH="$(CURDIR)/$(BIN):$$PATH" $(WITH_BROKER) $(BIN)/python bench/e2e.py $(BENCH_ARGS)

bench-forward: install ## convstream forward to the local Graph-compatible endpoint: events/s, requests under faults
	$(BIN)/python bench/forward.py $(BENCH_ARGS)

kafka-up: ## start the local broker (prints the bootstrap address)
	$(KAFKA) start

kafka-down: ## stop the local broker started by kafka-up
	$(KAFKA) stop

kafka-status: ## is the local broker running and answering?
	$(KAFKA) status

clean: ## remove the venv and local state (jars, broker data)
	-$(KAFKA) stop
	rm -rf $(VENV) .cache *.egg-info
