#!/usr/bin/env bash
# Set up (idempotent) and train the quickstart recipe on the embedded SmolLM2-135M-Instruct.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tuneforge train recipes/quickstart.yaml "$@"
