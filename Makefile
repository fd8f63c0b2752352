# Two entry points for a fresh machine (see README): `make bench` and `make test`.
# Everything lives in .venv; `make build` (re)compiles spikeops._C after a change under csrc/.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.deps-installed

.PHONY: test bench build env clean

$(STAMP): requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install -r requirements-dev.txt
	touch $(STAMP)

env: $(STAMP)

build: $(STAMP)
	MAX_JOBS=2 $(PY) setup.py build_ext --inplace

test: build
	$(PY) -m pytest

bench: build
	$(PY) -m benchmarks.report

clean:
	rm -rf build *.egg-info spikeops/_C*.so
