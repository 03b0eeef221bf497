# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv from scratch first.
PYTHON ?= python3
VENV ?= .venv
# e.g. VENV_FLAGS=--system-site-packages to reuse a torch (CUDA build) installed system-wide
VENV_FLAGS ?=
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

WEB := src/segloop/server/static

$(STAMP): pyproject.toml Makefile $(WEB)/package-lock.json
	@# Debian's python3 needs python3-venv for `-m venv`; install it when missing (root or sudo).
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV) || { \
	  rm -rf $(VENV); SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && $$SUDO apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV_FLAGS) $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, CPU build, only when no torch is importable (an existing CUDA torch is kept)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[all,dev]"
	@# MONAI Label's client for tests/server/test_monailabel_client.py; its dependencies would pull a CUDA torch
	$(PY) -m pip install --quiet --no-deps monailabel==0.8.5
	@# Debian packages when missing: npm for the editor's NiiVue, chromium for the browser tests
	@# (Playwright drives Debian's chromium in place; never `playwright install`), postgresql for the
	@# store's tests on PostgreSQL (they start a throwaway cluster with its initdb/pg_ctl)
	PKGS="$$(command -v npm >/dev/null || echo npm) $$(command -v chromium >/dev/null || echo chromium)"; \
	  PKGS="$$PKGS $$(command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo postgresql)"; \
	  if [ -n "$$(echo $$PKGS)" ]; then SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && $$SUDO apt-get install -y $$PKGS; fi
	@# the editor's front-end packages, pinned by the lock file; served by segloop itself (no network later)
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

demo: setup
	$(VENV)/bin/segloop demo

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -n 2 --durations=15

bench: setup
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/io.py
	$(PY) benchmarks/segment.py
	$(PY) benchmarks/serve.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache $(WEB)/node_modules
