# crm-sync developer commands. `make dev` and `make test` need nothing but python3.11.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: dev test lint format bench bench-receiver bench-quota bench-sync bench-iiko bench-amocrm bench-unisender bench-uon bench-reliability clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## dev: migrate the embedded SQLite database and run the demo stack (Ctrl-C stops it);
## the key that encrypts stored credentials is made once in .data/secret.key (mode 600)
dev: export CRM_SYNC_SECRET_KEY_FILE := $(CURDIR)/.data/secret.key
dev: $(STAMP)
	@test -s "$$CRM_SYNC_SECRET_KEY_FILE" || { mkdir -p .data && umask 077 && \
		$(BIN)/crm-sync secrets generate-key > "$$CRM_SYNC_SECRET_KEY_FILE.tmp" && \
		mv "$$CRM_SYNC_SECRET_KEY_FILE.tmp" "$$CRM_SYNC_SECRET_KEY_FILE" && \
		echo "created .data/secret.key: the key that encrypts stored credentials"; }
	@chmod 600 "$$CRM_SYNC_SECRET_KEY_FILE"
	$(BIN)/crm-sync db upgrade
	$(BIN)/python -m provider_emulators.devstack

## test: lint, then the whole suite (PostgreSQL half needs TEST_DATABASE_URL); four
## workers, each taking a whole test file (or class) at a time: most tests wait on
## servers, not on the CPU
test: $(STAMP) lint
	$(BIN)/pytest -n 4 --dist loadscope --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: every benchmark (tables on stdout, JSON under bench/results/)
bench: bench-receiver bench-quota bench-sync bench-iiko bench-amocrm bench-unisender bench-uon

bench-receiver: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/receiver.py

bench-quota: $(STAMP)
	$(BIN)/python bench/quota.py --provider allio --processes 3 --seconds 30

bench-sync: $(STAMP)
	$(BIN)/python bench/allio_sync.py

## bench-iiko: events ingested (arrays of 1 / 50) vs bare Starlette, orders synced from a
## backlog, command latency request → Success
bench-iiko: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/iiko.py

## bench-amocrm: RDESK updates applied per second under amoCRM's 7/s; concurrent refresh
bench-amocrm: $(STAMP)
	$(BIN)/python bench/amocrm.py

## bench-unisender: 100,000 amoCRM contacts exported to a Unisender list
bench-unisender: $(STAMP)
	$(BIN)/python bench/unisender.py

## bench-uon: U-ON client-by-phone lookups: cache-hit p50/p95, misses at 8/s under U-ON's 10/s
bench-uon: $(STAMP)
	$(BIN)/python bench/uon.py

## bench-reliability: issue 9's scenarios 1-7 per provider on PostgreSQL and SQLite (--quick: small)
bench-reliability: $(STAMP)
	$(BIN)/python bench/reliability.py --provider all --database both

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache
