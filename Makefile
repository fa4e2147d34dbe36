# The two commands of the house: `make demo` (main job end to end) and `make test`.
# Both create and fill the virtualenvs they need on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python
export SPINETRACK_LS_VENV ?= $(CURDIR)/.venv-labelstudio

.PHONY: demo test venvs venv venv-labelstudio system-packages lint typecheck bench clean

# both virtualenvs side by side (and the Debian packages for the tests): scripts/bootstrap_all.sh
venvs:
	@bash scripts/bootstrap_all.sh

venv:
	@bash scripts/bootstrap.sh

venv-labelstudio: venv
	@bash scripts/bootstrap_labelstudio.sh
	@# migrate a template data folder once (minutes), so every server start afterwards takes seconds
	@$(PY) -c "from annotation.labelstudio.server import ensure_template; ensure_template()"

demo: venvs
	$(VENV)/bin/spinetrack demo

system-packages:
	@bash scripts/system_packages.sh

test:
	@bash scripts/bootstrap_all.sh --system
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy schemas synthetic pipeline annotation flows

clean:
	rm -rf spinetrack-data .pytest_cache .mypy_cache .ruff_cache
