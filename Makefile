# Two commands: `make serve` (set up + start the server) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
ifeq ($(shell uname -m),x86_64)
# llama.cpp's default -march=native build turns on AMX kernels that crash (SIGSEGV) on some virtual machines;
# an AVX2 build runs on any x86-64 server CPU of the last decade. Override CMAKE_ARGS to tune for your own host.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif

.PHONY: serve test bench clean

serve: $(VENV)/.stamp-local
	$(BIN)/modelyard serve $(ARGS)

test: $(VENV)/.stamp-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.stamp-dev
	$(BIN)/python bench/overhead.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.stamp-local: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -e '.[local]'
	touch $@

$(VENV)/.stamp-dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -e '.[local,postgres,redis,dev]'
	touch $@ $(VENV)/.stamp-local

clean:
	rm -rf $(VENV) modelyard-data
