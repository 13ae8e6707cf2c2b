# Everything a newcomer needs: `make demo` and `make test` create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck serve bench bench-latency clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,otel]'  # (otel: the trace tests run too)
	touch $@

demo: $(BIN)/.installed
	$(BIN)/gateway demo

# In parallel (pytest-xdist): 8 workers even on 2 cores, because the socket tests spend most of their
# time waiting on audio paced in real time, not computing. Work stealing: a worker that runs out of
# tests takes some from one still busy, so a few long calls queued on one worker do not make the tail.
# tests/core/ alone (no sockets, no processes) takes seconds: $(BIN)/python -m pytest -q tests/core
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 8 --dist worksteal

lint: $(BIN)/.installed
	$(BIN)/ruff check .

typecheck: $(BIN)/.installed
	$(BIN)/python -m mypy

serve: $(BIN)/.installed
	$(BIN)/gateway serve

# The capacity benchmark (about 25 minutes): results and report in bench/results/, read in bench/REPORT.md.
bench: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py --scenario steady --systems gateway,forwarder,transcoder --calls 100,200,300,400,500,600 --warmup 5 --measure 15 --name steady
	$(BIN)/python bench/run.py --scenario burst --systems gateway,forwarder,transcoder --calls 200 --warmup 5 --measure 16 --name burst-200-run1
	$(BIN)/python bench/run.py --scenario barge-storm --systems gateway,forwarder,transcoder --calls 200 --warmup 5 --measure 16 --name barge-storm-200
	$(BIN)/python bench/run.py --scenario talk --calls 100,200,300 --warmup 5 --measure 10 --name talk
	$(BIN)/python bench/run.py --scenario steady --workers 2 --calls 400,600,800 --warmup 5 --measure 15 --name steady-workers-2
	$(BIN)/python bench/run.py --scenario steady --workers 2 --calls 200,300 --warmup 5 --measure 15 --name steady-workers-2-low

# End-to-end turn latency (about two minutes): the gateway's share of the wait after each caller turn.
bench-latency: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py --scenario latency --calls 1,100,300 --warmup 3 --measure 20

clean:
	rm -rf $(VENV) build *.egg-info
