# Backflow: `make run` serves everything, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
PEERS := tests/peers

.PHONY: run known-server test install migrate peers browser prometheus bench clean

$(VENV)/.installed: requirements.txt pyproject.toml bridge/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip install --quiet --no-deps -e ./bridge
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

install: $(VENV)/.installed var/local.env

# Secrets for this checkout, generated once; real environment variables override them.
var/local.env:
	mkdir -p var
	umask 077 && { \
	  echo "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')"; \
	  echo "BACKFLOW_SECRETS_KEY=$$($(PYTHON) -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')"; \
	} > $@

migrate: install
	$(PY) manage.py migrate --noinput

# daphne serves HTTP, REST, admin, MCP and tenant routes (on uvloop: backflow/serve_daphne.py); one task
# worker runs workflow runs and schedules.
# `make run SERVER=uvicorn` serves the same application with uvicorn on uvloop (backflow/serve_uvicorn.py).
SERVER ?= daphne
SERVE_daphne = $(PY) -m backflow.serve_daphne -b $(HOST) -p $(PORT) backflow.asgi:application
SERVE_uvicorn = $(PY) -m backflow.serve_uvicorn --host $(HOST) --port $(PORT)
SERVE = $(or $(SERVE_$(SERVER)),$(error SERVER is daphne or uvicorn, not "$(SERVER)"))
run: known-server migrate
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py run_worker --no-startup-delay & worker=$$!; \
	trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	$(SERVE)

known-server:
	@: $(SERVE)

$(PEERS)/node_modules/.installed: $(PEERS)/package.json $(PEERS)/package-lock.json
	NO_UPDATE_NOTIFIER=1 npm ci --prefix $(PEERS) --no-fund --no-audit --loglevel=error
	touch $@

peers: $(PEERS)/node_modules/.installed

# Headless Chromium for the app page tests (Debian's package; Playwright drives it, downloads nothing).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# Prometheus and promtool for the monitoring tests, which run their own on loopback (Debian's package).
# The package would start, and enable at boot, a system prometheus on 0.0.0.0:9090: a policy-rc.d
# that exits 101 (unless the host has one) forbids the start, the boot links are disabled, any
# instance started anyway is stopped, and the port is checked afterwards.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  policy=/usr/sbin/policy-rc.d; ours=; \
	  trap '[ -z "$$ours" ] || rm -f $$policy' EXIT; trap 'exit 1' INT TERM HUP; \
	  [ -e $$policy ] || { printf '#!/bin/sh\nexit 101\n' >$$policy && chmod 755 $$policy && ours=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus || exit; \
	  /etc/init.d/prometheus stop >/dev/null 2>&1; update-rc.d prometheus disable >/dev/null 2>&1; \
	  if [ -d /run/systemd/system ]; then systemctl disable --now --quiet prometheus.service; \
	  else deb-systemd-helper disable prometheus.service >/dev/null 2>&1; fi; \
	  if ss -ltnpH 'sport = :9090' | grep .; then echo "make prometheus: something listens on :9090 after the install" >&2; exit 1; fi; \
	}

# The suite runs in TEST_WORKERS processes (pytest-xdist), each taking a whole test module at a time
# with a database and a Redis database of its own (conftest.py); TEST_WORKERS=0 runs it in one.
TEST_WORKERS ?= 2
test: install $(VENV)/.installed-test peers browser prometheus
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: install $(VENV)/.installed-test peers
	$(PY) -m bench

clean:
	rm -rf $(VENV) var $(PEERS)/node_modules
