# The front door: `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint setup jars tools bench bench-hotpath bench-pools chaos broker-start broker-stop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

jars: setup
	$(BIN)/stream-app broker jars

# Starts the local broker unless KAFKA_BOOTSTRAP_SERVERS names one, creates missing
# topics, then runs the demo: a worker, a synthetic fleet on a simulated clock that
# crosses a month start, and a live summary. `make run DEMO=0` runs only the worker on
# the configured topics. Ctrl-C stops; the broker keeps running (`make broker-stop`).
# The local broker listens on STREAM_APP_KAFKA_PORT (9092), and every client follows it
# unless KAFKA_BOOTSTRAP_SERVERS is set. DEMO_ARGS go to `stream-app demo`, e.g.
# DEMO_ARGS="--sims 50 --duration 30".
DEMO ?= 1
DEMO_ARGS ?=
run: setup
	@if [ -z "$$KAFKA_BOOTSTRAP_SERVERS" ]; then $(BIN)/stream-app broker start; fi
	$(BIN)/stream-app topics create
	@if [ "$(DEMO)" = "0" ]; then $(BIN)/stream-app worker; else $(BIN)/stream-app demo $(DEMO_ARGS); fi

lint: setup
	$(BIN)/ruff check stream_app tests bench
	$(BIN)/mypy

# Debian's prometheus package: promtool checks deploy/prometheus and the dashboard's
# PromQL, the prometheus server runs every panel's query against a live worker. Best
# effort: without them those tests skip and say so, except under CI (CI set), where
# they fail.
tools:
	@{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
	  || echo "prometheus not installed: the promtool and dashboard tests will skip (or fail under CI)"; }

# Two pytest processes, a test file each at a time (--dist loadfile keeps a file's
# module-scoped broker, worker or Prometheus in one process); each process starts its
# own broker once. Most integration tests wait on Kafka's and the simulated clock's
# timing, so two run side by side in about 60 % of the time. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: jars lint tools
	$(BIN)/pytest -q -ra $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# Benchmark (not a test: prints figures, asserts nothing). `make bench RECORDS=100000
# SIMS=10000 MEMORY_SIMS=20000` for a quick look; the default takes about 12 minutes.
# Steady-state SIMs are ~5.5 kB of changelog each: MEMORY_SIMS=1000000 (the target's
# million) preloads 5.5 GB twice and takes far longer.
RECORDS ?= 1000000
SIMS ?= 100000
MEMORY_SIMS ?= 200000
bench: jars
	$(BIN)/python bench/bench.py --records $(RECORDS) --sims $(SIMS) --memory-sims $(MEMORY_SIMS)

# The worker's own CPU per usage record, stage by stage, without a broker (parse, load,
# decide, store), against orjson + a dict sum in the same run; about a minute.
bench-hotpath: setup
	$(BIN)/python bench/hotpath.py

# A pool of 100,000 members running out (R21): from the record that exhausts it to the
# last member's suspend command, then a fresh worker recovering the pool; a few minutes.
# `make bench-pools MEMBERS=10000` for a quick look. Prints figures, writes bench-pools.json.
MEMBERS ?= 100000
bench-pools: jars
	$(BIN)/python bench/pools.py --members $(MEMBERS)

# Chaos (issue #7): the real worker killed with SIGKILL at random moments, two workers
# failing over, a broker restarted mid-stream; every SIM's monthly totals and the
# commands are then checked against the ground truth of what was produced. One line per
# scenario and a total line; exit status 1 on anything lost, double counted, missing or
# conflicting. Short versions run in `make test`. E.g. `make chaos CHAOS_ARGS="--scenarios
# single --records 50000 --sims 2000 --kills 4"`; `--keep` keeps the workers' logs.
CHAOS_ARGS ?=
chaos: jars
	$(BIN)/python -m tests.integration.chaos $(CHAOS_ARGS)

broker-start: setup
	$(BIN)/stream-app broker start

broker-stop: setup
	$(BIN)/stream-app broker stop

clean:
	-$(BIN)/stream-app broker stop
	rm -rf $(VENV) .kafka .stream-app-data .pytest_cache .mypy_cache .ruff_cache .hypothesis
