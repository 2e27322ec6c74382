# Expediente: `make run` serves the demo on the embedded default; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test serve bench lint clean-data

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test]'
	touch $(STAMP)

## Create the environment, initialize ./data (SQLite + blobs), load a demo population, serve on 127.0.0.1:8080.
run: $(STAMP)
	$(BIN)/expediente demo

## The whole test suite (PostgreSQL tests skip with a reason when no server; CI requires them).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Serve without loading demo data.
serve: $(STAMP)
	$(BIN)/expediente serve

## Benchmarks (print JSON).
bench: $(STAMP)
	$(BIN)/python bench/fhir_crud.py
	$(BIN)/python bench/generate.py

clean-data:
	rm -rf data
