# The two commands a user needs: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint docs lock bench real-wordpress-start real-wordpress-stop clean

venv: $(STAMP)

# Installed with their bytecode, as pip does by default (uv does not): otherwise every process that imports
# them (each Airflow task, each DAG parse) compiles Airflow and pandas from source where the environment
# forbids writing .pyc (PYTHONDONTWRITEBYTECODE), seconds of CPU each time.
# The project itself goes in editable (its modules stay in plugins/): the installed metadata carries the
# `apache_airflow_provider` entry point, so Airflow lists the connection types civicrm and wordpress.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.txt -r requirements-dev.txt
	$(BIN)/uv pip install -q --python $(BIN)/python -e .
	touch $(STAMP)

# CMS=joomla make demo: the same run against another CMS's emulator (default: the settings' cms_type)
demo: venv
	CMS=$(CMS) $(BIN)/python -m sandbox.demo

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest tests/provisioning -q

lint: venv
	$(BIN)/ruff check .

# The README's settings table, from the schema's help texts (tests/docs checks it is current).
docs: venv
	PYTHONPATH=plugins $(BIN)/python -m provisioning.settings README.md

lock: venv
	$(BIN)/uv pip compile requirements.in --python-version 3.11 -o requirements.txt

bench: venv
	$(BIN)/python -m bench.run

real-wordpress-start:
	sandbox/real_wordpress/start.sh

real-wordpress-stop:
	sandbox/real_wordpress/stop.sh

clean:
	rm -rf .airflow .pytest_cache
