#!/usr/bin/env bash
# make lint: the same ruff checks make test runs, without the services.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh

venv_create
requirements_install requirements-dev.txt
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
