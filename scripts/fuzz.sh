#!/usr/bin/env bash
# The long fuzz run: tests/test_fuzz.py with the hypothesis profile "long" (thousands of
# examples per property instead of CI's ~100). Arguments go to pytest, e.g. -k rtmp.
set -euo pipefail
cd "$(dirname "$0")/.."
export AIRCLASS_FUZZ_PROFILE=long
exec bash scripts/run-tests.sh -q --timeout 3600 tests/test_fuzz.py "$@"
