"""The fork server: a preloaded parent that forks one child per job. Run as ``python -m accelerate_core.runner.server``.

It imports the heavy libraries (``--preload``, default torch and transformers) and the entry module once,
never touches a device, then serves JSON-line requests (see :mod:`accelerate_core.runner.protocol`)
from its stdin. One loop multiplexes everything with a selector and a timeout computed from the
children's deadlines (never a busy-wait): requests, children's result pipes, outgoing messages, and
SIGCHLD (through ``signal.set_wakeup_fd``). It survives every child; it exits when its stdin closes or
on ``shutdown``, killing its children first.

``--spawn`` starts a fresh interpreter per job instead of forking (the default on macOS, where fork
is unsafe with MPS/Objective-C runtimes). ``--box`` picks how each job is boxed (see
:mod:`accelerate_core.runner.box`); the server's own environment is scrubbed to the job allow-list
(:mod:`accelerate_core.runner.environ`) before it imports anything, as its children inherit it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib
import logging
import os
import selectors
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from accelerate_core import wire
from accelerate_core.constants import ERR_CRASHED
from accelerate_core.errors import AccelerateError, RunnerError
from accelerate_core.runner.box import BOX_MODES, Boxes, open_boxes
from accelerate_core.runner.child import Entry, resolve_entry
from accelerate_core.runner.environ import scrub_own_environ
from accelerate_core.runner.outcome import ChildOutcome
from accelerate_core.runner.pages import collapse_resident_memory, huge_anonymous_mb
from accelerate_core.runner.protocol import JobRequest, LineReader, encode
from accelerate_core.runner.supervisor import Child, Supervisor

__all__ = ["Server", "main"]

log = logging.getLogger(__name__)
_PR_SET_CHILD_SUBREAPER = 36


class Server:
    """The server's event loop. Construct after the preload; call :meth:`serve`."""

    def __init__(
        self, entry: Entry | str, *, spawn: bool, preload: tuple[str, ...], max_children: int, boxes: Boxes
    ) -> None:
        self.max_children = max(1, max_children)
        self.mode = "spawn" if spawn else "fork"
        self.queue: collections.deque[JobRequest] = collections.deque()
        self.stopping = False
        self._out = bytearray()
        self._workdir = Path(tempfile.mkdtemp(prefix="accel-runner-"))
        self._proto_in, self._proto_out = _take_protocol_fds()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._proto_in, self._proto_out, self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._reader = LineReader(self._proto_in)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self._proto_in, selectors.EVENT_READ, self._on_request)
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._on_wakeup)
        self.boxes = boxes
        self.sup = Supervisor(entry, spawn=spawn, preload=preload, workdir=self._workdir,
                              close_in_child=self._private_fds, boxes=boxes)  # fmt: skip

    def _private_fds(self) -> list[int]:
        fds = [self._proto_in, self._proto_out, self._wake_r, self._wake_w]
        with contextlib.suppress(AttributeError, ValueError):
            fds.append(self.sel.fileno())  # type: ignore[attr-defined]
        return fds

    def serve(self, ready: dict[str, Any]) -> None:
        """Announce readiness, then run until shutdown; kills every child before returning."""
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self.send({"event": "ready", "pid": os.getpid(), "mode": self.mode, "box": self.boxes.info(), **ready})
        try:
            self._prefork()  # the first job too, whenever it comes
            while not (self.stopping and not self.sup.children):
                self._step()
        finally:
            self.sup.kill_all()
            self._reap_all_blocking()
            self.boxes.close()
            self._flush_blocking()
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _on_sigterm(self, _signum: int, _frame: object) -> None:
        # Stop like on ``shutdown``: kill the children's groups first, or their own children would outlive us.
        self.stopping = True
        self.sup.kill_all()

    def _step(self) -> None:
        wake = self.sup.next_wakeup()
        timeout = None if wake is None else max(0.0, wake - time.monotonic())
        for key, mask in self.sel.select(timeout):
            key.data(mask)
        for child, outcome in self.sup.reap():
            self._unwatch(child.result_fd)
            self._send_outcome(outcome)
        if self.stopping:  # again each turn: a SIGTERM may have landed while a child was being forked
            self.sup.kill_all()
        self.sup.enforce()
        self._start_queued()
        self._prefork()

    def _prefork(self) -> None:
        """Fork the next job's child ahead of it, once this turn's outcomes are sent and its jobs started."""
        if self.stopping:
            return
        try:
            self.sup.prefork()
        except OSError as e:  # no memory, no pids: the next job is forked for itself, as without spares
            log.warning("could not fork a spare child: %s", e)

    def _start_queued(self) -> None:
        while self.queue and len(self.sup.children) < self.max_children and not self.stopping:
            request = self.queue.popleft()
            try:
                child = self.sup.start(request)
            except (OSError, RunnerError) as e:  # fork/spawn/box failed (no memory...): the job fails, we go on
                self._send_outcome(ChildOutcome.crashed(request.job_id, f"the child could not be started: {e}"))
                continue
            self.sel.register(child.result_fd, selectors.EVENT_READ, lambda _m, c=child: self._on_result(c))
            self.send({"event": "started", "job_id": request.job_id, "pid": child.pid})

    def _on_result(self, child: Child) -> None:
        if child.drain():  # end of stream: only the exit status is missing now (SIGCHLD brings it)
            self._unwatch(child.result_fd)

    def _unwatch(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(fd)

    def _on_wakeup(self, _mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def _on_request(self, _mask: int) -> None:
        for message in self._reader.read():
            self._handle(message)
        if self._reader.eof:  # the client is gone: stop, killing the children
            self.sel.unregister(self._proto_in)
            self.stopping = True
            self.sup.kill_all()

    def _handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "submit":
            try:
                self.queue.append(wire.decode(JobRequest, message.get("job")))
            except AccelerateError as e:
                job_id = str((message.get("job") or {}).get("job_id", "?"))
                self._send_outcome(ChildOutcome.crashed(job_id, f"rejected by the fork server: {e}"))
        elif op == "cancel":
            self._cancel(str(message.get("job_id")))
        elif op == "ping":
            spare = None if self.sup.spare is None else self.sup.spare.pid
            self.send({"event": "pong", "running": len(self.sup.children), "queued": len(self.queue), "spare": spare})
        elif op == "shutdown":
            self.stopping = True
            self.sup.kill_all()
        else:
            log.error("unknown fork-server op %r ignored", op)

    def _cancel(self, job_id: str) -> None:
        for request in list(self.queue):
            if request.job_id == job_id:
                self.queue.remove(request)
                self._send_outcome(
                    ChildOutcome.failure(job_id, ERR_CRASHED, "Cancelled", "cancelled before it started")
                )
                return
        for child in self.sup.children.values():
            if child.request.job_id == job_id:
                self.sup.kill(child, ERR_CRASHED, "Cancelled", "cancelled by the client", graceful=False)

    def _send_outcome(self, outcome: ChildOutcome) -> None:
        self.send({"event": "outcome", "outcome": wire.encode(outcome)})

    def send(self, message: dict[str, Any]) -> None:
        """Queue one message for the client and write what the pipe takes now (never blocks)."""
        self._out += encode(message)
        self._flush()

    def _flush(self, _mask: int = 0) -> None:
        try:
            while self._out:
                written = os.write(self._proto_out, self._out)
                del self._out[:written]
        except BlockingIOError:
            pass
        except BrokenPipeError:  # the client is gone
            self._out.clear()
            self.stopping = True
        self._watch_output()

    def _watch_output(self) -> None:
        registered = self._proto_out in self.sel.get_map()
        if self._out and not registered:
            self.sel.register(self._proto_out, selectors.EVENT_WRITE, self._flush)
        elif not self._out and registered:
            self.sel.unregister(self._proto_out)

    def _flush_blocking(self) -> None:
        with contextlib.suppress(OSError):
            os.set_blocking(self._proto_out, True)
            while self._out:
                del self._out[: os.write(self._proto_out, self._out)]

    def _reap_all_blocking(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.sup.children and time.monotonic() < deadline:
            for child, _ in self.sup.reap():
                self._unwatch(child.result_fd)
            if self.sup.children:
                self.sel.select(0.05)


def _take_protocol_fds() -> tuple[int, int]:
    """Move the protocol off fds 0/1: stdin becomes /dev/null, stdout becomes stderr (stray prints are safe)."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


def _check_no_device_touched() -> None:
    """Refuse to serve when the preload initialised CUDA: children forked after that cannot use it."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RunnerError(
            "the preload or the entry module initialised CUDA in the fork server: move device work into "
            "the entry function (forked children cannot use CUDA initialised in their parent)"
        )


def _become_subreaper() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m accelerate_core.runner.server", description=__doc__)
    parser.add_argument("--entry", required=True, help="the job function, 'package.module:function'")
    parser.add_argument("--preload", default="torch,transformers,transformers.modeling_utils",
                        help="comma-separated modules to import once")  # fmt: skip
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument("--spawn", action="store_true", help="a fresh interpreter per job instead of fork")
    parser.add_argument("--box", choices=BOX_MODES, default="auto", help="how jobs are boxed: cgroup, sweep or auto")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Preload, resolve the entry, and serve; returns the exit status."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="accel-runner[%(process)d] %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the client decides when we stop (Ctrl-C reaches it too)
    spawn = args.spawn or sys.platform == "darwin"
    preload = tuple(filter(None, args.preload.split(",")))
    started = time.perf_counter()
    entry: Entry | str = args.entry
    scrub_own_environ()  # every child is forked from this process: none may inherit a secret
    # torch.cuda.is_available() through NVML, not cuInit: a preloaded library that asks must not
    # initialise the driver here, or no forked child could use the GPU (torch documents this variable).
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    try:
        if not spawn:
            for name in preload:
                importlib.import_module(name)
            entry = resolve_entry(args.entry)
            _check_no_device_touched()
            collapse_resident_memory()  # what every job's fork and exit copy and free, in 2 MiB pages
        boxes = open_boxes(args.box)
    except (AccelerateError, ImportError) as e:
        sys.stdout.buffer.write(encode({"event": "fatal", "message": str(e)}))
        return 1
    _become_subreaper()
    server = Server(entry, spawn=spawn, preload=preload, max_children=args.max_children, boxes=boxes)
    server.serve({"preload_s": round(time.perf_counter() - started, 3), "huge_mb": huge_anonymous_mb()})
    return 0


if __name__ == "__main__":
    code = main()
    # No interpreter teardown: freeing the preloaded torch and transformers heap object by object took
    # seconds (the client's close() waits for it); serve() has already killed, reaped and flushed everything.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
