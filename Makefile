# The README's commands. `make run` serves the embedded shape; `make test` runs the suite
# against the real PostgreSQL and Redis of this machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

# Test shape: production settings against local services (the Fernet key below is a test-only
# key that encrypts nothing but test fixtures). Override any of these from the
# environment (e.g. TEST_DATABASE_URL=postgres://user:pw@host:5432/name make test).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/quantfold
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	DJANGO_SECRET_KEY=test-only-not-secret DJANGO_DEBUG=0 DJANGO_SECURE=0 STATIC_MANIFEST=0 \
	WHITENOISE_USE_FINDERS=1 CELERY_TASK_DEFAULT_QUEUE=test-$$$$ CELERY_LIVE_QUEUE=test-$$$$ CACHE_KEY_PREFIX=test-$$$$ \
	CHANNELS_PREFIX=test-$$$$ VAR_DIR=$(CURDIR)/var/test \
	STRIPE_SECRET_KEY=sk_test_not_a_real_key STRIPE_WEBHOOK_SECRET=whsec_test_not_a_real_secret \
	STRIPE_PRICE_ID=price_test_pro STRIPE_API_BASE=http://127.0.0.1:9 \
	EXCHANGE_ENCRYPTION_KEYS=1U5WxBIJuD4XMNNxopYVoQgVJuUiR2Wbaln7EMB2KJI= \
	PAPER_MARKET_EXCHANGE= COINBASE_OAUTH_CLIENT_ID= COINBASE_OAUTH_CLIENT_SECRET= \
	EXCHANGE_URL_OVERRIDES=@$(CURDIR)/var/test/exchange-url-overrides.json

.PHONY: help venv venv-dev chromium run test lint format bench clean

help:
	@echo "make run    - set up and serve the embedded shape on http://$(HOST):$(PORT)/"
	@echo "make test   - set up and run the whole suite against PostgreSQL and Redis"
	@echo "make lint   - ruff lint + format check, mypy on the whole project (strict on the pure cores)"
	@echo "make bench  - engine benchmarks side by side with vectorbt and backtesting.py, app targets"

$(VENV)/.runtime: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.runtime
venv-dev: $(VENV)/.dev

run: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py collectstatic --noinput -v 0
	$(PY) -m config.embedded --host $(HOST) --port $(PORT)

# The browser tests' Chromium: installed with apt-get when missing and running as root, else
# the recipe stops and prints the command to run.
chromium:
	@.ci/ensure-chromium

# Without PYTEST_ARGS the suite runs as two isolated shards side by side (tests/shards.py);
# with them, one plain pytest run.
test: venv-dev chromium
	$(TEST_ENV) $(PY) tests/shards.py $(PYTEST_ARGS)

lint: venv-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	DATABASE_URL= REDIS_URL= $(PY) -m mypy

format: venv-dev
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Benchmarks: the engine side by side with its peers (separate .venv-bench so the peers never
# touch the app's virtualenv), then the app's own targets against the local PostgreSQL/Redis.
BENCH_ENV := $(subst CELERY_TASK_DEFAULT_QUEUE=test-,CELERY_TASK_DEFAULT_QUEUE=bench-,$(TEST_ENV))

bench: venv-dev
	@test -x .venv-bench/bin/python || ($(PYTHON) -m venv .venv-bench && \
		.venv-bench/bin/pip install --quiet --upgrade pip && \
		.venv-bench/bin/pip install --quiet -r requirements.txt -r requirements-bench.txt)
	.venv-bench/bin/python bench/engine_bench.py $(BENCH_ARGS)
	$(BENCH_ENV) $(PY) bench/store_bench.py
	$(BENCH_ENV) $(PY) bench/backtest_bench.py
	$(BENCH_ENV) $(PY) bench/results_page_bench.py
	$(BENCH_ENV) $(PY) bench/optimize_bench.py
	$(BENCH_ENV) $(PY) bench/montecarlo_bench.py
	$(BENCH_ENV) $(PY) bench/scanner_bench.py
	$(BENCH_ENV) $(PY) bench/risk_bench.py
	$(BENCH_ENV) $(PY) bench/copy_bench.py
	$(BENCH_ENV) $(PY) bench/bots_bench.py

clean:
	rm -rf var staticfiles .pytest_cache .ruff_cache .mypy_cache
