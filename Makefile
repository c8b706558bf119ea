# The workbook's commands. `make test` and `make run` set everything up themselves.
#   make run                  run notebooks 01..NN headless on the cpu profile -> runs/cpu/
#   make run PROFILE=tiny     the same at toy size (minutes)
#   make test                 the test suite (what CI runs)
#   make lab                  open the notebooks in JupyterLab
PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= cpu
RUN_DIR ?= runs/$(PROFILE)
RUN_FLAGS ?=
# torch: with a CUDA GPU take PyPI's default (CUDA) build; without one, 2.13.0
# (a CPU build on machines that carry that wheel, as CI does). Override freely.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test run lab model clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m helpers.models provision
	@# Debian's Chromium: kaleido draws the plots' static PNGs with it; the browser test opens the notebooks in it.
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq chromium) >/dev/null || \
	  echo "setup: no Chromium (apt-get install chromium failed): plots get no static PNG; the browser test is skipped"
	touch $(STAMP)

model: setup
	$(PY) -m helpers.models provision

test: setup
	$(PY) -m pytest -q

run: setup
	$(PY) -m helpers.runner --profile $(PROFILE) --run-dir $(RUN_DIR) $(RUN_FLAGS)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-venv:
	rm -rf $(VENV)
