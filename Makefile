# The two commands of the README: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages the tests use: real servers, and tools (mosquitto-clients: the benchmark's
# C publisher and subscriber; openssl: test certificates; victoria-metrics: the server
# behind the InfluxDB write API; chromium and its driver: the board and workbench tests;
# fonts-noto-cjk and fonts-dejavu-core: every glyph the pages use, Chinese and symbols, on
# the plant's own screens as in the screenshots; faketime: the real service with its wall
# clock stepped; postgresql: the throw-away cluster the database tests run on, beside
# SQLite).
APT_PACKAGES := mosquitto mosquitto-clients openssl victoria-metrics chromium chromium-driver fonts-noto-cjk fonts-dejavu-core faketime postgresql

.PHONY: test demo lint deps apt bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

deps: $(VENV)/.installed apt

# Installs missing Debian packages when running as root; otherwise says what is missing.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else echo "missing Debian packages:$$missing (run as root, or install them)"; fi; \
	fi

lint: deps
	$(BIN)/ruff check ehswatch tests benchmarks
	$(BIN)/ruff format --check ehswatch tests benchmarks
	$(BIN)/mypy

# Everything on SQLite, then the database tests again on PostgreSQL (a throw-away cluster
# the tests create: tests/postgres.py).
test: lint
	$(BIN)/pytest
	EHSWATCH_TEST_DB=postgresql $(BIN)/pytest -m database

bench: deps
	$(BIN)/python benchmarks/evaluator.py
	$(BIN)/python benchmarks/ingest_mqtt.py
	$(BIN)/python benchmarks/influx_sink.py
	$(BIN)/python benchmarks/interlock_latency.py
	$(BIN)/python benchmarks/storm.py
	$(BIN)/python benchmarks/trip_cost.py
	$(BIN)/python benchmarks/shift_figures.py
	$(BIN)/python benchmarks/predictive.py
	$(BIN)/python benchmarks/workbench.py
	$(BIN)/python benchmarks/plant_soak.py
	$(BIN)/python benchmarks/failover.py

# The live demo: embedded MQTT broker, simulated dust monitors, gas detectors and PLC, the
# service, and the board on http://127.0.0.1:8000 (the command prints the address).
demo: $(VENV)/.installed
	$(BIN)/ehswatch demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
