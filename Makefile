# One-command entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.geoseg-installed

.PHONY: setup demo test test-slow bench model model-instances clean browser

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/geoseg demo --overwrite

test: setup
	-$(MAKE) browser
	$(VENV)/bin/ruff check geoseg tests bench
	$(PY) -m pytest -n 2 --dist worksteal  # two processes: most tests wait on one core for
	# their subprocesses and clusters; more than the CI machine's 2 cores only oversubscribes

# Headless Chromium for the HTML report's browser test (Debian's package; needs root and apt).
# Anywhere else it says why and goes on: that test is then skipped with the reason.
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
		|| echo "chromium could not be installed: the browser test will be skipped"; \
	else echo "chromium missing and not installable here (needs root and apt-get): the browser test will be skipped"; fi

test-slow: setup
	$(PY) -m pytest -m slow

bench: setup
	$(PY) bench/bench_job.py

# Re-train the bundled demo model (about 10 minutes on 2 CPU cores).
model: setup
	$(VENV)/bin/geoseg train --out geoseg/models/bundled/demo-unet.safetensors --overwrite

# Re-train the bundled instance model (starts from demo-unet; about 5 minutes on 2 idle cores).
model-instances: setup
	$(VENV)/bin/geoseg train --instances --out geoseg/models/bundled/demo-instances.safetensors --overwrite

clean:
	rm -rf demo-output .pytest_cache .hypothesis
