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

## make test: lint, type-check and run every test under every engine profile (the stand-in is started by
## the fixtures).
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The whole suite once per line of the matrix: an engine profile of the stand-in
# (beaker_mssql/testing/profiles.py) and the driver every store uses unless a test names one. Each profile
# and each driver runs the whole suite; the pairs are chosen so that three runs (~100 s each on 2 cores)
# cover both axes: python-tds, the Entra ID driver, against the Azure SQL profile it exists for. One
# pytest process per run, one after the other. `make pytest MATRIX=sqlserver:pytds` runs one pair.
# With BEAKER_MSSQL_TEST_URL set: the whole suite against that server, once per driver.
# pytest exits 5 when it collected no test: that is a broken suite here, never a pass.
MATRIX ?= sqlserver:pymssql azure:pytds babelfish:pymssql
SERVER_DRIVERS ?= pymssql pytds

pytest: $(STAMP)
	@if [ -n "$$BEAKER_MSSQL_TEST_URL" ]; then \
		runs=""; for driver in $(SERVER_DRIVERS); do runs="$$runs server:$$driver"; done; \
	else runs="$(MATRIX)"; fi; \
	failed=""; \
	for run in $$runs; do \
		profile=$${run%%:*}; driver=$${run#*:}; \
		if [ $$profile = server ]; then \
			echo "== pytest against BEAKER_MSSQL_TEST_URL, driver = $$driver =="; \
			BEAKER_MSSQL_TEST_DRIVER=$$driver $(BIN)/python -m pytest; status=$$?; \
		else \
			echo "== pytest, stand-in engine profile: $$profile, driver = $$driver =="; \
			BEAKER_MSSQL_PROFILE=$$profile BEAKER_MSSQL_TEST_DRIVER=$$driver $(BIN)/python -m pytest; \
			status=$$?; \
		fi; \
		if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests - failing on purpose" >&2; fi; \
		if [ $$status -ne 0 ]; then failed="$$failed $$run"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: pytest failed for:$$failed" >&2; exit 1; fi

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

## make standin: a stand-in SQL Server on 127.0.0.1:14330 until Ctrl-C (PROFILE=azure|babelfish to change engine).
standin: $(STAMP)
	$(BIN)/beaker-mssql standin --port 14330 $(if $(PROFILE),--profile $(PROFILE))

## make node-clients: the pinned Node clients (connect-mssql-v2, tedious) in .cache/node for the tests
## (the tests run the same `npm ci` themselves when the folder is missing or stale).
node-clients:
	mkdir -p .cache/node
	cp tests/node/package.json tests/node/package-lock.json .cache/node/
	cd .cache/node && npm ci --no-audit --no-fund --loglevel=error
	cp tests/node/package-lock.json .cache/node/.installed-lock

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache var .cache
