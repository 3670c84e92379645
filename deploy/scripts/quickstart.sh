#!/usr/bin/env bash
# Set up .venv (torch CPU first, then the project) and run the main job on the embedded default:
# a small phase-end run over deploy/demo-models.txt (about 20 architectures across modalities).
# No servers needed. Extra arguments go to `accel run` (e.g. --models all).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/bootstrap.sh
.venv/bin/accel detect
exec .venv/bin/accel run --phase demo --models @deploy/demo-models.txt --hardware cpu "$@"
