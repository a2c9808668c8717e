# Two commands on a fresh machine: `make run` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install constraints run test lint proto proto-check unit e2e bench bench-proxy bench-utilisation bench-reap bench-propagation bench-security bench-metrics bench-script bench-provider bench-provider-kinds bench-watch bench-waiters bench-failover bench-interceptor clean bench-cluster

install: $(STAMP)

# constraints.txt pins what the suite last passed with, so that a release of a dependency (a new
# mypy, new type hints in redis-py) cannot turn a fresh machine's run red; make constraints refreshes it.
$(STAMP): pyproject.toml clients/python/pyproject.toml clients/node/package.json constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]' -e clients/python
	cd clients/node && npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

# The newest versions pyproject.toml allows, into constraints.txt; then make install and make test on them.
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install --quiet --upgrade pip
	.venv-constraints/bin/pip install --quiet -e '.[dev]' -e clients/python
	.venv-constraints/bin/pip freeze --exclude-editable > constraints.txt
	rm -rf .venv-constraints

run: install
	$(PY) -m rllocal.demo

proto: install
	$(PY) scripts/gen_protos.py

# The committed stubs must be what the proto generates.
proto-check: install
	$(PY) scripts/gen_protos.py
	git diff --exit-code -- rlproto clients/python/src/rlclient/_proto

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest tests/unit -q

e2e: install
	$(PY) -m pytest tests/e2e -q

test: install lint proto-check
	$(PY) -m pytest -q

bench: install
	$(PY) bench/service_bench.py

bench-proxy: install
	$(PY) bench/proxy_bench.py

bench-utilisation: install
	$(PY) bench/utilisation.py

bench-reap: install
	$(PY) bench/reap_bench.py

bench-propagation: install
	$(PY) bench/propagation.py

# What the ledger script costs Redis in instructions (callgrind): steady whatever else runs.
bench-script: install
	$(PY) bench/script_cost.py

bench-security: install
	$(PY) bench/security_bench.py

# What one server interceptor costs a bare grpc.aio server per RPC, about 3 minutes: why the instance
# wraps its handlers at registration and keeps interceptors for authentication.
bench-interceptor: install
	$(PY) bench/interceptor_cost.py

# The service bench with a second instance that has metrics on, measured in the same rounds.
bench-metrics: install
	$(PY) bench/service_bench.py --metrics

# Not part of `make test`: Acquire + Release with 0, 100, 1000 and --max-watch-streams WatchAllocation
# streams open, in one run (docs/performance.md). Other settings: make bench-watch WATCH_ARGS="--concurrency 1"
bench-watch: install
	$(PY) bench/watch_bench.py $(WATCH_ARGS)

# Not part of `make test`: an instance's memory (RSS) with 0 to 8 000 Acquires waiting, to size max_waiters
# (docs/performance.md). Other settings: make bench-waiters WAITER_ARGS="--waiters 4000 --step 500"
bench-waiters: install
	$(PY) bench/waiter_memory.py $(WAITER_ARGS)

# Not part of `make test`: Redis CPU per RPC on one Redis and on Redis Clusters of 1 and 3 masters under
# the same load over six models, and the ceilings computed from it, about 5 minutes (docs/performance.md).
# Shorter: make bench-cluster CLUSTER_ARGS="--pairs 6000 --rounds 2"
bench-cluster: install
	$(PY) bench/cluster_bench.py $(CLUSTER_ARGS)

# Not part of `make test`: workers against rlprovider with and without the limiter, N = 1, 2, 4,
# about 12 minutes (docs/performance.md). Shorter: make bench-provider PROVIDER_ARGS="--instances 1 --seconds 120"
bench-provider: install
	$(PY) bench/provider_bench.py $(PROVIDER_ARGS)

# An Anthropic-style key limited in input and output tokens apart: an input-heavy and an
# output-heavy mix, N = 1, 2, 4, about 11 minutes. Shorter: make bench-provider-kinds KINDS_ARGS="--instances 2"
bench-provider-kinds: install
	$(PY) bench/provider_kinds_bench.py $(KINDS_ARGS)

# Not part of `make test`: a Redis Cluster master killed under load, with its replica in sync, cut off,
# and cut off under min-replicas-to-write 1: the acknowledged grants the promoted replica lacks, and what
# WAIT 1 would cost (docs/operations.md), about 4 minutes. Fewer runs: make bench-failover FAILOVER_ARGS="--runs 1"
bench-failover: install
	$(PY) bench/cluster_failover.py $(FAILOVER_ARGS)

clean:
	rm -rf $(VENV) .venv-constraints .pytest_cache .mypy_cache .ruff_cache clients/node/node_modules

# Not part of `make test`: minutes of mixed load while instances are killed and Redis restarts,
# checked against the limits (docs/reliability.md). A short run: make chaos CHAOS_ARGS="--seconds 30"
# Cluster mode, a Redis Cluster with replicas whose master of one shard is killed once midway:
# make chaos CHAOS_ARGS="--redis-cluster"
.PHONY: chaos
chaos: install
	$(PY) bench/chaos.py $(CHAOS_ARGS)
