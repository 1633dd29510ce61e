#!/usr/bin/env bash
# Create .venv from requirements*.txt, or refresh it when those files changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(cat requirements.txt "$@" 2>/dev/null | sha256sum | cut -c1-16)
stamp=.venv/.requirements-$want
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  echo "installing dependencies into .venv (requirements.txt $*)..."
  reqs=(-r requirements.txt)
  for f in "$@"; do reqs+=(-r "$f"); done
  .venv/bin/python -m pip install -q --disable-pip-version-check "${reqs[@]}"
  touch "$stamp"
fi
