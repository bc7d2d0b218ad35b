# beaker-mssql: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-slow lint typecheck pytest demo bench standin node-clients clean

$(STAMP): pyproject.toml setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## make test: lint, type-check and run every test (the stand-in is started by the fixtures).
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected no test: that is a broken suite here, never a pass.
pytest: $(STAMP)
	@$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests - failing on purpose" >&2; fi; \
	exit $$status

## make test-slow: the differential test (memory vs ext:mssql) with many more generated examples; CI runs it.
DIFFERENTIAL_EXAMPLES ?= 5000
test-slow: $(STAMP)
	DIFFERENTIAL_EXAMPLES=$(DIFFERENTIAL_EXAMPLES) $(BIN)/python -m pytest tests/test_differential.py -q

## make demo: the example Pyramid app on http://127.0.0.1:6543 (stand-in unless BEAKER_MSSQL_URL is set).
## Another port: make demo DEMO_ARGS='--port 6544'
demo: $(STAMP)
	$(BIN)/python examples/demo.py $(DEMO_ARGS)

## make bench: every benchmark; rewrites benchmarks/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

## make standin: a stand-in SQL Server on 127.0.0.1:14330 until Ctrl-C.
standin: $(STAMP)
	$(BIN)/beaker-mssql standin --port 14330

## make node-clients: the pinned Node clients (connect-mssql-v2, tedious) in .cache/node for the tests
## (the tests run the same `npm ci` themselves when the folder is missing or stale).
node-clients:
	mkdir -p .cache/node
	cp tests/node/package.json tests/node/package-lock.json .cache/node/
	cd .cache/node && npm ci --no-audit --no-fund --loglevel=error
	cp tests/node/package-lock.json .cache/node/.installed-lock

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache var .cache
