"""A small preloaded-parent fork pool for ``models check``: one forked child per model type.

Each child runs ``fn(item)`` and sends back a JSON dict; a child that hangs past ``timeout_s``, grows
past ``mem_cap_mb`` of resident memory or dies on a signal is killed (with its process group) and
reported as ``timeout``, ``out-of-memory`` or ``crashed``. The parent never blocks for more than a
poll interval and survives every child. POSIX only (``os.fork``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from accelerate_core.constants import ERR_CRASHED, ERR_OOM, ERR_TIMEOUT

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
POLL_S = 0.05


@dataclass
class _Child:
    item: str
    fd: int
    start: float
    chunks: list[bytes] = field(default_factory=list)
    killed: str | None = None
    peak_mb: float = 0.0


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _child_main(fn: Callable[[str], dict[str, Any]], item: str, w: int, threads: int | None) -> None:
    os.setpgid(0, 0)
    try:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        result = fn(item)
    except BaseException as e:
        result = {
            "ok": False,
            "error_type": type(e).__name__,
            "error_message": str(e)[:2000],
            "traceback": traceback.format_exc()[-4000:],
        }
    data = json.dumps(result, default=str).encode()
    with os.fdopen(w, "wb") as f:
        f.write(data)
    os._exit(0)


def _spawn(fn: Callable[[str], dict[str, Any]], item: str, threads: int | None) -> tuple[int, _Child]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            _child_main(fn, item, w, threads)
        finally:
            os._exit(1)
    os.close(w)
    return pid, _Child(item=item, fd=r, start=time.monotonic())


def _kill(pid: int) -> None:
    for target in (-pid, pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)


def _finish(pid: int, child: _Child) -> dict[str, Any]:
    _, status = os.waitpid(pid, 0)
    os.close(child.fd)
    duration = time.monotonic() - child.start
    base: dict[str, Any] = {"wall_s": round(duration, 4), "peak_rss_mb": round(child.peak_mb, 1)}
    if child.killed:
        return {
            **base,
            "ok": False,
            "error_class": child.killed,
            "error_type": child.killed,
            "error_message": f"killed: {child.killed} after {duration:.1f}s",
        }
    try:
        result: dict[str, Any] = json.loads(b"".join(child.chunks).decode())
    except ValueError:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        return {
            **base,
            "ok": False,
            "error_class": ERR_CRASHED,
            "error_type": "crashed",
            "error_message": f"child died (signal {sig}, status {status}) without a result",
        }
    return {**base, **result}


def run_isolated(
    fn: Callable[[str], dict[str, Any]],
    items: Sequence[str],
    *,
    jobs: int = 1,
    timeout_s: float = 60.0,
    mem_cap_mb: float = 6144.0,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Run ``fn(item)`` for each item in its own forked child, ``jobs`` at a time; yield (item, result)."""
    pending = list(items)[::-1]
    running: dict[int, _Child] = {}
    threads = 1 if jobs > 1 else None
    try:
        while pending or running:
            while pending and len(running) < jobs:
                pid, child = _spawn(fn, pending.pop(), threads)
                running[pid] = child
            yield from _poll(running, timeout_s, mem_cap_mb)
    finally:
        for pid, child in running.items():
            _kill(pid)
            os.waitpid(pid, 0)
            os.close(child.fd)


def _poll(running: dict[int, _Child], timeout_s: float, mem_cap_mb: float) -> Iterator[tuple[str, dict[str, Any]]]:
    by_fd = {c.fd: pid for pid, c in running.items()}
    ready, _, _ = select.select(list(by_fd), [], [], POLL_S)
    done: list[int] = []
    for fd in ready:
        pid = by_fd[fd]
        chunk = os.read(fd, 1 << 16)
        if chunk:
            running[pid].chunks.append(chunk)
        else:
            done.append(pid)
    now = time.monotonic()
    for pid, child in running.items():
        if pid in done:
            continue
        child.peak_mb = max(child.peak_mb, _rss_mb(pid))
        if now - child.start > timeout_s:
            child.killed = ERR_TIMEOUT
        elif child.peak_mb > mem_cap_mb:
            child.killed = ERR_OOM
        if child.killed:
            _kill(pid)
            done.append(pid)
    for pid in done:
        child = running.pop(pid)
        yield child.item, _finish(pid, child)
