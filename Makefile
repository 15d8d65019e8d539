# Backflow: `make run` serves everything, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
PEERS := tests/peers

.PHONY: run test install migrate peers browser bench clean

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

# daphne serves HTTP, REST, admin, MCP and tenant routes; one task worker runs workflow runs and schedules.
run: migrate
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py run_worker --no-startup-delay & worker=$$!; \
	trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) backflow.asgi:application

$(PEERS)/node_modules/.installed: $(PEERS)/package.json $(PEERS)/package-lock.json
	NO_UPDATE_NOTIFIER=1 npm ci --prefix $(PEERS) --no-fund --no-audit --loglevel=error
	touch $@

peers: $(PEERS)/node_modules/.installed

# Headless Chromium for the app page tests (Debian's package; Playwright drives it, downloads nothing).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

test: install $(VENV)/.installed-test peers browser
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install $(VENV)/.installed-test peers
	$(PY) -m bench

clean:
	rm -rf $(VENV) var $(PEERS)/node_modules
