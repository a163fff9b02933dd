# Two commands for a new user: `make demo` and `make test`. Both build the environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

# Re-install only when the package metadata or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[rl,dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/immunegym demo

# pytest exits 5 when it collects no tests: that is a failure here, not a pass.
test: setup
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$status

# Lint only: the vocabulary tables are laid out by hand for reading, so no formatter runs.
lint: setup
	$(BIN)/ruff check immunegym tests

clean:
	rm -rf $(VENV) immunegym-out .pytest_cache
