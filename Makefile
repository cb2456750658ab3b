# make run  - start the whole system (RabbitMQ started if installed but down; SQLite and storage under ./var)
# make test - run the test suite (starts RabbitMQ/PostgreSQL if they are down)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint install bench

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

run: install
	bash tools/ensure_services.sh
	$(PY) -m tools.run

test: install
	bash tools/ensure_services.sh
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	bash tools/ensure_services.sh
	$(PY) -m bench.export_bench
