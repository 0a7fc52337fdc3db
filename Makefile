# Two commands for a newcomer: `make demo` runs the main job end to end, `make test` runs the
# tests. Both create the virtual environment and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench clean

install: $(STAMP)

# torch is pinned to 2.13.0 (its CPU build lies on disk here; an unpinned torch pulls a
# multi-GB CUDA build), installed together with the rest.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 -e '.[all,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/soicurate example-log out/demo/run --force --examples 20000 --epochs 8
	$(BIN)/soicurate profile out/demo/run -o out/demo/profile.parquet

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_profile.py

clean:
	rm -rf $(VENV) out
