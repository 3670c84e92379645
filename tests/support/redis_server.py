"""A real ``redis-server`` on a free loopback port, stoppable and restartable (for fault tests)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process with AOF on (the broker's production setting), data in ``workdir``.

    With ``password`` the server requires it (``--requirepass``), as ``deploy/redis.conf`` does; ``args`` are
    more options (``--aclfile PATH``: then ``password`` is the ACL file's ``default`` user's).
    """

    def __init__(
        self, workdir: Path, port: int | None = None, *, password: str | None = None, args: Sequence[str] = ()
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run `apt-get install -y redis-server` "
                "(deploy/scripts/test.sh does this)"
            )
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.password = password
        self.args = tuple(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--maxmemory-policy",
                "noeviction",
                "--logfile",
                str(self.workdir / "redis.log"),
                *(["--requirepass", self.password] if self.password and "--aclfile" not in self.args else []),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def fresh(self) -> str:
        """Restart the server if it died (a fault test may have stopped it), empty it, and return its URL."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.flushall()
        return self.url

    def flushall(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            if self.password:
                s.sendall(f"AUTH {self.password}\r\n".encode())
                s.recv(16)
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)
