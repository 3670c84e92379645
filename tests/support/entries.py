"""Entry functions for the job-runner tests: each misbehaves (or behaves) in one precise way."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload with the child's pid and parent pid."""
    return {"echo": payload, "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0)}


def dispatch(payload: dict[str, Any]) -> dict[str, Any]:
    """Run the behaviour named by ``payload["do"]`` (one server can then serve every test)."""
    return _BEHAVIOURS[payload.get("do", "echo")](payload)


def sleep_forever(payload: dict[str, Any]) -> dict[str, Any]:
    """Start a grandchild, write both pids to ``payload["pid_file"]``, then sleep past any limit."""
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if payload.get("pid_file"):
        Path(payload["pid_file"]).write_text(f"{os.getpid()} {grandchild.pid}")
    if payload.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)
    return {}


def nap(payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``payload["s"]`` seconds; return the wall-clock interval and pid."""
    start = time.time()
    time.sleep(float(payload["s"]))
    return {"start": start, "end": time.time(), "pid": os.getpid()}


def boom(payload: dict[str, Any]) -> dict[str, Any]:
    """Raise ValueError("boom")."""
    raise ValueError("boom")


def allocate(payload: dict[str, Any]) -> dict[str, Any]:
    """Allocate ``payload["mb"]`` MiB, in touched chunks of ``chunk_mb`` with ``pause_s`` between them."""
    chunk = int(payload.get("chunk_mb", payload["mb"]))
    held = []
    for _ in range(int(payload["mb"]) // chunk):
        held.append(bytearray(chunk * 1024 * 1024))  # bytearray zero-fills: the pages are touched
        time.sleep(float(payload.get("pause_s", 0.0)))
    return {"held_mb": len(held) * chunk}


def segfault(payload: dict[str, Any]) -> dict[str, Any]:
    """Die by SIGSEGV."""
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)
    return {}


def read_env(payload: dict[str, Any]) -> dict[str, Any]:
    """Return the pinned environment and torch's thread count as the child sees them."""
    import torch

    names = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "OMP_NUM_THREADS")
    return {"env": {n: os.environ.get(n) for n in names}, "threads": torch.get_num_threads()}


def noisy(payload: dict[str, Any]) -> dict[str, Any]:
    """Print on stdout and stderr (which must not corrupt the protocol), then return."""
    print("hello on stdout " * 100)
    print("hello on stderr", file=sys.stderr)
    return {"printed": True}


def missing_dependency(payload: dict[str, Any]) -> dict[str, Any]:
    """Import a module that does not exist."""
    import accel_no_such_module  # type: ignore[import-not-found]  # noqa: F401

    return {}


def big_result(payload: dict[str, Any]) -> dict[str, Any]:
    """Return a result larger than a pipe buffer."""
    return {"blob": "x" * int(payload.get("size", 1_000_000))}


def _append_pid(path: str | None, pid: int) -> None:
    if path:
        with open(path, "a") as fh:
            fh.write(f"{pid}\n")


def _sleeper(pid_file: str | None, *, mb: int = 0, new_session: bool = True) -> subprocess.Popen[bytes]:
    """Start a Python that holds ``mb`` MiB and sleeps for ten minutes; record its pid."""
    code = f"import time; held = bytearray({mb} * 1024 * 1024); time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=new_session)
    _append_pid(pid_file, proc.pid)
    return proc


def read_environ(payload: dict[str, Any]) -> dict[str, Any]:
    """Everything of its environment a job can see: os.environ, /proc/self/environ, a grandchild's."""
    grandchild = subprocess.run([sys.executable, "-c", "import os; print(dict(os.environ))"],
                                capture_output=True, text=True, check=True)  # fmt: skip
    with open("/proc/self/environ", "rb") as fh:
        initial = fh.read().decode(errors="replace")
    with open(f"/proc/{os.getppid()}/environ", "rb") as fh:
        server = fh.read().decode(errors="replace")
    return {"environ": dict(os.environ), "proc": initial, "server": server, "grandchild": grandchild.stdout}


def leave_a_daemon(payload: dict[str, Any]) -> dict[str, Any]:
    """Start a ``setsid`` sleeper and a double-forked one, then return at once (success), leaving both."""
    _sleeper(payload.get("pid_file"))
    pid = os.fork()
    if pid == 0:  # the intermediate: starts the daemon and exits, so it re-parents to the server
        try:
            _sleeper(payload.get("pid_file"))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return {"pid": os.getpid()}


def fork_bomb(payload: dict[str, Any]) -> dict[str, Any]:
    """Fork up to ``payload["n"]`` times, one a millisecond; each child leaves the group and sleeps."""
    for _ in range(int(payload["n"])):
        try:
            pid = os.fork()
        except OSError:  # refused at the task limit: a bomb just tries again
            time.sleep(0.001)
            continue
        if pid == 0:
            os.setsid()
            _append_pid(payload.get("pid_file"), os.getpid())
            time.sleep(60)
            os._exit(0)
        time.sleep(0.001)
    time.sleep(60)
    return {}


def fill_disk(payload: dict[str, Any]) -> dict[str, Any]:
    """Fill ``payload["path"]`` with a shell pipeline, then from Python, 1 MiB at a time up to ``mb``."""
    shell = subprocess.run(["sh", "-c", f"head -c {payload['mb']}M /dev/zero > {payload['path']}.sh"], check=False)
    Path(payload["path"] + ".rc").write_text(str(shell.returncode))
    chunk = b"x" * (1024 * 1024)
    with open(payload["path"], "wb") as fh:
        for _ in range(int(payload["mb"])):
            fh.write(chunk)
            fh.flush()
    return {}


def hog_tree(payload: dict[str, Any]) -> dict[str, Any]:
    """Start ``n`` sleepers holding ``mb`` MiB each (every one under a cap their sum is over), then wait."""
    for i in range(int(payload["n"])):
        _sleeper(payload.get("pid_file"), mb=int(payload["mb"]), new_session=i % 2 == 0)
    time.sleep(60)
    return {}


def process_state(payload: dict[str, Any]) -> dict[str, Any]:
    """What a job's process holds that a job must not inherit: environment, limits, cgroup, handlers, fds."""
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pgid": os.getpgid(0),
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
        "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
        "data": resource.getrlimit(resource.RLIMIT_DATA)[0],
        "cgroup": Path("/proc/self/cgroup").read_text(),
        "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "fds": fds,  # listdir's own included
    }


_BEHAVIOURS = {
    "echo": echo,
    "sleep": sleep_forever,
    "nap": nap,
    "boom": boom,
    "allocate": allocate,
    "segfault": segfault,
    "env": read_env,
    "noisy": noisy,
    "missing": missing_dependency,
    "big": big_result,
    "environ": read_environ,
    "daemon": leave_a_daemon,
    "fork_bomb": fork_bomb,
    "fill_disk": fill_disk,
    "hog_tree": hog_tree,
    "state": process_state,
}
