# keypool: `make run` starts the demo, `make test` runs lint, types and the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# pytest-xdist workers. More than this machine's 2 cores: a test spends most of its time waiting
# on sockets, servers and databases. Tests go out one or two at a time (--maxschedchunk 1), so
# the `long` ones, ordered first (tests/conftest.py), each start at once on a worker of their own.
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set: every worker and every gateway
# subprocess would otherwise compile app/ and tests/ again. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 4
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest
PYTEST_PARALLEL := $(PYTEST) -n $(PYTEST_WORKERS) --dist load --maxschedchunk 1

.PHONY: install browser run test suite lint typecheck unit integration bench bench-quick bench-obs bench-peers soak migrate clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24" "setuptools>=69,<80"
	$(BIN)/python -m pip install -q --no-build-isolation -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The dashboard test drives Debian's headless Chromium through chromium-driver (no browser
# download); installed here when missing (needs root, as on CI).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

run: $(STAMP)
	$(BIN)/keypool demo

lint: $(STAMP)
	$(BIN)/ruff check app tests bench migrations
	$(BIN)/ruff format --check app tests bench migrations

typecheck: $(STAMP)
	$(BIN)/mypy

# The type check runs beside the suite (the suite mostly waits): output of each when it ends.
test: lint browser
	@$(MAKE) --no-print-directory -j2 --output-sync=target typecheck suite

suite: $(STAMP)
	$(PYTEST_PARALLEL) -q

unit: $(STAMP)
	$(PYTEST_PARALLEL) -q tests/unit

integration: $(STAMP)
	$(PYTEST_PARALLEL) -q tests/integration

bench: $(STAMP)  ## ~7-8 min; writes bench/results.md + bench/results.json
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)  ## ~2.5 min, for checking the harness
	$(BIN)/python -m bench.run --quick

bench-obs: $(STAMP)  ## ~6 min: scenario 7 alone (observability on vs off, side by side, one worker each)
	$(BIN)/python -m bench.run --only observability --out-dir bench/results-obs

soak: $(STAMP)  ## 10-min fault soak; writes bench/soak-results.md + .json (SOAK_ARGS="--duration 60")
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

bench-peers: $(STAMP)
	$(BIN)/python -m bench.peers

migrate: $(STAMP)
	$(BIN)/keypool db upgrade

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache keypool.db
