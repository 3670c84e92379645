"""Finding this process's cgroups from /proc text: hybrid, pure v2, bind-mounted and foreign hierarchies."""

from __future__ import annotations

from pathlib import Path

from accelerate_core.runner.cgroup import Hierarchy, own_hierarchies

HYBRID_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
4:memory:/process_api/c032
3:cpu,cpuacct:/
0::/
"""


def test_a_hybrid_host_gives_the_v2_tree_and_every_v1_controller():
    found = own_hierarchies(HYBRID_MOUNTS, HYBRID_CGROUP)

    assert Hierarchy(2, frozenset(), Path("/sys/fs/cgroup/unified")) in found
    assert Hierarchy(1, frozenset({"pids"}), Path("/sys/fs/cgroup/pids")) in found
    assert Hierarchy(1, frozenset({"memory"}), Path("/sys/fs/cgroup/memory/process_api/c032")) in found
    assert Hierarchy(1, frozenset({"cpu", "cpuacct"}), Path("/sys/fs/cgroup/cpu,cpuacct")) in found


def test_a_pure_v2_service_cgroup():
    mounts = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"

    found = own_hierarchies(mounts, "0::/system.slice/accel-worker.service\n")

    assert found == [Hierarchy(2, frozenset(), Path("/sys/fs/cgroup/system.slice/accel-worker.service"))]


def test_a_container_sees_its_own_subtree_mounted_as_the_root():
    mounts = "30 23 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"

    assert own_hierarchies(mounts, "0::/docker/abc/init\n") == [Hierarchy(2, frozenset(), Path("/sys/fs/cgroup/init"))]
    assert own_hierarchies(mounts, "0::/other/place\n") == []  # not visible through this mount


def test_no_cgroup_mount_means_nothing_found():
    assert own_hierarchies("22 27 0:21 / /proc rw,relatime - proc proc rw\n", "0::/\n") == []
