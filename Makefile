# keypool: `make run` starts the demo, `make test` runs lint, types and the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser run test lint typecheck unit integration bench bench-quick bench-obs bench-peers soak migrate clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24" "setuptools>=69,<80"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
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

test: lint typecheck browser
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

bench: $(STAMP)  ## ~7-8 min; writes bench/results.md + bench/results.json
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)  ## ~2.5 min, for checking the harness
	$(BIN)/python -m bench.run --quick

bench-obs: $(STAMP)  ## ~1 min: scenario 7 alone (observability on vs off, one worker)
	$(BIN)/python -m bench.run --only observability --out-dir bench/results-obs

soak: $(STAMP)  ## 10-min fault soak; writes bench/soak-results.md + .json (SOAK_ARGS="--duration 60")
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

bench-peers: $(STAMP)
	$(BIN)/python -m bench.peers

migrate: $(STAMP)
	$(BIN)/keypool db upgrade

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache keypool.db
