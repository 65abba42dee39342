#!/usr/bin/env bash
# Creates .venv with the package (and its test extras); with --debian-darknet also makes sure
# Debian's CPU darknet package is installed (the demo and the tests train it).
#
# Without the flag no system package is touched: on a GPU server people run their own CUDA
# build of AlexeyAB or hank-ai darknet, and installing Debian's 2018 pjreddie build beside it
# (as /usr/bin/darknet, possibly first on PATH) behind their back would be wrong.
# Debian's system Python refuses a root `pip install` (PEP 668), hence the virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."

want_darknet=false
for arg in "$@"; do
  case "$arg" in
    --debian-darknet) want_darknet=true ;;
    *) echo "usage: $0 [--debian-darknet]" >&2; exit 2 ;;
  esac
done

if $want_darknet && ! dpkg -s darknet >/dev/null 2>&1; then
  if other=$(command -v darknet 2>/dev/null); then
    echo "note: $other is on PATH; adding Debian's CPU darknet (/usr/bin/darknet) for the demo and tests" >&2
  fi
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
