"""Whether this machine lets a test make a job's cgroup (the job box's and the spare child's precondition)."""

from __future__ import annotations

import os

from accelerate_core.runner.cgroup import CgroupBase


def cgroups_here() -> bool:
    """True when a cgroup can be made for this process here (then closed again)."""
    probe = CgroupBase.create(pid=os.getpid())
    if probe is None:
        return False
    probe.close()
    return True
