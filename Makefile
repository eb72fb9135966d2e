# The two commands: `make up` (a local cluster with the demo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test venv lint bench screenshot clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,fast]'
	touch $(STAMP)

venv: $(STAMP)

up: $(STAMP)
	$(BIN)/podnet up $(ARGS)

test: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check podnet controlplane agents tests bench
	$(BIN)/mypy

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

# Re-take docs/images/topology.png (the README's picture of the page) from the page's test;
# needs Debian's chromium (`apt-get install chromium`).
screenshot: $(STAMP)
	PODNET_UPDATE_SCREENSHOT=1 $(BIN)/pytest -q tests/integration/test_topology_page.py

clean:
	rm -rf $(VENV) .podnet .pytest_cache .mypy_cache .ruff_cache *.egg-info
