# convstream — every way of running things; the README and CI use these targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
KAFKA  := deploy/kafka/kafka.sh
WITH_BROKER := deploy/kafka/with-broker.sh

.DEFAULT_GOAL := help
.PHONY: help install compile demo test unit integration lint bench bench-e2e bench-restart bench-forward bench-collect chromium prometheus kafka-up kafka-down kafka-status clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# the modules of the compiled core (streams/core.py COMPILED): mypyc builds them at install
CORE_PY := $(shell $(PYTHON) -c "import runpy; print(' '.join('streams/%s.py' % n for n in runpy.run_path('streams/core.py')['COMPILED']))")

$(BIN)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## create .venv and install convstream with dev tools (compiles the core)

$(BIN)/.compiled: $(CORE_PY) streams/core.py streams/mypyc.ini | $(BIN)/.installed
	$(BIN)/python -c 'import sys, streams.core as c; sys.exit(c.main(["--current"]))' || $(BIN)/pip install -q --no-deps -e .
	$(BIN)/python -c 'import sys, streams.core as c; sys.exit(c.main(["--current"]))'
	touch $@

compile: $(BIN)/.compiled ## rebuild the compiled core after editing its modules (else they run pure)

demo: install ## local broker + worker + sample traffic; prints output and metrics (KEEP_RUNNING=1 keeps it up)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(WITH_BROKER) $(BIN)/convstream demo $(if $(filter 1,$(KEEP_RUNNING)),--keep-running,)

test: install compile chromium prometheus ## the whole suite: lint, types, unit, conformance, integration on a real broker; unit + conformance again on the pure core
	$(BIN)/ruff check streams agents tests bench
	$(BIN)/mypy
	CONVSTREAM_CORE=compiled PATH="$(CURDIR)/$(BIN):$$PATH" $(WITH_BROKER) $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	CONVSTREAM_CORE=pure $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit tests/conformance $(PYTEST_ARGS)

unit: install compile ## only the tests that need no broker, on the compiled core and on the pure one
	CONVSTREAM_CORE=compiled $(BIN)/python -m pytest -q tests/unit tests/conformance $(PYTEST_ARGS)
	CONVSTREAM_CORE=pure $(BIN)/python -m pytest -q tests/unit tests/conformance $(PYTEST_ARGS)

integration: install chromium prometheus ## only the real-broker tests
	PATH="$(CURDIR)/$(BIN):$$PATH" $(WITH_BROKER) $(BIN)/python -m pytest -q tests/integration $(PYTEST_ARGS)

lint: install ## ruff + mypy
	$(BIN)/ruff check streams agents tests bench
	$(BIN)/ruff format --check streams agents bench
	$(BIN)/mypy

bench: install ## offline benchmarks (convstream process path, ingest stage, PII vs SDK, expiry sweep)
	$(BIN)/python bench/offline.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/pii_vs_sdk.py
	$(BIN)/python bench/sweep.py

bench-e2e: install ## worker vs bare aiokafka throughput through the real broker
	PATH="$(CURDIR)/$(BIN):$$PATH" $(WITH_BROKER) $(BIN)/python bench/e2e.py $(BENCH_ARGS)

bench-restart: install ## restart (same / empty data dir) and standby takeover times through the real broker, ~1M live dedup keys
	PATH="$(CURDIR)/$(BIN):$$PATH" $(WITH_BROKER) $(BIN)/python bench/restart.py $(BENCH_ARGS)

bench-forward: install ## convstream forward to the local Graph-compatible endpoint: events/s, requests under faults
	$(BIN)/python bench/forward.py $(BENCH_ARGS)
bench-collect: install ## convstream collect under load (hits/s, CAPI events/s, p50/p99; 5 s broker outage)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(WITH_BROKER) $(BIN)/python bench/collect.py $(BENCH_ARGS)

chromium: ## headless Chromium for the collector's browser test (Debian package, via apt-get)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "chromium missing: installing the Debian package (apt-get update; apt-get install chromium)"; \
	  command -v apt-get >/dev/null 2>&1 || { echo "ERROR: chromium is not installed and apt-get is not available; install Chromium (binary 'chromium') by hand" >&2; exit 1; }; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || { \
	    echo "ERROR: could not install chromium with apt-get (see the output above: no root? no network?)." >&2; \
	    echo "       The collector's browser test needs it; install Chromium and run again." >&2; exit 1; }; }

prometheus: ## Prometheus + promtool for the live monitoring test (Debian package, via apt-get)
	@{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || { \
	  echo "prometheus missing: installing the Debian package (apt-get update; apt-get install --no-install-recommends prometheus)"; \
	  command -v apt-get >/dev/null 2>&1 || { echo "ERROR: prometheus is not installed and apt-get is not available; install Prometheus (binaries 'prometheus' and 'promtool') by hand" >&2; exit 1; }; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } || { \
	    echo "ERROR: could not install prometheus with apt-get (see the output above: no root? no network?)." >&2; \
	    echo "       tests/integration/test_prometheus_live.py needs it; install Prometheus and run again." >&2; exit 1; }; }

kafka-up: ## start the local broker (prints the bootstrap address)
	$(KAFKA) start

kafka-down: ## stop the local broker started by kafka-up
	$(KAFKA) stop

kafka-status: ## is the local broker running and answering?
	$(KAFKA) status

clean: ## remove the venv and local state (jars, broker data)
	-$(KAFKA) stop
	rm -rf $(VENV) .cache *.egg-info build streams/*.so streams/_core_build.json
