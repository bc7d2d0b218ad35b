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

# The whole suite once per engine profile of the stand-in (beaker_mssql/testing/profiles.py), one pytest
# process each, one after the other (~1 min each on 2 cores); `make pytest PROFILES=azure` runs one.
# With BEAKER_MSSQL_TEST_URL set: once, against that server (its profile is detected).
# pytest exits 5 when it collected no test: that is a broken suite here, never a pass.
PROFILES ?= sqlserver azure babelfish
# Then once more with driver = pytds (python-tds, the Entra ID driver): the storage suites, sqlserver profile.
PYTDS_TESTS ?= tests/test_store.py tests/test_store_failures.py tests/test_pool.py tests/test_beaker_session.py \
	tests/test_beaker_cache.py tests/test_write_path.py tests/test_failover.py tests/test_reliability.py \
	tests/test_concurrency.py tests/test_parity_sessions.py tests/test_parity_cache.py tests/test_sweeper.py \
	tests/test_entra.py

pytest: $(STAMP)
	@if [ -n "$$BEAKER_MSSQL_TEST_URL" ]; then profiles=server; else profiles="$(PROFILES)"; fi; \
	failed=""; \
	for profile in $$profiles; do \
		if [ $$profile = server ]; then \
			echo "== pytest against BEAKER_MSSQL_TEST_URL =="; $(BIN)/python -m pytest; status=$$?; \
		else \
			echo "== pytest, stand-in engine profile: $$profile =="; \
			BEAKER_MSSQL_PROFILE=$$profile $(BIN)/python -m pytest; status=$$?; \
		fi; \
		if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests - failing on purpose" >&2; fi; \
		if [ $$status -ne 0 ]; then failed="$$failed $$profile"; fi; \
	done; \
	if [ -z "$$BEAKER_MSSQL_TEST_URL" ]; then \
		echo "== pytest, driver = pytds, stand-in engine profile: sqlserver =="; \
		BEAKER_MSSQL_PROFILE=sqlserver BEAKER_MSSQL_TEST_DRIVER=pytds $(BIN)/python -m pytest $(PYTDS_TESTS); \
		if [ $$? -ne 0 ]; then failed="$$failed pytds"; fi; \
	fi; \
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
