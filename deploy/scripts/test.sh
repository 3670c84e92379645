#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, check the style, then run the tests.
#   - .venv with torch==2.13.0 (CPU) first, then the project and dev tools
#   - redis-server (the tests start their own on free loopback ports), chromium (report screenshot) and
#     systemd-analyze (verifies the units in deploy/systemd); hadolint and check-jsonschema come with --dev
#   - ruff check, ruff format --check and mypy (strict, as pyproject.toml configures it): any finding
#     fails the run before a test starts (about 5 s with warm caches, a minute or two cold)
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "test.sh: installing ${need_apt[*]} from apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
bash deploy/scripts/bootstrap.sh --dev
echo "test.sh: ruff check, ruff format --check, mypy"
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
