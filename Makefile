# The handles: make demo, make test, make lint. Each installs what it needs into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Opt-in extras: embeddings (onnxruntime and an int8 MiniLM, no torch); embeddings-distill adds torch
# and sentence-transformers for the float32 and static backends (a CPU torch on these machines' disk).
EXTRAS ?= llm,dev

.PHONY: install demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# llama-cpp-python compiles for ~10 min once; pip's wheel cache makes later installs instant. Built
	# portable (AVX2/FMA/F16C, GGML_NATIVE=OFF): a -march=native build of llama.cpp uses what the CPU
	# advertises (AMX, AVX-512), which a VM may not enable, and died here with SIGILL (illegal instruction).
	CMAKE_ARGS="-DGGML_NATIVE=OFF $(CMAKE_ARGS)" $(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/docsort demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .docsort
