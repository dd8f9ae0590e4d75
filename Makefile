# runledger: `make up` starts the stack with the demo pipeline; `make test` runs everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := prometheus prometheus-alertmanager docker-compose nginx chromium
export RUNLEDGER_HOME ?= $(CURDIR)/.runledger

.PHONY: up down test test-lowest bench lint deps system-deps grammar clean

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[server,test]'
	@touch $(STAMP)

deps: $(STAMP)

# Debian packages for the real Prometheus, Alertmanager, nginx and Chromium (installed when missing).
system-deps:
	@missing=""; \
	for pkg in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Grafana's LogQL and TraceQL grammars (npm), for the dashboard tests; Node from Debian when missing.
GRAMMAR := tools/grammar
$(GRAMMAR)/node_modules/.installed: $(GRAMMAR)/package-lock.json
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	cd $(GRAMMAR) && npm ci --no-audit --no-fund --silent
	@touch $@

grammar: $(GRAMMAR)/node_modules/.installed

up: deps system-deps
	$(BIN)/runledger up

down:
	-$(BIN)/runledger down

lint: deps
	$(BIN)/ruff check exporter tests bench
	$(BIN)/ruff format --check exporter tests bench
	$(BIN)/mypy
	$(BIN)/runledger schema --check
	$(BIN)/runledger openapi --check

test: deps system-deps grammar lint
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(MAKE) test-lowest

# The SDK at its lowest declared versions beside openai, anthropic and google-genai (~1 min).
test-lowest: deps
	$(BIN)/python -m pytest -q -p no:cacheprovider -m lowest tests/packaging

bench: deps system-deps
	$(BIN)/python bench/run_all.py

clean: down
	rm -rf $(VENV) .runledger
