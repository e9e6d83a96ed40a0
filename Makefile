# The two commands a user needs are `make demo` and `make test`; both do all set-up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXTRAS := test,load,sim,check

.PHONY: install test demo load bench lint clean chaos

install: $(STAMP)

# Re-runs only when pyproject.toml changes, so `make install` is idempotent and cheap.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ocsim needs Python >= 3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/ocsim demo --report-dir reports/demo

# `make load WORKERS=N`: Locust's distributed mode, a master and N worker processes here;
# WORKERS=0 (the default): one Locust process. SHAPE=steady|evening|flash, CROWD_S=T.
LOAD_USERS ?= 50
LOAD_TIME  ?= 60s
WORKERS    ?= 0
SHAPE      ?=
CROWD_S    ?=
load: install
	$(VENV)/bin/python -m loadtests.run --users $(LOAD_USERS) --run-time $(LOAD_TIME) --workers $(WORKERS) \
		$(if $(SHAPE),--shape $(SHAPE)) $(if $(CROWD_S),--crowd-s $(CROWD_S)) --out reports/load

lint: install
	$(PY) -m mypy

clean:
	rm -rf $(VENV) reports .pytest_cache build *.egg-info

# Runs every shipped chaos scenario, one verdict line each, reports in reports/chaos/NAME/;
# fails at the end if any scenario did not pass.
chaos: install
	@t0=$$(date +%s); fail=0; for f in chaos/scenarios/*.toml; do \
		$(VENV)/bin/ocsim chaos run $$f --report-dir reports/chaos/$$(basename $$f .toml) || fail=1; \
	done; echo "chaos library: $$(ls chaos/scenarios/*.toml | wc -l) scenarios in $$(( $$(date +%s) - t0 ))s"; exit $$fail
