"""The child side of the job runner: enter the box, pin the environment, run the entry, write one result.

In fork mode the server calls :func:`run_forked` in the freshly forked child. In spawn mode (macOS/MPS,
or a server started with ``--spawn``) the server starts ``python -m accelerate_core.runner.child`` per
job, which reads the job from stdin and does the same in a new interpreter (about 5.6 s per job here,
against about 0.1 s for a fork: the imports are paid again every time).

Order matters: the child first enters its job box (:func:`accelerate_core.runner.box.enter_box`: its cgroup,
the file-size limit), then its environment is scrubbed to the allow-list and the job's own variables
(``CUDA_VISIBLE_DEVICES``, ``HIP_VISIBLE_DEVICES``, thread counts) are applied, all before the entry
runs, so the first CUDA call of the child sees its pinned device; the parent never touched a device,
so CUDA initialises cleanly here.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from accelerate_core import wire
from accelerate_core.constants import ERR_OOM
from accelerate_core.errors import RunnerError
from accelerate_core.runner.box import enter_box
from accelerate_core.runner.environ import scrub_own_environ
from accelerate_core.runner.outcome import classify_exception
from accelerate_core.runner.protocol import JobRequest

__all__ = ["apply_env", "resolve_entry", "run_forked", "run_spare", "set_memory_cap", "spare_job", "spare_message"]

Entry = Callable[[dict[str, Any]], Any]
_PR_SET_PDEATHSIG = 1
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ACCEL_NUM_THREADS")
_GPU_VARS = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def resolve_entry(spec: str) -> Entry:
    """Import ``"package.module:function"`` and return the function.

    Raises:
        RunnerError: the spec is malformed, the module does not import or has no such function.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise RunnerError(f"entry {spec!r} is malformed: use 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RunnerError(f"entry module {module_name!r} does not import ({e}): check the entry name") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RunnerError(f"entry {spec!r} is not a function of {module_name}: check the entry name")
    return fn  # type: ignore[no-any-return]


def apply_env(env: Mapping[str, str]) -> None:
    """Scrub this process's environment to the allow-list, then apply a job's environment over it
    (including torch's thread count when torch is loaded)."""
    scrub_own_environ()
    os.environ.update(env)
    threads = next((env[v] for v in _THREAD_VARS if env.get(v)), None)
    torch = sys.modules.get("torch")
    if threads is None or torch is None:
        return
    try:
        torch.set_num_threads(int(threads))
    except ValueError as e:
        raise RunnerError(f"thread count {threads!r} is not an integer: fix the job's env") from e


def uses_gpu(env: Mapping[str, str]) -> bool:
    """True when the job's environment exposes a GPU (then no address-space rlimit is set)."""
    return any(env.get(v) not in (None, "", "-1") for v in _GPU_VARS)


def set_memory_cap(mem_cap_mb: int) -> int | None:
    """Cap this process's data segment at its current size plus ``mem_cap_mb``; return the limit in bytes.

    ``RLIMIT_DATA`` (private writable memory, Linux >= 4.7) works with torch on CPU: an allocation past
    it fails at once with ``MemoryError`` or torch's "can't allocate memory", even one that was never
    touched, where an RSS watch would not see it. ``RLIMIT_AS`` counts address space that is reserved
    and never used: measured here, running torch with 16 threads grew the address space by 946 MB
    (glibc's per-thread malloc arenas) against 243 MB of data and no RSS, so on many-core machines
    (and with CUDA's virtual reservations) it would fail jobs far below their real use. The preloaded
    parent's data (about 240-400 MB) is inherited, hence the limit is relative; the parent's RSS
    watch enforces the absolute cap.
    Returns None where the limit cannot be read or set (not Linux).
    """
    current = _vm_data_bytes()
    if current is None:
        return None
    limit = current + mem_cap_mb * 1024 * 1024
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    except (ValueError, OSError):
        return None
    return limit


def _vm_data_bytes() -> int | None:
    try:
        with open(f"/proc/{os.getpid()}/status") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return


def call_entry(entry: Entry, request: JobRequest) -> dict[str, Any]:
    """Run the entry on the payload and return the result record (never raises)."""
    started = time.perf_counter()
    try:
        value = entry(request.payload)
        if not isinstance(value, dict):
            raise TypeError(f"the entry returned {type(value).__name__}, not a dict")
        json.dumps(value)  # fail here, with the entry's name on it, if the value is not JSON
        record: dict[str, Any] = {"ok": True, "value": value}
    except BaseException as exc:  # the child reports everything, SystemExit included
        error_class = classify_exception(exc)
        message = _one_line(exc)
        if error_class == ERR_OOM and message == type(exc).__name__:
            message = f"an allocation failed: past the job's memory cap of {request.mem_cap_mb} MiB"
        record = {
            "ok": False,
            "error_class": error_class,
            "error_type": getattr(exc, "error_type", None) or type(exc).__name__,
            "error_message": message,
            "traceback": "".join(traceback.format_exception(exc))[-8000:],
        }
    record["entry_s"] = time.perf_counter() - started
    return record


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return first if len(first) <= 500 else first[:497] + "..."


def write_result(fd: int, record: dict[str, Any]) -> None:
    """Write the result record to the result pipe, all of it."""
    data = json.dumps(record, default=str).encode()
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.close(fd)


def _redirect_output(log_fd: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def run_forked(
    entry: Entry,
    request: JobRequest,
    result_fd: int,
    log_fd: int,
    close_fds: list[int],
    *,
    procs_files: Iterable[str] = (),
    sigmask: Iterable[int] | None = None,
) -> NoReturn:
    """The body of a forked child: never returns, always ends with ``os._exit``.

    ``procs_files`` are the job's cgroups to join (see :func:`accelerate_core.runner.box.enter_box`);
    ``sigmask`` is the mask to restore once the server's signal handlers are reset (the server blocks
    its signals across the fork).
    """

    def body() -> None:
        _detach(log_fd, close_fds, sigmask)
        _run_job(entry, request, result_fd, procs_files)

    _exit_after(body)


def run_spare(
    entry: Entry, job_fd: int, result_fd: int, log_fd: int, close_fds: list[int], *, server_pid: int,
    sigmask: Iterable[int] | None = None,
) -> NoReturn:  # fmt: skip
    """The body of a pre-forked spare child: detach like :func:`run_forked`, then wait for its job.

    The spare blocks reading ``job_fd`` until the server closes its end: one :func:`spare_message`
    (the job and its cgroup files), or nothing at all when the server discarded the spare or died
    (then it exits 0, having run nothing). Everything that belongs to a job (its box, environment,
    limits) is applied only after the job arrived, exactly as in a child forked for it; what the
    spare took from the server at its fork (modules, the entry, the scrubbed environment, the cwd) is
    what every job's child takes. It dies with the server (``PR_SET_PDEATHSIG``, and the pipe's end
    of stream as a second way), so no idle spare outlives it.
    """

    def body() -> None:
        _detach(log_fd, close_fds, sigmask)
        if os.getppid() != server_pid:  # the server died before the death signal was asked for
            return
        data = _read_to_end(job_fd)
        if not data:
            return
        message = json.loads(data)
        request = wire.decode(JobRequest, message["job"])
        _run_job(entry, request, result_fd, message["procs_files"])

    _exit_after(body)


def _exit_after(body: Callable[[], None]) -> NoReturn:
    """Run a child's ``body``, then leave without the interpreter's teardown: exit 0, or 70 with the traceback in
    the child's log when it raised."""
    code = 0
    try:
        body()
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        _flush_quietly()
        os._exit(code)


def spare_job(request: JobRequest) -> bytes:
    """A job encoded for a spare's pipe (see :func:`spare_message`)."""
    return json.dumps(wire.encode(request)).encode()


def spare_message(job: bytes, procs_files: Iterable[str]) -> bytes:
    """What the server writes to a spare's job pipe: the job (:func:`spare_job`) and the cgroup files it joins."""
    return b'{"procs_files":' + json.dumps(list(procs_files)).encode() + b',"job":' + job + b"}"


def _read_to_end(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _detach(log_fd: int, close_fds: Iterable[int], sigmask: Iterable[int] | None) -> None:
    """Leave the server's state: own session, default signal handlers, no server fd, output to the log."""
    os.setsid()  # its own process group: the parent kills the whole group at the limit
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    if sigmask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, sigmask)
    for fd in close_fds:
        _close_quietly(fd)
    die_with_parent()
    _redirect_output(log_fd)


def _run_job(entry: Entry, request: JobRequest, result_fd: int, procs_files: Iterable[str]) -> None:
    enter_box(procs_files, request.max_file_mb)
    _prepare(request)
    write_result(result_fd, call_entry(entry, request))


def _prepare(request: JobRequest) -> None:
    apply_env(request.env)
    if not uses_gpu(request.env):
        set_memory_cap(request.mem_cap_mb)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        return


def _flush_quietly() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            continue


def main(argv: list[str] | None = None) -> NoReturn:
    """Spawn mode: one job per fresh interpreter; the job comes as JSON on stdin."""
    parser = argparse.ArgumentParser(prog="python -m accelerate_core.runner.child")
    parser.add_argument("--entry", required=True)
    parser.add_argument("--result-fd", type=int, required=True)
    parser.add_argument("--preload", default="")
    parser.add_argument("--cgroup", action="append", default=[], help="a cgroup.procs file to join first")
    args = parser.parse_args(argv)
    code = 0
    try:
        die_with_parent()
        request = wire.decode(JobRequest, json.loads(sys.stdin.read()))
        enter_box(args.cgroup, request.max_file_mb)  # before the imports: their threads and memory count
        os.environ.update(request.env)  # before torch is imported: it reads the thread count then
        for name in filter(None, args.preload.split(",")):
            importlib.import_module(name)
        entry = resolve_entry(args.entry)
        _prepare(request)
        write_result(args.result_fd, call_entry(entry, request))
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        _flush_quietly()
        os._exit(code)


if __name__ == "__main__":
    main()
