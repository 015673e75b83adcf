#!/usr/bin/env bash
# One command for a newcomer: install everything, then run a standalone node in
# development mode with a demo stream. Open http://localhost:8000/student?stream=demo
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/airclass serve --dev --demo "$@"
