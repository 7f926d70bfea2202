#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# --durations=15: CI output names the slowest tests, so a new slow one is seen at once.
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
