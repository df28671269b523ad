# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test test-long test-openstack test-browser lint imports typecheck check bench clean web

# The dashboard's libraries, from the npm registry at build time (never a CDN at run
# time): their browser builds are copied next to the dashboard's own files.
WEB      = src/opendoctor/web
MODULES  = $(WEB)/frontend/node_modules
VENDOR   = $(WEB)/static/vendor
WEBSTAMP = $(VENDOR)/.built
VENDORED = $(MODULES)/cytoscape/dist/cytoscape.min.js \
           $(MODULES)/layout-base/layout-base.js \
           $(MODULES)/cose-base/cose-base.js \
           $(MODULES)/cytoscape-fcose/cytoscape-fcose.js \
           $(MODULES)/dagre/dist/dagre.min.js \
           $(MODULES)/cytoscape-dagre/cytoscape-dagre.js \
           $(MODULES)/chart.js/dist/chart.umd.js

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(WEBSTAMP): $(WEB)/frontend/package-lock.json
	npm ci --prefix $(WEB)/frontend --no-audit --no-fund --silent
	mkdir -p $(VENDOR)
	cp $(VENDORED) $(VENDOR)/
	touch $@

web: $(WEBSTAMP)

demo: $(STAMP) $(WEBSTAMP)
	$(BIN)/opendoctor demo

# The slowest tests are listed at the end: this suite has a 15-minute budget on two cores.
test: $(STAMP) $(WEBSTAMP)
	$(BIN)/python -m pytest -q -m "not openstack and not browser and not long" --durations=25

# The long stories (storms, cluster kills and restarts, maintenance workflows): minutes.
test-long: $(STAMP) $(WEBSTAMP)
	$(BIN)/python -m pytest -q -m "long and not openstack and not browser"

# The dashboard in Debian's Chromium (apt install chromium), against a live service.
test-browser: $(STAMP) $(WEBSTAMP)
	$(BIN)/python -m pytest -q -m browser

# Against real Keystone, Placement and Nova: the OpenStack test bed (a running one, or
# one brought up for the run: MariaDB and RabbitMQ needed; docs/openstack.md).
test-openstack: $(STAMP)
	$(BIN)/python -m pytest -q -m openstack

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(MAKE) imports

imports: $(STAMP)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test test-long test-browser test-openstack

bench: $(STAMP)
	$(BIN)/opendoctor bench notify --vms 1 --vms 50 --vms 1000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(MODULES) $(VENDOR)
