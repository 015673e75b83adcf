#!/usr/bin/env bash
# Install everything AIRClass needs on Debian: system packages, a virtualenv in .venv,
# and the package itself (editable). Pass "test" to add what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system.sh
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv 2>/dev/null || {
    apt-get install -y -q --no-install-recommends python3-venv && python3 -m venv .venv; }
fi
.venv/bin/pip install -q --upgrade pip
if [ "${1:-}" = "test" ]; then
  .venv/bin/pip install -q -e '.[test]'
else
  .venv/bin/pip install -q -e .
fi
