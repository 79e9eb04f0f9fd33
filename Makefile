# postroom: `make run` serves mail with config.toml; `make test` runs ruff, mypy and the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-pg lint unit e2e corpus bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "make: '$(PYTHON) -m venv' failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,fast]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/postroom serve --config config.toml

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The suite runs in three processes, a module each at a time (every daemon, database and bucket
# is its own); tests marked `serial` (one restarts PostgreSQL) run alone afterwards. Then the
# feature suites again with every daemon on its own fresh PostgreSQL database (SPEC §10);
# `make test-pg` runs every end-to-end suite that way.
PG_SUITES := tests/smtp/test_delivery.py tests/api/test_events.py tests/client/test_client.py \
	tests/api/test_api_keys.py tests/api/test_authz.py tests/smtp/test_hostile_smtp.py \
	tests/outbound/test_send.py tests/outbound/test_directory.py tests/api/test_compat.py \
	tests/webhooks/test_webhooks.py tests/content/test_content_daemon.py

# The last run prints the figures line of the whole suite (tests/figures.py).
FIGURES := $(CURDIR)/.pytest_cache/figures.json

test: lint
	bash scripts/install-test-deps.sh
	bash scripts/start-postgres.sh
	mkdir -p .pytest_cache && rm -f $(FIGURES)
	POSTROOM_FIGURES_FILE=$(FIGURES) $(VENV)/bin/pytest -n 3 --dist loadfile -m "not serial"
	POSTROOM_FIGURES_FILE=$(FIGURES) $(VENV)/bin/pytest -m serial
	POSTROOM_FIGURES_FILE=$(FIGURES) POSTROOM_TEST_DATABASE=postgresql \
	  $(VENV)/bin/pytest -n 2 --dist loadfile $(PG_SUITES)

test-pg: $(STAMP)
	bash scripts/start-postgres.sh
	POSTROOM_TEST_DATABASE=postgresql $(VENV)/bin/pytest -m e2e --deselect \
	  tests/pipeline/test_durability.py

unit: $(STAMP)
	$(VENV)/bin/pytest -m "not e2e"

e2e: $(STAMP)
	$(VENV)/bin/pytest -m e2e

# The real-world corpus (../shared/corpus) through one daemon, with its figures printed.
corpus: $(STAMP)
	$(VENV)/bin/pytest -v -s tests/pipeline/test_corpus.py

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	bash bench/setup.sh
	$(PY) -m bench.run_smtp_bench
	$(PY) -m bench.report

bench-quick: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	bash bench/setup.sh
	$(PY) -m bench.run_smtp_bench --quick
	$(PY) -m bench.report

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
