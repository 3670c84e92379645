"""Each cgroup flavour the box can use, driven directly on real processes (no fork server).

The fork server picks the best writable hierarchy (here: v1 ``pids``), so the other flavour would go
untested: both are driven here, each skipped with its reason where this machine does not offer it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accelerate_core.runner.box import Boxes, enter_box
from accelerate_core.runner.cgroup import CgroupBase, own_hierarchies
from tests.support.processes import gone


def _hierarchy(version: int) -> Path | None:
    with open("/proc/self/mountinfo") as mounts, open("/proc/self/cgroup") as cgroup:
        found = own_hierarchies(mounts.read(), cgroup.read())
    for h in found:
        if h.version == version and (version == 2 or "pids" in h.controllers) and os.access(h.directory, os.W_OK):
            return h.directory
    return None


V2, V1_PIDS = _hierarchy(2), _hierarchy(1)
FLAVOURS = [
    pytest.param(2, marks=pytest.mark.skipif(V2 is None, reason="no writable cgroup v2 here")),
    pytest.param(1, marks=pytest.mark.skipif(V1_PIDS is None, reason="no writable cgroup v1 pids hierarchy here")),
]


def _child(procs_files: list[str], pid_file: Path) -> None:
    """The forked job: enter the box, leave a setsid sleeper, sleep."""
    try:
        enter_box(procs_files, 16)
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        pid_file.write_text(str(sleeper.pid))
        time.sleep(60)
    finally:
        os._exit(0)


@pytest.mark.parametrize("version", FLAVOURS)
def test_a_job_cgroup_holds_its_setsid_tree_counts_it_and_kills_it(version: int, tmp_path: Path):
    parent = V2 if version == 2 else V1_PIDS
    assert parent is not None
    base = parent / f"accel-runner-{os.getpid()}"
    base.mkdir()
    boxes = Boxes(CgroupBase(base, version=version, pids=version == 1))
    box = boxes.open(max_tasks=32)
    pid_file = tmp_path / "sleeper"

    pid = os.fork()
    if pid == 0:
        _child(box.procs_files, pid_file)
    box.attach(pid)
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    sleeper = int(pid_file.read_text())
    usage = box.sample()
    box.kill()
    os.waitpid(pid, 0)
    boxes.finish(box)
    boxes.close()

    assert usage.processes == 2 and usage.tasks >= 2 and usage.rss_bytes > 0
    assert box.procs_files[0].endswith("/tasks" if version == 1 else "/cgroup.procs")
    assert gone(sleeper)
    assert not base.exists()
