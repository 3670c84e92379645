"""The endpoint client's own cost: ``EndpointClient.stream_chat`` against a bare ``httpx2`` streaming loop.

Both stream the same chat completion from the same local stub server (``accelerate_core.endpoint.stub``,
a separate process streaming ``--tokens`` chunks ``--delay-ms`` apart), in the same process and event
loop, each through its own pooled ``httpx2.AsyncClient``. The baseline does the least a client can: send
the request and read the response line by line. Ours also parses each event as SSE and JSON and takes
a timestamp per event, as a benchmark must.

They alternate block by block (a block: ``concurrency`` requests sent at once by one client; the order
flips each round), so drift and the neighbours' load hit both alike, at concurrency 1 and at
``--concurrency``. Figures, per concurrency: the median wall time of a block of each client, the median
of the per-round ratios ours/bare (aim: under 1.05) with its 10th-90th percentile range, and the client
process's CPU time per request of each (at ``--delay-ms 0`` the client's CPU is the whole cost: the
worst case).

Prints one JSON object. Usage:
``.venv/bin/python benchmarks/bench_endpoint_client.py [--rounds 200] [--tokens 64] [--delay-ms 1] [--concurrency 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2

from accelerate_core.endpoint.client import EndpointClient
from accelerate_core.endpoint.prompts import PromptSource
from accelerate_core.endpoint.spec import EndpointTarget
from accelerate_core.endpoint.stub import StubProcess

Send = Callable[[int], Awaitable[Any]]


def bare_sender(http: httpx2.AsyncClient, url: str, body: dict[str, Any]) -> Send:
    """The baseline: POST, then read every line of the stream; nothing else."""

    async def send(_: int) -> int:
        lines = 0
        async with http.stream("POST", url, json=body) as response:
            async for _line in response.aiter_lines():
                lines += 1
        return lines

    return send


def our_sender(client: EndpointClient, max_tokens: int) -> Send:
    """Ours: a timed, parsed, classified sample per request (what ``accel endpoint bench`` sends)."""
    prompt = PromptSource(16)[0]

    async def send(i: int) -> Any:
        sample = await client.stream_chat(prompt, index=i, max_tokens=max_tokens, include_usage=True)
        assert sample.ok, sample.error
        return sample

    return send


async def block(send: Send, concurrency: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``concurrency`` requests sent at once (one per client)."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(send(i) for i in range(concurrency)))
    return time.perf_counter() - wall0, time.process_time() - cpu0


async def compare(url: str, args: argparse.Namespace, concurrency: int) -> dict[str, Any]:
    """Alternate the two clients block by block for ``args.rounds`` rounds at one concurrency."""
    target = EndpointTarget("stub", url, "stub")
    body = EndpointClient(target, timeout_s=30, connections=1).body(
        PromptSource(16)[0].text, args.tokens, stream=True, include_usage=True
    )
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with (
        httpx2.AsyncClient(timeout=30, limits=limits, trust_env=False) as http,
        EndpointClient(target, timeout_s=30, connections=concurrency) as ours,
    ):
        senders = {"bare": bare_sender(http, target.chat_url, body), "ours": our_sender(ours, args.tokens)}
        for name in senders:  # warm-up: connections open, code paths hot
            for _ in range(3):
                await block(senders[name], concurrency)
        wall: dict[str, list[float]] = {"bare": [], "ours": []}
        cpu: dict[str, list[float]] = {"bare": [], "ours": []}
        for r in range(args.rounds):
            for name in ("bare", "ours") if r % 2 == 0 else ("ours", "bare"):
                w, c = await block(senders[name], concurrency)
                wall[name].append(w)
                cpu[name].append(c / concurrency)
    ratios = sorted(o / b for o, b in zip(wall["ours"], wall["bare"], strict=True))
    return {
        "concurrency": concurrency,
        "bare_block_ms": statistics.median(wall["bare"]) * 1000,
        "ours_block_ms": statistics.median(wall["ours"]) * 1000,
        "ratio": statistics.median(ratios),
        "ratio_p10_p90": [ratios[len(ratios) // 10], ratios[len(ratios) * 9 // 10]],
        "bare_cpu_us_per_request": statistics.median(cpu["bare"]) * 1e6,
        "ours_cpu_us_per_request": statistics.median(cpu["ours"]) * 1e6,
        "cpu_ratio": statistics.median(cpu["ours"]) / statistics.median(cpu["bare"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--delay-ms", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with StubProcess(["--tokens", str(args.tokens), "--delay-ms", str(args.delay_ms)]) as stub:
        levels = [asyncio.run(compare(stub.url, args, c)) for c in sorted({1, args.concurrency})]
    result = {
        "benchmark": "endpoint_client_overhead",
        "stub": {"tokens": args.tokens, "delay_ms": args.delay_ms},
        "rounds": args.rounds,
        "levels": levels,
        "aim": "ratio < 1.05 at every concurrency",
        "within_aim": all(level["ratio"] < 1.05 for level in levels),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
