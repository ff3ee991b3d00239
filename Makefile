# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck unit docs imports clean dist

install: $(STAMP)

# Reinstall when the dependency list changes; editable, so code edits need no reinstall.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,setproctitle,reload,top,otlp]'
	touch $@

run: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start -f Procfile.example

lint: install
	$(BIN)/ruff check lib tests examples bench tools
	$(BIN)/ruff format --check lib tests examples bench tools

typecheck: install
	$(BIN)/mypy

# The suite mostly waits on real servers and clients, so it runs in parallel processes, more
# than the machine's 2 cores; `TEST_PROCESSES=0 make unit` runs it in this one process.
TEST_PROCESSES ?= 4

# nginx from the Debian packages, for the tests of deploy/nginx/ (as root, as in CI; without
# it those tests are skipped, saying why).
unit: install
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		(apt-get update -q >/dev/null && apt-get install -y -q nginx >/dev/null) || \
		echo "nginx could not be installed: tests/integration/test_nginx.py will be skipped"
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist worksteal

test: lint typecheck unit

# The whole suite under each Python dynocorn supports besides the default one, each in a venv
# of its own (.venv-3.12, ...): the interpreter on the PATH, else pyenv's.
PYTHONS ?= 3.12 3.13
.PHONY: pythons
pythons:
	@for version in $(PYTHONS); do \
		python=$$(python$$version -c 'import sys; print(sys.executable)' 2>/dev/null || \
			ls $$HOME/.pyenv/versions/$$version*/bin/python$$version 2>/dev/null | tail -1); \
		test -n "$$python" || { echo "Python $$version not found"; exit 1; }; \
		echo "== Python $$version: $$python"; \
		$(MAKE) --no-print-directory VENV=.venv-$$version PYTHON=$$python test || exit 1; \
	done

# The sdist and the wheel in dist/, checked as PyPI would check them.
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

docs: install
	$(BIN)/python -m dynocorn.docs

# The package's modules, what each imports, and the import circles (tools/import_graph.py).
imports: install
	$(BIN)/python tools/import_graph.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# `make bench`: dynocorn against gunicorn, uvicorn and granian on this machine (bench/README.md).
# SERVERS, APPS, MODES, ROUNDS, DURATION and QUICK=1 pass through the environment.
BENCH_STAMP := $(VENV)/.bench-stamp

# `make ab BASE=<rev>`: this checkout against another revision, turn about (bench/ab.py).
AB_ARGS ?=
.PHONY: ab
ab: install $(BENCH_STAMP)
	$(BIN)/python bench/ab.py --base $(BASE) $(AB_ARGS)

.PHONY: bench
bench: install $(BENCH_STAMP)
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python bench/run.py

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python bench/install.py
	touch $@

# `make soak`: the long reliability runs (tests/reliability, marked `soak`; not in CI):
# ten minutes of a leaking app under load (SOAK_SECONDS to change it), and 20000 fuzzed requests.
.PHONY: soak
soak: install
	SOAK=1 $(BIN)/pytest tests/reliability -m soak --soak -s
