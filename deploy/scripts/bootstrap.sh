#!/usr/bin/env bash
# Create (or reuse) .venv and install torch==2.13.0 FIRST, then the project (+ dev tools and the
# `serving` extra, i.e. `transformers serve` for the endpoint tests, with --dev).
# torch goes first because a bare `torch` requirement would download a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_q() { .venv/bin/python -m pip install -q "$@" 2>&1 | grep -v '^WARNING: Location' || true; }
if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
  echo "bootstrap: installing torch==2.13.0 (CPU wheel)"
  pip_q torch==2.13.0
fi
stamp=.venv/.accel-installed
want="$(sha1sum pyproject.toml | cut -c1-40)${1:-}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c 'import accelerate_core, scheduler' >/dev/null 2>&1; then
  echo "bootstrap: installing accelerate-fleet"
  if [ "${1:-}" = "--dev" ]; then
    pip_q -e '.[serving]' pytest pytest-timeout ruff mypy hypothesis
  else
    pip_q -e .
  fi
  .venv/bin/python -c 'import torch, accelerate_core, scheduler' || { echo "bootstrap: install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
