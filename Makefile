# The two commands the README opens with. Each works from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test release-check

demo: $(VENV)/.installed
	$(BIN)/antifragile demo

test: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(VENV)/site
	$(BIN)/pytest --durations=25
	$(MAKE) release-check

# The package as users get it: build the sdist and the wheel, check their metadata (twine),
# install the wheel with the cli extra into a new empty virtual environment and run it there.
# Its dependencies come from a wheelhouse downloaded once per pyproject.toml change.
DIST := $(VENV)/dist
SMOKE := $(VENV)/smoke
WHEELHOUSE := $(VENV)/wheelhouse

release-check: $(VENV)/.installed-dev $(WHEELHOUSE)/.downloaded
	rm -rf $(DIST) $(SMOKE)
	$(BIN)/python -m build --outdir $(DIST) .
	$(BIN)/twine check --strict $(DIST)/*
	$(BIN)/python -m venv --without-pip $(SMOKE)
	$(BIN)/pip --python $(SMOKE)/bin/python install --quiet --no-index \
		--find-links $(WHEELHOUSE) "$$(ls $(DIST)/antifragile-*.whl)[cli]"
	test "$$($(SMOKE)/bin/antifragile --version)" = \
		"antifragile $$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)"
	cd $(SMOKE) && bin/python -c "import antifragile, antifragile.jobs, antifragile.stores; \
		assert antifragile.__file__.startswith('$(abspath $(SMOKE))'), antifragile.__file__"
	$(SMOKE)/bin/antifragile migrate --database-url "sqlite:///$(abspath $(SMOKE))/smoke.db"
	@echo "release check: sdist and wheel pass twine; the wheel installs and runs"

$(WHEELHOUSE)/.downloaded: $(VENV)/.installed-dev pyproject.toml
	$(BIN)/pip download --quiet --dest $(WHEELHOUSE) ".[cli]"
	touch $@

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[demo]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/bin/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed
