# Two commands for a newcomer: `make demo` and `make test`.
# Both create .venv (if missing) and install the package into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench samples clean lint

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/eo-pipeline fetch-data -q  # CH4 absorption table (mag1c 1.2.0 wheel, no dependencies)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/eo-pipeline run configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/run.py

samples: $(STAMP)
	$(BIN)/eo-pipeline make-samples --out sample_scenes

lint: $(STAMP)
	$(BIN)/python -m ruff check eo_pipeline tests benchmarks

clean:
	rm -rf outputs .pytest_cache .hypothesis
