# Two commands do all set-up on a fresh machine:
#   make demo   - install, generate a synthetic TCT slide, run the whole pipeline, print the report path
#   make test   - install, run the whole test suite
# Both create (or reuse) the virtual environment in $(VENV).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.wsi-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast chromium bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,workflows,mmdet]'
	@touch $(STAMP)

install: $(STAMP)

# Headless Chromium checks the HTML report in the tests (Debian package; needs root or sudo).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    echo "warning: could not install chromium; HTML browser checks will fail"; }

demo: install
	$(VENV)/bin/wsi-run --demo --out demo_out

test: install chromium
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/tiling.py
	$(PY) benchmarks/inference.py

clean:
	rm -rf demo_out .pytest_cache
