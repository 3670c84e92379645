"""The lock files agree with pyproject.toml: every dependency pinned within its range, with hashes, no CUDA.

When this fails after a change to pyproject.toml, run `bash deploy/scripts/lock.sh` and commit the locks.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
REGENERATE = "run `bash deploy/scripts/lock.sh` and commit requirements*.lock"


def pins(lock: str) -> dict[str, list[str]]:
    """``{name: [version, ...]}`` (a universal lock may pin one package per Python version range)."""
    text = (REPO / lock).read_text()
    found: dict[str, list[str]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", entry)
        if match:
            assert "--hash=sha256:" in entry, f"{lock}: {match.group(1)} has no hash: {REGENERATE}"
            found.setdefault(canonicalize_name(match.group(1)), []).append(match.group(2))
    return found


def _within(lock: str, requirements: list[str]) -> None:
    pinned = pins(lock)
    for raw in requirements:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is not in {lock}: {REGENERATE}"
        for version in pinned[name]:
            assert req.specifier.contains(version, prereleases=True), f"{lock} pins {name}=={version}, not {req}"


RUNTIME = [d for d in PROJECT["project"]["dependencies"] if Requirement(d).name != "torch"]


def test_the_runtime_lock_pins_every_dependency_but_torch_within_its_range() -> None:
    _within("requirements.lock", RUNTIME)


def test_the_dev_lock_pins_the_extras_and_the_dev_group_too() -> None:
    extras = [r for reqs in PROJECT["project"].get("optional-dependencies", {}).values() for r in reqs]
    _within("requirements-dev.lock", [*RUNTIME, *extras, *PROJECT["dependency-groups"]["dev"]])
    pinned = pins("requirements-dev.lock")
    for raw in extras:  # and what each extra brings (transformers[serving]: fastapi, uvicorn, ...)
        req = Requirement(raw)
        for extra in req.extras:
            brought = [r for r in metadata.requires(req.name) or [] if f'extra == "{extra}"' in r]
            missing = {canonicalize_name(Requirement(r).name) for r in brought} - set(pinned) - {"torch"}
            assert brought and not missing, f"{raw}: {missing} unlocked: {REGENERATE}"


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_no_lock_pulls_torch_or_a_cuda_wheel(lock: str) -> None:
    names = set(pins(lock))
    assert not {n for n in names if n == "torch" or n.startswith(("nvidia-", "triton"))}, sorted(names)
    # what the CPU torch itself needs is locked (bootstrap.sh installs torch first, then the lock)
    torch_needs = [r for r in metadata.requires("torch") or [] if "extra ==" not in r]
    assert {canonicalize_name(Requirement(r).name) for r in torch_needs} <= names


def test_both_locks_pin_shared_packages_alike() -> None:
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert set(runtime) <= set(dev)
    assert {n: v for n, v in runtime.items() if dev[n] != v} == {}, REGENERATE
