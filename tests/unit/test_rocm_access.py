"""``/dev/kfd`` access: a user outside its group gets one line naming the group, not a worker whose jobs all fail.

The device is a real file with the ownership and mode of ``/dev/kfd`` (``root:render 0660`` on current
distributions; here owned by ``nobody``). The check runs in a child process without root's power to
override permissions (``setpriv`` drops every capability), once outside the group and once inside it.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = (
    "import sys; from pathlib import Path; from accelerate_core.backends.rocm import check_kfd_access\n"
    "try:\n    check_kfd_access(Path(sys.argv[1]))\nexcept Exception as e:\n    print(e); sys.exit(2)\nprint('ok')"
)


def _group() -> grp.struct_group:
    """``render`` when this machine has it (as ROCm hosts do), else any group other than root's."""
    try:
        return grp.getgrnam("render")
    except KeyError:
        return next(g for g in grp.getgrall() if g.gr_gid != 0)


def _check(device: Path, groups: list[int] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the check in a child; as root, with only ``groups`` and no capability (no CAP_DAC_OVERRIDE)."""
    command = [sys.executable, "-c", CHECK, str(device)]
    if os.geteuid() == 0:
        assert shutil.which("setpriv"), "setpriv (util-linux) is missing: apt-get install util-linux"
        group_flag = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        drop = ["--securebits=+noroot,+noroot_locked", "--inh-caps=-all", "--bounding-set=-all"]
        command = ["setpriv", *group_flag, *drop, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])


def test_a_user_outside_the_group_gets_one_line_naming_it(tmp_path: Path) -> None:
    # Given a device node stand-in owned by nobody:render, mode 0660 (as a plain user: our own file, mode 0)
    device = tmp_path / "kfd"
    device.touch()
    if os.geteuid() == 0:
        os.chown(device, 65534, _group().gr_gid)
        device.chmod(0o660)
    else:
        device.chmod(0o000)
    group = grp.getgrgid(device.stat().st_gid)
    # When a user outside the group checks it; Then one line names the group and how to join it
    refused = _check(device)
    assert refused.returncode == 2, refused.stderr
    assert refused.stdout.count("\n") == 1, refused.stdout
    assert f"add it to the {group.gr_name} group" in refused.stdout
    assert f"usermod -aG {group.gr_name}" in refused.stdout and f"--group-add {group.gr_name}" in refused.stdout
    # When the same user is in the group; Then the device opens
    if os.geteuid() != 0:
        device.chmod(0o660)
    allowed = _check(device, [group.gr_gid])
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "ok"), allowed.stdout + allowed.stderr


def test_a_missing_device_says_how_to_pass_it(tmp_path: Path) -> None:
    from accelerate_core.backends.rocm import check_kfd_access
    from accelerate_core.errors import HardwareUnavailableError

    with pytest.raises(HardwareUnavailableError, match=r"does not exist: load the amdgpu driver, or pass --device="):
        check_kfd_access(tmp_path / "kfd")
