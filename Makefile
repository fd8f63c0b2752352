# Two entry points for a fresh machine (see README): `make bench` and `make test`.
# Everything lives in .venv; `make build` (re)compiles spikeops._C after a change under csrc/.
# `make gpu-check DIR=<report dir> WHEELS=<wheel dir>` proves the GPU path on an NVIDIA machine (README).
PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip
STAMP    := $(VENV)/.deps-installed
MAX_JOBS ?= $(shell nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
DIR      ?= gpu-check-report
WHEELS   ?=
export MAX_JOBS

.PHONY: test bench build env clean clean-venv check-python gpu-check gpu-check-dry sdist

# Python >= 3.11 up front (SpikingJelly 2.0 needs it), before anything is created or compiled: the venv's
# interpreter when .venv exists, else $(PYTHON), the one that will create it.
CHECKED_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))
check-python:
	@command -v $(CHECKED_PY) >/dev/null || { echo "$(CHECKED_PY) not found: make PYTHON=/path/to/python3.11 ..."; exit 1; }
	@$(CHECKED_PY) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else \
		"spikeops needs Python >= 3.11 (SpikingJelly 2.0 does); $(CHECKED_PY) is %d.%d: make clean-venv, then make PYTHON=python3.11 ..." % v[:2])'

$(STAMP): requirements-dev.txt | check-python
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install -r requirements-dev.txt
	touch $(STAMP)

env: $(STAMP)

build: check-python $(STAMP)
	$(PY) setup.py build_ext --inplace

test: build
	$(PY) -m pytest

bench: build
	$(PY) -m benchmarks.report

# The GPU proof on a bare NVIDIA machine: no venv, no internet; the preinstalled torch/Triton/nvcc plus the wheels in
# WHEELS. Exits 0 with a message where there is no GPU.
gpu-check: check-python
	$(PYTHON) benchmarks/gpu_check.py --out "$(DIR)" $(if $(WHEELS),--wheels "$(WHEELS)") --jobs $(MAX_JOBS)

# What gpu-check would do, run here on CPU (with .venv's Python where it exists): the test subset, the benchmark
# plan, a report with no measurements.
gpu-check-dry: check-python
	$(CHECKED_PY) benchmarks/gpu_check.py --out "$(DIR)" --dry-run

# The source distribution (csrc/**, kernels/**, docs, tests) into dist/; needs no torch.
sdist: check-python $(STAMP)
	$(PY) setup.py -q sdist -d dist

clean:
	rm -rf build *.egg-info spikeops/_C*.so spikeops/_build_info.py

clean-venv:
	rm -rf $(VENV)
