# The two commands a newcomer runs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.PHONY: demo test venv system-deps kafka-jars unit bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

kafka-jars: venv
	$(PY) -c "from streams.local.kafka import fetch_jars; print(fetch_jars())"

system-deps:
	bash deploy/local/install-system-deps.sh

demo: venv kafka-jars
	$(VENV)/bin/streams demo

test: system-deps venv kafka-jars
	$(VENV)/bin/pytest -ra $(PYTEST_ARGS)

unit: venv
	$(VENV)/bin/pytest -ra tests/unit $(PYTEST_ARGS)

bench: venv kafka-jars
	$(PY) bench/run.py

clean:
	rm -rf var build *.egg-info
