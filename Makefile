# cpweb: `make run` starts the demo, `make test` runs every check. Both set up
# .venv from pyproject.toml first (again whenever pyproject.toml changes).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
RUN_STAMP := $(VENV)/.run-$(HASH)
DEV_STAMP := $(VENV)/.dev-$(HASH)
# Only for the demo on 127.0.0.1; set your own in any real deployment.
DEMO_ENV := CP_API_TOKEN=$${CP_API_TOKEN:-cpweb-demo-api-token} \
	CP_METRICS_TOKEN=$${CP_METRICS_TOKEN:-cpweb-demo-metrics-token}

.PHONY: run cluster test lint typecheck bench-smoke soak fuzz clean

$(RUN_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(RUN_STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(DEMO_ENV) $(BIN)/python manage.py demo_setup
	$(DEMO_ENV) $(BIN)/daphne -b 127.0.0.1 -p 8000 cpweb.asgi:application

# N daphne workers behind nginx (deploy/cluster.py); needs DATABASE_URL (PostgreSQL) and REDIS_URL.
WORKERS ?= 2
PORT ?= 8080
cluster: $(RUN_STAMP)
	$(BIN)/python -m deploy.cluster --workers $(WORKERS) --port $(PORT)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

bench-smoke: $(DEV_STAMP)
	$(BIN)/python bench/identify_bench.py --contacts 20000 --samples 2000
	$(BIN)/python bench/import_bench.py --rows 20000
	$(BIN)/python bench/webchat_load.py --visitors 50 --consoles 5 --duration 5
	$(BIN)/python bench/fanout.py --consoles 20 --step-seconds 0.5 --max-rate 24 --drain 1 --settle 0.1
	@# Several workers need PostgreSQL and Redis: only when REDIS_URL is set.
	if [ -n "$$REDIS_URL" ]; then $(BIN)/python bench/contact_center.py --visitors 100 \
	  --consoles 10 --starts-per-second 5 --messages-per-second 20 --duration 3 --warm-up 1; fi

# A bounded soak (bench/soak.py): 10 minutes of the contact-center load on 2 workers with a
# worker killed, Redis and PostgreSQL restarted on a schedule; it starts private Redis and
# PostgreSQL servers of its own. Shorter: make soak SOAK_ARGS="--duration 120"; an eighth of
# the load: SOAK_ARGS="--visitors 250 --consoles 25 --starts-per-second 6.25 --messages-per-second 37.5".
SOAK_ARGS ?=
soak: $(DEV_STAMP)
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# Coverage-guided fuzzing of the normalisers and the email parser (atheris),
# FUZZ_SECONDS each; new inputs and any crash-* land in var/fuzz/.
FUZZ_SECONDS ?= 300
fuzz: $(DEV_STAMP)
	for name in normalize email; do \
	  mkdir -p var/fuzz/$$name && \
	  $(BIN)/python fuzz/$${name}_fuzz.py -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=var/fuzz/ var/fuzz/$$name fuzz/corpus/$$name || exit 1; \
	done

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
