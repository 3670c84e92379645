#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml: the one command to run after changing a dependency.
#   requirements.lock      what `accel` needs (quickstart.sh and the images install it)
#   requirements-dev.lock  that, plus every extra and the dev group (test.sh installs it); shared pins identical
# Every pin carries its hashes, for every platform (a universal resolution, Python >= 3.11: Linux and macOS).
#
# torch itself is left out, also where another package requires it (transformers[serving] does): bootstrap.sh
# installs torch==2.13.0 first (the CPU wheel; a resolver would pick the CUDA build and its multi-GB nvidia-*
# and triton wheels). What that CPU wheel requires (sympy, networkx, ...) is read from the installed torch
# and locked like everything else.
# Extra arguments go to `uv pip compile` (e.g. --upgrade-package transformers, or --upgrade for everything).
set -euo pipefail
cd "$(dirname "$0")/../.."
UV_VERSION=0.13.9
if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
  bash deploy/scripts/bootstrap.sh
fi
if [ "$(.venv/bin/python -m uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  .venv/bin/python -m pip install -q "uv==$UV_VERSION"
fi
work=.tmp/lock  # a fixed, git-ignored place: the locks' "via" comments name it, so they do not churn
mkdir -p "$work"
.venv/bin/python - "$work" <<'EOF'
"""Write the resolver's inputs: the project's dependencies without torch, plus torch's own CPU requirements."""
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

out = Path(sys.argv[1])
pyproject = tomllib.loads(Path("pyproject.toml").read_text())
project = pyproject["project"]
runtime = [r for r in project["dependencies"] if Requirement(r).name != "torch"]
torch_needs = [r for r in metadata.requires("torch") or [] if "extra ==" not in r]
if any(re.match(r"(nvidia|triton)", Requirement(r).name) for r in torch_needs):
    sys.exit(f"lock.sh: the installed torch {metadata.version('torch')} is a CUDA build: install the CPU wheel")
comment = f"# torch=={metadata.version('torch')} requires (installed by bootstrap.sh before this lock):\n"
# Whatever else requires torch (transformers[serving] -> accelerate) must not resolve it either.
(out / "no-torch.txt").write_text("torch ; sys_platform == 'never'\n")
(out / "runtime.in").write_text("\n".join(runtime) + "\n" + comment + "\n".join(torch_needs) + "\n")
extras = [r for reqs in project.get("optional-dependencies", {}).values() for r in reqs]
(out / "dev.in").write_text("-r runtime.in\n" + "\n".join([*extras, *pyproject["dependency-groups"]["dev"]]) + "\n")
EOF
compile() {
  .venv/bin/python -m uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --override "$work/no-torch.txt" --no-emit-package torch --custom-compile-command "bash deploy/scripts/lock.sh" "$@"
}
compile "$work/runtime.in" -o requirements.lock "${@}"
compile "$work/dev.in" --constraint requirements.lock -o requirements-dev.lock "${@}"
echo "lock.sh: wrote requirements.lock ($(grep -c '^[a-z]' requirements.lock) pins) and requirements-dev.lock ($(grep -c '^[a-z]' requirements-dev.lock) pins)"
