# Everything a newcomer needs: `make demo` and `make test` create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck serve bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/gateway demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .

typecheck: $(BIN)/.installed
	$(BIN)/python -m mypy

serve: $(BIN)/.installed
	$(BIN)/gateway serve

# The capacity benchmark (several minutes): results and report in bench/results/.
bench: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py --calls 50,100,200,300,400 --name workers-1
	$(BIN)/python bench/run.py --calls 100,200,300,400,500 --workers 2 --name workers-2

clean:
	rm -rf $(VENV) build *.egg-info
