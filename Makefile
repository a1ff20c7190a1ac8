# Two commands for a newcomer: `make demo` (install, then one reply per corpus)
# and `make test` (install with the dev extra, then lint and the test suite);
# `make test-fast` skips the slow tests while you work.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-fast lint bench clean gpu-wheels gpu-check

$(BIN)/charbot: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

install: $(BIN)/charbot

demo: install
	$(BIN)/charbot reply tale "Once upon a time there was a little mermaid" --seed 1
	$(BIN)/charbot reply faq "Do I need to wear a mask on campus?" --seed 1
	$(BIN)/charbot reply novel "Anna looked at him" --seed 1

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest

# For local work: skips the tests that start processes or servers (marked slow). CI runs `make test`.
test-fast: lint
	$(BIN)/pytest -m "not slow and not cuda"

bench: install
	$(BIN)/charbot bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# On a machine with a CUDA GPU (README, "On a GPU"). `make gpu-wheels` runs where there is
# internet: it downloads, for Python 3.12 on x86-64, the packages a PyTorch CUDA image lacks
# (.ci/gpu-wheels.txt) and copies the corpora and the classic baseline from ../shared. Copy
# the project with those two folders to the GPU machine; there `make gpu-check` uses the
# PyTorch already installed (it never downloads one), installs the wheels beside the
# project, runs the `cuda` tests, then the bench's GPU rows into $(BENCH_OUT).
GPU_WHEELS ?= .gpu-wheels
GPU_DATA ?= .gpu-data
GPU_SITE ?= .gpu-site
GPU_BENCH ?= quick
BENCH_OUT ?= bench
GPU_ENV = PYTHONPATH=$(CURDIR)/$(GPU_SITE):$(CURDIR) CHARBOT_DATA_DIR=$(CURDIR)/$(GPU_DATA)/corpora PYTHONUNBUFFERED=1
GPU_CLASSIC = $(wildcard $(GPU_DATA)/baselines/classic_charrnn.py)

gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --implementation cp --python-version 3.12 \
		--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --dest $(GPU_WHEELS) -r .ci/gpu-wheels.txt
	rm -rf $(GPU_DATA) && mkdir -p $(GPU_DATA)
	if [ -d ../shared/corpora ]; then cp -r ../shared/corpora ../shared/baselines $(GPU_DATA)/ && chmod -R u+w $(GPU_DATA); \
	else echo "no ../shared beside the project: the bench's training rows will need --train-text"; fi

gpu-check:
	@$(PYTHON) -c "import importlib.util, sys; importlib.util.find_spec('torch') or sys.exit('gpu-check: $(PYTHON) has no PyTorch'); \
		import torch; torch.cuda.is_available() or sys.exit('gpu-check: this PyTorch sees no CUDA GPU')"
	@nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
	if [ -d $(GPU_WHEELS) ]; then $(PYTHON) -m pip install --quiet --no-index --no-deps --no-compile --upgrade \
		--target $(GPU_SITE) $(GPU_WHEELS)/*.whl; fi
	$(GPU_ENV) $(PYTHON) -m pytest -m cuda -p no:cacheprovider -rfEs tests
	$(GPU_ENV) $(PYTHON) -m bot bench --only gpu --out $(BENCH_OUT) $(if $(filter quick,$(GPU_BENCH)),--quick) \
		$(if $(GPU_CLASSIC),--classic $(GPU_CLASSIC))
