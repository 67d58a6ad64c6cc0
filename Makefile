# Phlo: `make demo` runs every code location on sample data; `make test` runs every test.
# Both set up what they need first: uv (installed with pip when missing), then the locked venv.

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
# The Nix dev shell (flake.nix) sets UV to its own uv.
UV ?= $(PYTHON) -m uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.PHONY: all install demo test test-slow test-all lint format bench clean pex pants-test pants-lock \
	docker-up docker-down images

all: install

$(BIN)/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE set (as on these machines) every
	# process would otherwise compile dagster, dbt and pandas from source again (~3 s each).
	$(UV) sync --locked --compile-bytecode
	@touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/phlo demo

# The Docker engine these machines allow (build-support/docker_up.sh: no bridge, host network,
# socket for root only) and phlo's images on it (cached by content: a warm machine builds
# nothing). With the engine up, the integration tests' servers run in containers.
PHLO_DOCKER_SOCKET := /var/lib/phlo-docker/docker.sock
ifneq ($(wildcard $(PHLO_DOCKER_SOCKET)),)
export DOCKER_HOST ?= unix://$(PHLO_DOCKER_SOCKET)
endif
docker-up:
	build-support/docker_up.sh
docker-down:
	build-support/docker_up.sh down
images: install docker-up
	DOCKER_HOST=unix://$(PHLO_DOCKER_SOCKET) $(BIN)/python -m phlo_core.services.images

# The suite but the heaviest tests (several processes, kills, backfills): under 15 minutes on
# two cores. CI (.ci/run) runs both halves. The test files run on TEST_WORKERS processes
# (pytest-xdist; a file's tests stay on one): most tests wait on the commands they start, so two
# on two cores take ~0.75x the time of one. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile
test: install
	$(PYTEST) -m "not slow"

# The slow half includes the deployment smoke test, which serves the locations from their PEXes.
test-slow: install pex
	$(PYTEST) -m slow

test-all: install pex
	$(PYTEST)

# Pants (./pants bootstraps 2.17.1 into ~/.cache/phlo-pants): the PEXes into dist/, tests in
# Pants' sandboxes, and its lock regenerated from uv's after `uv lock`.
pex:
	./pants package ::

# `make test` already runs every test; in Pants' sandboxes a subset proves what only Pants can
# get wrong (each target's dependencies, the resources it carries, the console script): the unit
# tests (the architecture reads every module), every location loaded with its dbt project, the
# workspace and a location made from the template. (The pipelines' and the CLI's own e2e tests,
# 7 of its 8.5 minutes here, prove nothing more about the targets; the console script is proven
# by the PEX deployment test.) `PANTS_TESTS=::` runs them all.
PANTS_TESTS ?= tests/unit:: tests/integration/test_definitions.py \
	tests/integration/test_workspace.py tests/e2e/test_template_location.py
pants-test:
	./pants test $(PANTS_TESTS)

pants-lock:
	build-support/update_lock.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/basedpyright
	$(PYTHON) build-support/pants_lock.py check

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python bench/bench_materialize.py
	$(BIN)/python bench/bench_hardening.py
	$(BIN)/python bench/bench_weather.py
	$(BIN)/python bench/bench_logs.py
	$(BIN)/python bench/bench_production.py
	$(BIN)/python bench/bench_backfill.py
	$(BIN)/python bench/bench_server.py
	$(BIN)/python bench/bench_report.py
	$(BIN)/python bench/bench_catalog.py
	$(BIN)/python bench/bench_containers.py  # with a Docker engine (make docker-up)

clean:
	rm -rf $(VENV) .phlo dist .pants.d .pids src/dbt/*/target src/dbt/*/dbt_packages src/dbt/*/logs
