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

# piper-tts is GPL-3.0: leave it out with `make serve EXTRAS=local`
EXTRAS ?= local,piper

.PHONY: serve test bench clean system-deps browser-deps

serve: system-deps $(VENV)/.stamp-local
	$(BIN)/modelyard serve $(ARGS)

test: system-deps browser-deps $(VENV)/.stamp-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The espeak-ng speech engine is a Debian program, not a Python package; install it when we can.
system-deps:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q espeak-ng >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q espeak-ng >/dev/null)) \
	      && echo "installed espeak-ng"; \
	  else echo "note: espeak-ng is not installed; the espeak-ng speech model will be offline (apt-get install espeak-ng)"; fi; }

# The console's browser tests drive Debian's Chromium (Playwright's own browser download is not used).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
	      && echo "installed chromium"; \
	  else echo "note: chromium is not installed; the console's browser tests will be skipped (apt-get install chromium)"; fi; }

bench: $(VENV)/.stamp-dev
	$(BIN)/python bench/overhead.py --stream $(BENCH_ARGS)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.stamp-local: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install 'torch==2.13.0'
	$(BIN)/python -m pip install -e '.[$(EXTRAS)]'
	touch $@

$(VENV)/.stamp-dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install 'torch==2.13.0'
	$(BIN)/python -m pip install -e '.[$(EXTRAS),postgres,redis,dev]'
	touch $@ $(VENV)/.stamp-local

clean:
	rm -rf $(VENV) modelyard-data
