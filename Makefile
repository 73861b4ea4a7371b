# Paved's entry points. `make test` is the one test command (CI runs it through .ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
# Extra pytest arguments, e.g. make test ARGS='-x -k vault'
ARGS ?=
# Where `make lock` writes the pins.
LOCK_OUT ?= constraints.txt

.PHONY: help bootstrap test unit lint demo status down bench crds lock

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  make %-10s %s\n", $$1, $$2 }'

bootstrap: ## install prometheus (apt), the .venv and the control-plane binaries; idempotent
	scripts/bootstrap

test: bootstrap ## bootstrap, then every test (scripts/test)
	scripts/test $(ARGS)

unit: ## fast unit tests only (needs just the .venv)
	scripts/bootstrap --venv-only
	scripts/test tests/unit $(ARGS)

lint: ## the code checks: ruff, import-linter (layers), mypy (scripts/lint)
	scripts/bootstrap --venv-only
	scripts/lint

demo: bootstrap ## run the main job on this machine (scripts/demo)
	scripts/demo $(ARGS)

status: ## status of the demo: processes and a table of every intent
	.venv/bin/paved dev status

down: ## stop the demo: operator, moto and the local control plane (state is kept)
	.venv/bin/paved dev down

bench: bootstrap ## run the benchmarks (scripts/bench)
	scripts/bench $(ARGS)

crds: ## regenerate crds/ from the API models
	scripts/bootstrap --venv-only
	.venv/bin/paved crds

lock: ## re-pin every Python dependency into $(LOCK_OUT) from a fresh venv
	tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -e '.[test]'; \
	{ echo '# Pinned versions of every Python package Paved and its tests install (pip install -c constraints.txt).'; \
	  echo '# Regenerate with: make lock'; \
	  "$$tmp/venv/bin/python" -m pip freeze --exclude-editable; } >"$$tmp/constraints.txt"; \
	mv "$$tmp/constraints.txt" "$(LOCK_OUT)"; \
	echo "wrote $(LOCK_OUT) ($$(grep -vc '^#' $(LOCK_OUT)) pins)"
