#!/usr/bin/env bash
# Creates .venv with the package (and its test extras) and makes sure Debian's darknet is there.
# Debian's system Python refuses a root `pip install` (PEP 668), hence the virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v darknet >/dev/null 2>&1 || [ "${CI:-}" = "true" ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q darknet
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
