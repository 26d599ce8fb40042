# Every target installs what it needs: uv (if missing), then the locked environment.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
PY := .venv/bin/python
PYTEST_ARGS ?=
AIRFLOW_VERSION ?= 3.2.0

.PHONY: ensure-uv help install demo test lint bench airflow compat clean

help:
	@echo "make demo   - run the example extraction end to end on this machine (fake Codat API, local S3, SQLite Airflow)"
	@echo "make test   - run the whole test suite (unit, integration and end-to-end)"
	@echo "make bench  - run the benchmarks and write bench/RESULTS.md"
	@echo "make airflow - airflow standalone with the example DAGs wired to the local fake Codat and S3"
	@echo "make compat - the provider's tests on the oldest supported Airflow (AIRFLOW_VERSION=3.2.0, pinned in compat/)"

ensure-uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || { \
	  echo "uv not found: installing it with pip (https://docs.astral.sh/uv/)"; \
	  python3 -m pip install --quiet uv; }

.venv/.synced: pyproject.toml uv.lock | ensure-uv
	$(UV) sync --frozen --compile-bytecode --all-extras
	@touch $@

install: .venv/.synced

demo: install
	$(PY) scripts/demo.py

test: install
	$(PY) -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider $(PYTEST_ARGS)

lint: install
	.venv/bin/ruff check airflow_provider_codat tests dags bench scripts

airflow: install
	$(PY) scripts/airflow_local.py

bench: install
	$(PY) bench/run.py

compat: | ensure-uv
	bash compat/run.sh $(AIRFLOW_VERSION) $(PYTEST_ARGS)

clean:
	rm -rf .venv .venv-airflow-* .demo .airflow bench/.work
