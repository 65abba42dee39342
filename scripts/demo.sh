#!/usr/bin/env bash
# The main job in one command: set everything up, then train the demo under the supervisor.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --debian-darknet
exec .venv/bin/trainsup demo "$@"
