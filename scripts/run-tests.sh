#!/usr/bin/env bash
# Run pytest inside a private network namespace (scripts/in-netns.sh) when this machine
# allows one, so browser WebRTC tests get a non-loopback test address and nothing can
# leave the machine. Otherwise run on 127.0.0.1; the Chromium WebRTC test then skips and
# says why.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/python -m pytest -p no:cacheprovider -rs "$@")
if unshare -n true 2>/dev/null && command -v ip >/dev/null; then
  echo "run-tests: private network namespace, test address 10.77.0.1"
  bash scripts/in-netns.sh "${PYTEST[@]}"
else
  echo "run-tests: cannot create a network namespace here (needs root); using 127.0.0.1"
  AIRCLASS_TEST_HOST=127.0.0.1 "${PYTEST[@]}"
fi
