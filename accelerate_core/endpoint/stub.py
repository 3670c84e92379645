"""A stub OpenAI-compatible server: streams N tokens (at most max_tokens) with a fixed delay, and can fail on purpose.

A real HTTP server (tornado, already installed with Flower) on a real socket, for the benchmark of our
client's own cost and for the failure tests; shipped like a stub broker, so anyone can try
``accel endpoint bench`` without a model::

    python -m accelerate_core.endpoint.stub --port 8123 --tokens 32 --delay-ms 5
    accel endpoint bench http://127.0.0.1:8123 --model stub

Routes: ``POST /v1/chat/completions`` (streamed or not), ``GET /v1/models``. It prints
``listening on http://HOST:PORT`` once bound (``--port 0`` picks a free port).

Faults (``--fault``), from the ``--fault-from``-th chat request on (1 = every request):

=========================  ======================================================================
``http-500``               answer 500 with a JSON error body
``stall``                  wait ``--stall-s`` before answering (a server past the client's timeout)
``malformed``              one good chunk, then ``data: this is not json``
``error-event``            one good chunk, then ``data: {"error": ...}``
``truncate``               ``--fault-after`` chunks, then end the response cleanly (no finish_reason)
``drop``                   ``--fault-after`` chunks, then close the socket mid-response
``die``                    ``--fault-after`` chunks, then SIGKILL this process (killed mid-stream)
``reject-stream-options``  answer 422 to any request carrying ``stream_options`` (and send no usage)
``bad-usage``              usage whose prompt + completion != total
=========================  ======================================================================

``--echo-auth`` puts the request's Authorization header into every error body and bad chunk, the
worst case for a client that must never print a token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

__all__ = ["FAULTS", "StubConfig", "StubProcess", "main", "stop_process"]

FAULTS = (
    "none",
    "http-500",
    "stall",
    "malformed",
    "error-event",
    "truncate",
    "drop",
    "die",
    "reject-stream-options",
    "bad-usage",
)
"""Every ``--fault`` the stub knows."""


@dataclass(slots=True)
class StubConfig:
    """How the stub answers (see the module docstring)."""

    tokens: int = 16
    delay_s: float = 0.0
    fault: str = "none"
    fault_from: int = 1
    fault_after: int = 2
    stall_s: float = 30.0
    echo_auth: bool = False
    requests: int = 0  # chat requests seen so far


class _Chat(tornado.web.RequestHandler):
    stub: StubConfig

    def initialize(self, stub: StubConfig) -> None:
        self.stub = stub

    async def post(self) -> None:
        self.stub.requests += 1
        body = json.loads(self.request.body or b"{}")
        fault = self.stub.fault if self.stub.requests >= self.stub.fault_from else "none"
        if await self._refused(fault, body):
            return
        tokens = min(self.stub.tokens, int(body.get("max_tokens") or self.stub.tokens))
        if not body.get("stream"):
            self.write(_completion(tokens, _prompt_tokens(body), fault))
            return
        self.set_header("Content-Type", "text/event-stream")
        self._stream_socket().set_nodelay(True)  # each chunk leaves at once, as from a real server (no Nagle)
        await self._stream(fault, tokens, _prompt_tokens(body), include_usage=fault != "reject-stream-options")

    async def _refused(self, fault: str, body: dict[str, Any]) -> bool:
        """Answer with an error status when the fault says so; True when answered."""
        if fault == "stall":
            await asyncio.sleep(self.stub.stall_s)
        if fault == "http-500":
            self.set_status(500)
            self.write({"error": f"injected failure{self._echo()}"})
            return True
        if fault == "reject-stream-options" and "stream_options" in body:
            self.set_status(422)
            self.write({"detail": "Unexpected fields in the request: {'stream_options'}"})
            return True
        return False

    async def _stream(self, fault: str, tokens: int, prompt_tokens: int, *, include_usage: bool) -> None:
        await self._send({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        for i in range(tokens):
            if await self._interrupt(fault, i):
                return
            if self.stub.delay_s:
                await asyncio.sleep(self.stub.delay_s)
            await self._send({"choices": [{"index": 0, "delta": {"content": f"tok{i} "}}]})
        last: dict[str, Any] = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
        if include_usage:
            last["usage"] = _usage(prompt_tokens, tokens, fault)
        await self._send(last)
        self.write("data: [DONE]\n\n")

    async def _interrupt(self, fault: str, i: int) -> bool:
        """Apply a mid-stream fault before chunk ``i``; True when the response must stop here."""
        if fault == "malformed" and i == 1:
            self.write(f"data: this is not json{self._echo()}\n\n")
            return True
        if fault == "error-event" and i == 1:
            await self._send({"error": f"injected stream error{self._echo()}"})
            return True
        if i != self.stub.fault_after:
            return False
        if fault == "truncate":
            return True
        if fault == "drop":
            self._stream_socket().close()
            return True
        if fault == "die":
            await self.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return False

    async def _send(self, chunk: dict[str, Any]) -> None:
        chunk.setdefault("object", "chat.completion.chunk")
        self.write(f"data: {json.dumps(chunk)}\n\n")
        await self.flush()

    def _stream_socket(self) -> tornado.iostream.IOStream:
        stream = getattr(self.request.connection, "stream", None)
        assert isinstance(stream, tornado.iostream.IOStream)
        return stream

    def _echo(self) -> str:
        return f" (Authorization: {self.request.headers.get('Authorization')})" if self.stub.echo_auth else ""


class _Models(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"object": "list", "data": [{"id": "stub", "object": "model"}]})


def _prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages") or [{}]
    return len(str(messages[-1].get("content", "")).split())


def _usage(prompt: int, completion: int, fault: str) -> dict[str, int]:
    total = prompt + completion + (1 if fault == "bad-usage" else 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _completion(tokens: int, prompt: int, fault: str) -> dict[str, Any]:
    text = "".join(f"tok{i} " for i in range(tokens))
    return {
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
        "usage": _usage(prompt, tokens, fault),
    }


def _parse(argv: list[str] | None) -> tuple[str, int, StubConfig]:
    parser = argparse.ArgumentParser(prog="python -m accelerate_core.endpoint.stub", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--fault-from", type=int, default=1)
    parser.add_argument("--fault-after", type=int, default=2)
    parser.add_argument("--stall-s", type=float, default=30.0)
    parser.add_argument("--echo-auth", action="store_true")
    a = parser.parse_args(argv)
    stub = StubConfig(a.tokens, a.delay_ms / 1000, a.fault, a.fault_from, a.fault_after, a.stall_s, a.echo_auth)
    return a.host, a.port, stub


async def _serve(host: str, port: int, stub: StubConfig) -> None:
    app = tornado.web.Application([(r"/v1/chat/completions", _Chat, {"stub": stub}), (r"/v1/models", _Models)])
    sockets = tornado.netutil.bind_sockets(port, host)
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()[1]
    sys.stdout.write(f"listening on http://{host}:{bound}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


def stop_process(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """Terminate ``proc``; kill it if it has not exited ``grace_s`` seconds later."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace_s)


class StubProcess:
    """The stub in a process of its own; ``with StubProcess(["--tokens", "32"]) as stub: stub.url``.

    Args:
        args: the stub's command-line options (``--port`` defaults to a free one).
        startup_s: how long to wait for ``listening on ...``.
    """

    def __init__(self, args: list[str] | None = None, *, startup_s: float = 30.0) -> None:
        command = [sys.executable, "-m", "accelerate_core.endpoint.stub", *(args or [])]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self._wait_url(startup_s)

    def _wait_url(self, startup_s: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], startup_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"the stub server did not start within {startup_s} s (said {line!r})")
        return line.removeprefix("listening on ").strip()

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def stop(self) -> None:
        """Terminate the process (kill it if it does not stop within 5 s)."""
        stop_process(self.proc, 5.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> StubProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the stub until killed."""
    host, port, stub = _parse(argv)
    asyncio.run(_serve(host, port, stub))


if __name__ == "__main__":
    main()
