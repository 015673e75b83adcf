#!/usr/bin/env bash
# Install what the tests need, then run the whole suite (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec bash scripts/run-tests.sh "$@"
