#!/usr/bin/env bash
# Run pytest inside a private network namespace (scripts/in-netns.sh) when this machine
# allows one, so browser WebRTC tests get a non-loopback test address and nothing can
# leave the machine. Otherwise run on 127.0.0.1; the Chromium WebRTC test then skips and
# says why. Under CI=true nothing may be skipped for want of the namespace: this script
# fails when it cannot make one, and tests/conftest.py fails a test that skips for it.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/python -m pytest -p no:cacheprovider -rs "$@")
if unshare -n true 2>/dev/null && command -v ip >/dev/null; then
  echo "run-tests: private network namespace, test address 10.77.0.1"
  bash scripts/in-netns.sh "${PYTEST[@]}"
elif [ "${CI:-}" = "true" ]; then
  echo "run-tests: CI=true but no private network namespace can be made here (needs root" \
    "or user namespaces, unshare and iproute2): failing instead of skipping the tests" \
    "that need it" >&2
  exit 3
else
  echo "run-tests: cannot create a network namespace here (needs root); using 127.0.0.1"
  AIRCLASS_TEST_HOST=127.0.0.1 "${PYTEST[@]}"
fi
