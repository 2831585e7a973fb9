# natter: `make up` runs the whole stack on this machine, `make test` runs every test.
# Both bootstrap a virtualenv in .venv first (only Python 3.11+ is needed on a fresh machine) and
# reinstall the project into it whenever pyproject.toml is newer than the install stamp.
#
#   make up                      natter up (gateway on http://127.0.0.1:8000), Ctrl-C to stop
#   make up UP_ARGS="--gateways 2 --chat 2"
#   make test                    python -m pytest (all of tests/)
#   make test PYTEST_ARGS="tests/unit -q"
#   make lint                    ruff check, ruff format --check, mypy (shared, natter/sdk)
#   make test PYTHON=python3.12  build .venv with another interpreter (rm -rf .venv to switch)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.natter-installed
PYTEST_EXIT := $(VENV)/.pytest-exit-code
UP_ARGS ?=
PYTEST_ARGS ?=

.PHONY: up test lint

# The TypeScript checker of the JavaScript SDK's JSDoc (tests/js/package-lock.json), when npm is
# there; without it the type test skips on a laptop and fails under CI.
JS_TOOLS := tests/js/node_modules/.package-lock.json
$(JS_TOOLS): tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/js --no-audit --no-fund --silent \
		|| echo "npm ci failed: the JSDoc type check will not run" >&2; \
	else echo "npm not found: the JSDoc type check will not run" >&2; fi

up: $(STAMP)
	$(BIN)/natter up $(UP_ARGS)

# pytest's own exit code is kept in $(PYTEST_EXIT) (make itself exits 2 on any failure), so
# .ci/run can exit with it.
test: $(STAMP) $(JS_TOOLS)
	@rm -f $(PYTEST_EXIT)
	@echo "$(BIN)/python -m pytest $(PYTEST_ARGS)"
	@$(BIN)/python -m pytest $(PYTEST_ARGS) || { status=$$?; echo $$status > $(PYTEST_EXIT); \
		echo "pytest exited with code $$status" >&2; exit $$status; }

# Runs all three checks, then fails if any failed (so one run shows every problem).
lint: $(STAMP)
	@status=0; \
	echo "$(BIN)/ruff check ."; $(BIN)/ruff check . || status=1; \
	echo "$(BIN)/ruff format --check ."; $(BIN)/ruff format --check . || status=1; \
	echo "$(BIN)/mypy"; $(BIN)/mypy || status=1; \
	exit $$status

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "natter needs Python 3.11 or newer; '$(PYTHON)' is: $$($(PYTHON) --version 2>&1)." >&2; \
		echo "Pick another interpreter, e.g. make $(MAKECMDGOALS) PYTHON=python3.12" >&2; exit 1; }
	$(PYTHON) -m venv --clear $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[test,bench]'
	@touch $(STAMP)
