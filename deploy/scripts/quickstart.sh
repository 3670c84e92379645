#!/usr/bin/env bash
# Set up .venv (torch CPU first, then the project) and run the main job on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/bootstrap.sh
.venv/bin/accel detect
exec .venv/bin/accel selfbench
