#!/usr/bin/env bash
# The test command (README "Run the tests"; .ci/run calls exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --debian-darknet
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest -q "$@"
