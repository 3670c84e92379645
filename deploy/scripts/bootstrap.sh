#!/usr/bin/env bash
# Create (or reuse) .venv and install, in this order (Linux and macOS):
#   1. torch==2.13.0 (the CPU wheel): a bare `torch` requirement would download a multi-GB CUDA build;
#   2. the locked dependencies, hashes checked: requirements.lock, or with --dev requirements-dev.lock
#      (also the dev tools and the `serving` extra: `transformers serve`, for the endpoint tests);
#   3. the project itself, editable, without dependencies (the lock already has them all).
# The locks leave torch out; regenerate them with deploy/scripts/lock.sh after changing pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_q() {
  local log
  log=$(mktemp)
  if ! .venv/bin/python -m pip install -q "$@" >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2 || true
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
  echo "bootstrap: installing torch==2.13.0 (CPU wheel)"
  pip_q torch==2.13.0
fi
lock=requirements.lock
if [ "${1:-}" = "--dev" ]; then
  lock=requirements-dev.lock
fi
stamp=.venv/.accel-installed
# A digest of what was installed from (no sha1sum on macOS: Python's hashlib works everywhere).
want=$(.venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(f, "rb").read() for f in sys.argv[1:])).hexdigest())' pyproject.toml "$lock")
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c 'import accelerate_core, scheduler' >/dev/null 2>&1; then
  echo "bootstrap: installing accelerate-fleet from $lock"
  pip_q --require-hashes -r "$lock"
  pip_q --no-deps -e .
  .venv/bin/python -c 'import torch, accelerate_core, scheduler' || { echo "bootstrap: install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
