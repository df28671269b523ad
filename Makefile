# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test test-openstack lint imports typecheck check bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/opendoctor demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not openstack"

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

check: lint typecheck test test-openstack

bench: $(STAMP)
	$(BIN)/opendoctor bench notify --vms 1 --vms 50 --vms 1000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
